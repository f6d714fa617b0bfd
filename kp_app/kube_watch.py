"""The Kubernetes API adapter: list, then watch, Services, EndpointSlices and Nodes with
the official `kubernetes` client, as kube-proxy's informers do, into a ClusterStore;
a sync loop hands what changed, in batches, to ClusterSync.

Per kind: a list in pages (its resourceVersion), then watches from that resourceVersion with
allowWatchBookmarks and a server-side timeout; a watch that ends or is cut resumes from
the last resourceVersion seen (an event's or a BOOKMARK's) without a relist; a 410 Gone
(an HTTP 410 or an ERROR event of code 410: that resourceVersion is too old) is answered
by a relist, diffed against what was known; other failures back off exponentially.

The sync loop waits for a change, lets a burst gather for `batch_delay` seconds, then
syncs all of it at once; with nothing changing it does a full resync every
`sync_period` seconds, which changes nothing when nothing changed. The first sync waits
until every kind has been listed.

Concurrency: `spawn` starts each loop. Under ryu-manager it is ryu.lib.hub.spawn: green
threads, and the client's sockets are eventlet's green sockets (Ryu monkey-patches the
standard library before the client is imported), so a watch blocked on its socket
yields to the OpenFlow loop, and every sync runs on the controller's own thread, as a
REST request does. Elsewhere (the tests) it is a real thread, and `lock` serialises the
syncs with whoever else touches the controller.
"""
import json
import logging
import os
import threading
import time
from typing import Callable, Dict, Optional

from kubernetes import client, config, watch
from kubernetes.config import incluster_config
from kubernetes.client.rest import ApiException

from kp_app.cluster_state import KINDS, NODE, SERVICE, SLICE, ClusterStore
from kp_app.cluster_sync import SERVICE_ACCOUNT, ClusterSync, in_cluster

LOG = logging.getLogger("kp_app.cluster")
GONE = 410
PAGE_SIZE = 500             # objects per list page, as client-go's informers ask
CONNECT_TIMEOUT = 10.0
LIST_TIMEOUT = 60.0         # one page
WATCH_SLACK = 30            # seconds past the server-side watch timeout before giving up
QUICK_WATCH = 1.0           # a watch that ends sooner with no event backs off


def api_client(kubeconfig: Optional[str] = None, service_account: str = SERVICE_ACCOUNT,
               environ=os.environ) -> Optional[client.ApiClient]:
    """A client from `kubeconfig`, else from the in-cluster service account's files
    (token, ca.crt; and KUBERNETES_SERVICE_HOST/PORT) when they are there; None when
    there is neither (kp_app then watches nothing). The client's own exceptions
    (ConfigException) for a kubeconfig it cannot use."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    elif in_cluster(service_account, environ):
        incluster_config.InClusterConfigLoader(
            token_filename=os.path.join(service_account, "token"),
            cert_filename=os.path.join(service_account, "ca.crt"),
            environ=environ).load_and_set(configuration)
    else:
        return None
    return client.ApiClient(configuration)


def _listers(api: client.ApiClient) -> Dict[str, Callable]:
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    return {SERVICE: core.list_service_for_all_namespaces,
            SLICE: discovery.list_endpoint_slice_for_all_namespaces,
            NODE: core.list_node}


class ClusterWatch:
    def __init__(self, api: client.ApiClient, sync: ClusterSync,
                 spawn: Optional[Callable] = None, sleep: Callable[[float], None] = time.sleep,
                 sync_period: float = 30.0, batch_delay: float = 0.1,
                 watch_timeout: int = 300, backoff: tuple = (0.5, 30.0),
                 page_size: int = PAGE_SIZE,
                 lock=None, on_synced: Optional[Callable[[dict], None]] = None) -> None:
        self.store = ClusterStore()
        self.sync = sync
        self.status = sync.status       # what a health or metrics module reads
        self._listers = _listers(api)
        self._spawn = spawn or _thread
        self._sleep = sleep
        self.sync_period = sync_period
        self.batch_delay = batch_delay
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.backoff = backoff
        self.lock = lock or threading.Lock()
        self._on_synced = on_synced     # e.g. write the state file
        self._wake = threading.Event()
        self._stopped = False
        self._listed = set()
        self._watches: Dict[str, watch.Watch] = {}
        self.resource_versions: Dict[str, Optional[str]] = {kind: None for kind in KINDS}

    def start(self) -> None:
        for kind in KINDS:
            self._spawn(self._run_kind, kind)
        self._spawn(self._run_sync)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for w in list(self._watches.values()):
            w.stop()

    # -- list and watch, per kind -------------------------------------------------------

    def _run_kind(self, kind: str) -> None:
        delay = self.backoff[0]
        while not self._stopped:
            try:
                if self.resource_versions[kind] is None:
                    self._list(kind)
                started = time.monotonic()
                if self._watch(kind) or time.monotonic() - started >= QUICK_WATCH:
                    delay = self.backoff[0]
                    if not self._stopped:
                        self.status.watch_restarts += 1
                    continue
                # a watch that ended at once with nothing: not again at once (backoff)
            except ApiException as error:
                if error.status == GONE and self.resource_versions[kind] is not None:
                    LOG.info("cluster: %s watch: resourceVersion too old (410 Gone): relist",
                             kind)
                    self.resource_versions[kind] = None
                    continue
                LOG.warning("cluster: %s: %s %s; again in %.1f s", kind, error.status,
                            error.reason, delay)
            except Exception as error:      # the connection: refused, cut, timed out
                if self._stopped:
                    return
                LOG.warning("cluster: %s: %s; again in %.1f s", kind, error, delay)
            self._sleep(delay)
            delay = min(delay * 2, self.backoff[1])
            if not self._stopped and self.resource_versions[kind] is not None:
                self.status.watch_restarts += 1

    def _list(self, kind: str) -> None:
        """A full list in pages of `page_size` (one consistent snapshot: the API server's
        continue tokens), as informers list; an expired token is a 410: relist."""
        items, token, version = [], None, None
        while True:
            kwargs = {"limit": self.page_size, "_preload_content": False,
                      "_request_timeout": (CONNECT_TIMEOUT, LIST_TIMEOUT)}
            if token:
                kwargs["_continue"] = token
            body = json.loads(self._listers[kind](**kwargs).data)
            items += body.get("items") or []
            metadata = body.get("metadata") or {}
            version = version or metadata.get("resourceVersion")
            token = metadata.get("continue")
            if not token:
                break
        with self.lock:
            changed = self.store.replace(kind, items)
            self.sync.pending(self.store)
        self.resource_versions[kind] = version
        self.status.relists += 1
        self._listed.add(kind)
        LOG.info("cluster: listed %d %s objects (%d changed), resourceVersion %s",
                 len(items), kind, changed, self.resource_versions[kind])
        self._wake.set()

    def _watch(self, kind: str) -> int:
        """One watch until it ends; how many events (bookmarks too) it brought."""
        lister = self._listers[kind]
        events = 0

        def call(**kwargs):     # no docstring: the Watch hands back the raw JSON objects
            return lister(**kwargs)

        w = self._watches[kind] = watch.Watch()
        try:
            for event in w.stream(call, resource_version=self.resource_versions[kind],
                                  allow_watch_bookmarks=True,
                                  timeout_seconds=self.watch_timeout,
                                  # a connection that went silent (a dead peer) ends too
                                  _request_timeout=(CONNECT_TIMEOUT,
                                                    self.watch_timeout + WATCH_SLACK)):
                if self._stopped:
                    return events
                events += 1
                obj = event.get("raw_object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if event["type"] != "BOOKMARK":
                    with self.lock:
                        self.store.event(kind, event["type"], obj)
                        self.sync.pending(self.store)
                    self._wake.set()
                if version:
                    self.resource_versions[kind] = version
        finally:
            self._watches.pop(kind, None)
        return events

    # -- syncs ------------------------------------------------------------------------

    def _run_sync(self) -> None:
        first = True
        next_resync = time.monotonic() + self.sync_period
        while not self._stopped:
            woke = self._wake.wait(max(0.0, next_resync - time.monotonic()))
            if self._stopped:
                return
            if woke:
                self._wake.clear()
                self._sleep(self.batch_delay)     # a burst gathers into one sync
            if len(self._listed) < len(KINDS):
                next_resync = time.monotonic() + self.sync_period
                continue
            if not woke or time.monotonic() >= next_resync:
                self.store.mark_all()
                next_resync = time.monotonic() + self.sync_period
            elif not self.store.dirty and not first:
                continue
            try:
                with self.lock:
                    result = self.sync.sync(self.store, prune=first)
            except Exception:       # never let one sync end the loop
                LOG.exception("cluster: sync failed")
                continue
            first = False
            self.status.synced_once = True
            if result["services"] or result["nodes"]:
                if self._on_synced is not None:
                    self._on_synced(result)
                LOG.info("cluster: synced: %d VIP changes, nodes %s in %.3f s",
                         len(result["services"]), result["nodes"],
                         self.status.last_sync_duration)


def _thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
