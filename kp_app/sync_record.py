"""What kp_app's configuration syncs did: their durations, when the last one was, the
changes they applied and those still waiting, and whether the proxy is healthy.

A "sync" is one applied change of configuration, whatever brought it: a REST call
(`ku vip`, `ku apply -f`), a state-file restore at start, or the Kubernetes watch. They all
pass through `KubeProxy`'s service methods, each of which runs inside
`SyncRecord.syncing()`; nested calls (apply_kubernetes makes VIPs with add_vip) are one
sync, the outermost. A change that is refused (bad input) changed nothing and is not a
sync: it is counted apart (`refused`).

Health is kube-proxy's (pkg/proxy/healthcheck/proxy_health.go): healthy while starting
up and while fully synced; unhealthy once a change has been waiting (`queued`, not yet
applied) for longer than the health timeout (kube-proxy's is 2 x syncPeriod). Changes
only wait where something queues them: the Kubernetes watch calls `queued` as events
arrive and applies them in a sync, which clears what was waiting. REST changes are
applied as they come and never wait.

Pure: the clocks are injected (monotonic for durations and ages, wall time for the
timestamps that are shown), nothing here does I/O or imports Prometheus; kp_app.metrics
turns this into metric families.
"""
import contextlib
import functools
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

# kube-proxy's buckets (pkg/proxy/metrics): sync durations 1 ms .. 16 s doubling, and
# network programming 0.25 s .. 5 min.
SYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))
PROGRAMMING_BUCKETS = (0.25, 0.5, *range(1, 60), *range(60, 120, 5), *range(120, 330, 30))
DEFAULT_HEALTH_TIMEOUT = 60.0       # 2 x kube-proxy's default syncPeriod of 30 s


class Histogram:
    """Cumulative bucket counts, their sum and count, as Prometheus histograms keep them."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds: Tuple[float, ...] = tuple(float(b) for b in bounds)
        self.counts: List[int] = [0] * len(self.bounds)    # observations <= each bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def buckets(self) -> List[Tuple[str, int]]:
        """[(upper bound as Prometheus writes it, cumulative count)], +Inf last."""
        return [(_bound_text(b), c) for b, c in zip(self.bounds, self.counts)] + [
            ("+Inf", self.count)]


def _bound_text(bound: float) -> str:
    return repr(float(bound))


class SyncRecord:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 health_timeout: float = DEFAULT_HEALTH_TIMEOUT) -> None:
        self._clock = clock
        self._wall = wall
        self.health_timeout = health_timeout
        self.duration = Histogram(SYNC_BUCKETS)
        self.programming = Histogram(PROGRAMMING_BUCKETS)
        self.syncs = 0
        self.refused = 0
        self.last_synced: Optional[float] = None      # wall time of the last sync's end
        self.last_queued: Optional[float] = None      # wall time of the last `queued`
        self.service_changes_total = 0
        self.endpoint_changes_total = 0
        self.service_changes_pending = 0
        self.endpoint_changes_pending = 0
        self._oldest_pending: Optional[float] = None  # monotonic
        # False while this node is being deleted (kube-proxy: a deletion timestamp or the
        # autoscaler's ToBeDeletedByClusterAutoscaler taint): /healthz then says 503 so
        # that load balancers drain it. Only the Kubernetes watch knows; it sets this.
        self.node_eligible = True
        self.health_answers: Dict[Tuple[str, int], int] = {}     # (path, status) -> count
        self._local = threading.local()     # this thread's sync: depth, trigger times
        self._after_sync: List[Callable[[], None]] = []

    # -- what the sources of change say ------------------------------------------------

    def queued(self, services: int = 0, endpoints: int = 0) -> None:
        """Changes received that a later sync will apply (the watch's events)."""
        if self._oldest_pending is None:
            self._oldest_pending = self._clock()
        self.last_queued = self._wall()
        self.service_changes_pending += services
        self.endpoint_changes_pending += endpoints

    def changes(self, services: int = 0, endpoints: int = 0,
                trigger_times: Iterable[float] = ()) -> None:
        """What the running sync applies: Services whose VIPs changed, Services whose
        endpoints changed, and the wall times at which those changes were made in the
        cluster (an EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time),
        observed as network programming durations when the sync ends."""
        self.service_changes_total += services
        self.endpoint_changes_total += endpoints
        if getattr(self._local, "depth", 0):
            self._local.triggers.extend(trigger_times)

    def after_sync(self, callback: Callable[[], None]) -> None:
        """`callback()` after every sync (the adapters follow what it changed)."""
        self._after_sync.append(callback)

    @contextlib.contextmanager
    def syncing(self) -> Iterator[None]:
        """One sync around the block; an exception out of it is a refused change. The
        nesting is counted per thread (under ryu-manager, per green thread: two REST
        requests that interleave, one waiting for a table built aside, are two syncs)."""
        local = self._local
        local.depth = getattr(local, "depth", 0) + 1
        outermost = local.depth == 1
        start = self._clock() if outermost else 0.0
        if outermost:
            local.triggers = []
        try:
            yield
        except BaseException:
            if outermost:
                self.refused += 1
            raise
        else:
            if outermost:
                self._synced(self._clock() - start, local.triggers)
        finally:
            local.depth -= 1
        if outermost:
            for callback in self._after_sync:
                callback()

    # -- a sync made in steps (kp_app.service_apply): its steps may run in other (green)
    # threads than its first one, which the thread-local nesting of `syncing` cannot
    # follow; it is timed from `steps_begin` to `steps_end` instead.

    def in_sync(self) -> bool:
        """Does this thread run inside a sync (then a stepped change is part of it)?"""
        return getattr(self._local, "depth", 0) > 0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One step of a stepped sync: the service methods it calls are part of that
        sync, not syncs of their own."""
        local = self._local
        local.depth = getattr(local, "depth", 0) + 1
        if local.depth == 1:
            local.triggers = []
        try:
            yield
        finally:
            local.depth -= 1

    def steps_begin(self) -> float:
        return self._clock()

    def steps_end(self, began: float, trigger_times: Iterable[float] = ()) -> None:
        """A stepped sync ended, well: timed, its network programming observed."""
        self._synced(self._clock() - began, list(trigger_times))
        for callback in self._after_sync:
            callback()

    def steps_refused(self) -> None:
        self.refused += 1

    def _synced(self, seconds: float, triggers: List[float]) -> None:
        self.syncs += 1
        self.duration.observe(max(0.0, seconds))
        now = self._wall()
        self.last_synced = now
        for trigger in triggers:
            self.programming.observe(max(0.0, now - trigger))
        self._oldest_pending = None
        self.service_changes_pending = 0
        self.endpoint_changes_pending = 0

    # -- health ------------------------------------------------------------------------

    def health(self) -> Tuple[bool, Optional[float], float]:
        """(healthy, wall time of the last sync or None, wall time now), as kube-proxy's
        ProxyHealthServer decides it."""
        now = self._wall()
        waiting = None if self._oldest_pending is None else self._clock() - self._oldest_pending
        return waiting is None or waiting < self.health_timeout, self.last_synced, now

    def answered(self, path: str, status: int) -> None:
        """Count an answer of /healthz or /livez (kubeproxy_proxy_healthz_total)."""
        self.health_answers[(path, status)] = self.health_answers.get((path, status), 0) + 1


def synced(change: Callable) -> Callable:
    """A service method that changes the configuration (its object has `syncs`, a
    SyncRecord): one sync, unless it runs inside another."""
    @functools.wraps(change)
    def in_a_sync(self, *args, **kwargs):
        with self.syncs.syncing():
            return change(self, *args, **kwargs)
    return in_a_sync
