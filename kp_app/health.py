"""The answers of kp_app's health endpoints, as kube-proxy gives them (status, headers,
body), for the HTTP adapters to send (kp_app.operate_http).

- /healthz and /livez (kube-proxy's healthzBindAddress, 10256): 200 while the proxy is
  healthy (kp_app.sync_record: starting up, or fully synced, or a queued change not yet
  late), else 503, with a JSON body `{"lastUpdated": ..., "currentTime": ...}` (/healthz
  also says `nodeEligible`). As kube-proxy, a healthy answer gives the current time as
  lastUpdated (older releases did, and load balancers' checks were written for it); an
  unhealthy one the time of the last sync.
- A Service's healthCheckNodePort (externalTrafficPolicy Local): 200 when this node has
  ready endpoints of it and the proxy is healthy, else 503, with `{"service":
  {"namespace", "name"}, "localEndpoints": n, "serviceProxyHealthy": bool}`, so that an
  external load balancer sends the Service's clients only to nodes that have its pods.

Times are written as Go writes a time.Time (kube-proxy formats them with %q), in UTC:
"2026-12-04 04:20:00.123456 +0000 UTC"; never synced is Go's zero time.
"""
import datetime
import json
from typing import Dict, List, Optional, Tuple

from kp_app.sync_record import SyncRecord

Answer = Tuple[int, List[Tuple[str, str]], bytes]
HEADERS = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")]
GO_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"
HEALTH_PATHS = ("/healthz", "/livez")


def go_time(wall: Optional[float]) -> str:
    if wall is None:
        return GO_ZERO_TIME
    moment = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def proxy_health(record: SyncRecord, path: str) -> Answer:
    """The answer to GET `path` (one of HEALTH_PATHS) on the healthz listener."""
    healthy, last_updated, now = record.health()
    node_eligible = record.node_eligible
    if path == "/healthz":
        healthy = healthy and node_eligible
    body: Dict[str, object] = {"lastUpdated": go_time(now if healthy else last_updated),
                               "currentTime": go_time(now)}
    if path == "/healthz":
        body["nodeEligible"] = node_eligible
    status = 200 if healthy else 503
    record.answered(path, status)
    return status, list(HEADERS), json.dumps(body).encode()


def service_health(service: str, local_endpoints: int, proxy_healthy: bool) -> Answer:
    """The answer of a Service's health check node port ("namespace/name")."""
    namespace, _, name = service.partition("/")
    body = {"service": {"namespace": namespace, "name": name},
            "localEndpoints": local_endpoints, "serviceProxyHealthy": proxy_healthy}
    status = 200 if local_endpoints and proxy_healthy else 503
    return status, list(HEADERS), json.dumps(body, indent=2).encode()


def not_found(path: str) -> Answer:
    return 404, [("Content-Type", "text/plain; charset=utf-8"),
                 ("X-Content-Type-Options", "nosniff")], f"404 page not found: {path}\n".encode()
