"""One sync of a watched cluster into KubeProxy: the dirty Services and Nodes of a
ClusterStore, applied as one batch through the checked plan (KubeProxy.apply_services).

What cannot be applied is logged and left as it was: an object that does not check
out (ClusterStore.desired), a Service whose VIPs would take a VIP made by hand or owned
by another Service (the plan's Conflict: the whole batch is retried one Service at a
time, so that the others still go through). A Service gone from the cluster takes its
VIPs with it; VIPs made by hand (`ku vip`, REST) are never touched. A first sync (after
the first full lists) also prunes the Services a state file or `ku apply` left that the
cluster does not have: the cluster is the truth for Services.

`SyncStatus` is what a health or metrics module reads (kp-app's KpRyuApp.cluster.status).
"""
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from kp_app import cluster_state, service_sync
from kp_app.cluster_state import ClusterStore
from kp_app.errors import KpError

LOG = logging.getLogger("kp_app.cluster")
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster(service_account: str = SERVICE_ACCOUNT, environ=os.environ) -> bool:
    """Whether kp_app runs in a Pod with a service account (its token, and the API
    server's address in KUBERNETES_SERVICE_HOST): then it watches that cluster."""
    return (os.path.exists(os.path.join(service_account, "token"))
            and bool(environ.get("KUBERNETES_SERVICE_HOST")))


@dataclass
class SyncStatus:
    """Figures of the watch and its syncs (times from the injected clocks)."""
    last_sync: Optional[float] = None           # wall clock (time.time) of the last success
    last_sync_duration: Optional[float] = None  # seconds the last sync took
    syncs: int = 0
    sync_errors: int = 0                        # objects left out, summed over syncs
    service_changes_pending: int = 0            # Service objects changed, not yet synced
    service_changes_total: int = 0
    endpoint_changes_pending: int = 0           # EndpointSlice objects changed, not synced
    endpoint_changes_total: int = 0
    relists: int = 0                            # full lists (first, after 410, resyncs)
    watch_restarts: int = 0                     # watches resumed after a cut or timeout
    synced_once: bool = False                   # every kind listed and synced at least once
    skipped: List[str] = field(default_factory=list)    # the last sync's left-out objects
    # called with each sync's duration in seconds, e.g. a histogram's observe
    observers: List[Callable[[float], None]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "observers"}


class ClusterSync:
    def __init__(self, kubeproxy, node_name: Optional[str] = None,
                 wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic,
                 build: Optional[Callable[[list], list]] = None) -> None:
        """`build`: (pods, new_len) pairs -> their tables, for the big tables a sync will
        ask for, built ahead into the model's store (ryu_shim builds them in a thread,
        off the controller's loop); None: each is built when the change asks."""
        self.kubeproxy = kubeproxy
        self._build = build
        self.node_name = node_name
        self.status = SyncStatus()
        self._wall = wall_clock
        self._clock = clock
        self._zone: Optional[str] = None
        self._nodes_applied: Dict[str, tuple] = {}   # Node name -> (dpid, v4, v6) applied

    def pending(self, store: ClusterStore) -> None:
        """Count what the store holds for the next sync (for the status)."""
        self.status.service_changes_pending = store.dirty.service_changes
        self.status.endpoint_changes_pending = store.dirty.endpoint_changes

    def sync(self, store: ClusterStore, prune: bool = False) -> dict:
        """Apply what changed. Returns {"services": changed VIPs' reports, "nodes": names
        of Nodes whose addresses were applied, "skipped": [(what, why)]}."""
        start = self._clock()
        dirty = store.take_dirty()
        skipped: List[tuple] = []
        nodes = self._sync_nodes(store, dirty.nodes, skipped)
        zone = cluster_state.node_zone(store.node(self.node_name))
        services = set(dirty.services)
        if zone != self._zone:      # topology hints read for another zone now
            self._zone = zone
            services.update(store.objects[cluster_state.SERVICE])
        pruned = sorted(self.kubeproxy.model.services - set(store.objects[cluster_state.SERVICE])
                        ) if prune else []
        services.update(pruned)
        desired, bad = store.desired(services, zone)
        skipped += bad
        report = self._apply(desired, store, skipped)
        for what, why in skipped:
            LOG.warning("cluster: %s left out: %s", what, why)
        s = self.status
        s.syncs += 1
        s.sync_errors += len(skipped)
        s.skipped = [f"{what}: {why}" for what, why in skipped]
        s.service_changes_total += dirty.service_changes
        s.endpoint_changes_total += dirty.endpoint_changes
        s.service_changes_pending = s.endpoint_changes_pending = 0
        s.last_sync = self._wall()
        s.last_sync_duration = self._clock() - start
        for observe in list(s.observers):
            try:
                observe(s.last_sync_duration)
            except Exception:       # a metrics module's fault must not stop the sync
                LOG.exception("cluster: a sync observer failed")
        return {"services": report, "nodes": nodes, "skipped": skipped}

    def _apply(self, desired: Dict[str, list], store: ClusterStore,
               skipped: List[tuple]) -> List[dict]:
        """All at once (one plan); when that fails, halves, and so on down to the
        Services that cannot be applied: one conflict stops only its own Service, and a
        few bad ones among thousands cost a few dozen plans, not thousands. A Service gone
        from the store is pruned (its VIPs go)."""
        kp = self.kubeproxy
        present = store.objects[cluster_state.SERVICE]
        wanted = {k: v for k, v in desired.items() if k in present}
        gone = sorted(k for k in desired if k not in present and k in kp.model.services)
        report = []
        if gone:    # first: their VIPs' addresses and node ports may be asked for anew
            report = self._apply_part([], {}, gone, skipped)
        if wanted:
            self._build_ahead(wanted)
            report += self._apply_part(sorted(wanted), wanted, [], skipped)
        return report

    def _apply_part(self, keys: List[str], wanted: Dict[str, list], gone: List[str],
                    skipped: List[tuple]) -> List[dict]:
        try:
            return _changed(self.kubeproxy.apply_services(
                {k: wanted[k] for k in keys}, pruned=gone))
        except KpError as error:
            if len(keys) <= 1:
                skipped += [(f"Service {k}", cluster_state._why(error)) for k in keys + gone]
                return []
        half = len(keys) // 2
        return (self._apply_part(keys[:half], wanted, [], skipped)
                + self._apply_part(keys[half:], wanted, [], skipped))

    def _build_ahead(self, wanted: Dict[str, list]) -> None:
        if self._build is None:
            return
        try:
            untried = service_sync.changes(self.kubeproxy.model, wanted)
        except KpError:     # the apply says why
            return
        self.kubeproxy.model.tables.build_ahead(
            service_sync.tables_to_build(self.kubeproxy.model, untried), self._build)

    def _sync_nodes(self, store: ClusterStore, names, skipped: List[tuple]) -> List[str]:
        applied = []
        for name in sorted(names):
            node = store.node(name)
            target = self._target(name, node, skipped)
            before = self._nodes_applied.get(name)
            if node is None or target is None:
                if before is not None:      # gone, or no longer mapped: its addresses go
                    self.kubeproxy.cluster_node(before[0], None, None)
                    del self._nodes_applied[name]
                    applied.append(name)
                continue
            try:
                v4, v6 = cluster_state.node_addresses(node)
            except ValueError as error:
                skipped.append((f"Node {name}", str(error)))
                continue
            if before is not None and before[0] != target[0]:
                self.kubeproxy.cluster_node(before[0], None, None)
            if (target[0], v4, v6) != before:
                self.kubeproxy.cluster_node(target[0], v4, v6)
                self._nodes_applied[name] = (target[0], v4, v6)
                applied.append(name)
        return applied

    def _target(self, name: str, node: Optional[dict], skipped: List[tuple]):
        """(dpid or None for the default node,) the Node gives addresses to; None: none."""
        if node is None:
            return None
        try:
            dpid = cluster_state.node_dpid(node)
        except ValueError as error:
            skipped.append((f"Node {name}", str(error)))
            return None
        if dpid is not None:
            return (dpid,)
        return (None,) if name == self.node_name else None


def _changed(answer: dict) -> List[dict]:
    return [v for v in answer["vips"] if v["action"] != "unchanged"]
