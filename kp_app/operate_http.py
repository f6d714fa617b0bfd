"""kp_app's operations listeners, as kube-proxy has them: /healthz and /livez on the
health address (kube-proxy's healthzBindAddress, default here 127.0.0.1:10256), /metrics
on the metrics address (metricsBindAddress, 127.0.0.1:10249), and one listener per
Service health check node port (healthCheckNodePort of a LoadBalancer Service with
externalTrafficPolicy Local) on the health address's host.

Thin: the answers are kp_app.health's and kp_app.metrics'. The servers are Ryu's
(ryu.lib.hub.WSGIServer: eventlet, in the controller's own loop, like the REST API), so
no thread touches the controller's state and nothing looks a name up (http.server would
call getfqdn when it binds; addresses here are IP literals, checked by the caller).
The health check listeners follow the applied Services after every sync.
"""
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ryu.lib import hub

from kp_app import health, metrics

LOG = logging.getLogger("kp_app.operate")
Address = Tuple[str, int]


def _respond(start_response, answer: health.Answer):
    status, headers, body = answer
    start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                   headers + [("Content-Length", str(len(body)))])
    return [body]


_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


def health_app(record) -> Callable:
    """WSGI: /healthz and /livez of `record` (a SyncRecord)."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in health.HEALTH_PATHS:
            return _respond(start_response, health.not_found(path))
        return _respond(start_response, health.proxy_health(record, path))
    return app


def metrics_app(service) -> Callable:
    """WSGI: /metrics of `service` (KubeProxy or the app's LiveService)."""
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path != "/metrics":
            return _respond(start_response, health.not_found(path))
        body, content_type = metrics.text(service, environ.get("HTTP_ACCEPT", ""))
        start_response("200 OK", [("Content-Type", content_type),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def service_health_app(kubeproxy, service: str) -> Callable:
    """WSGI: the health check of one Service, whatever the path (as kube-proxy)."""
    def app(environ, start_response):
        healthy = kubeproxy.syncs.health()[0]
        return _respond(start_response, health.service_health(
            service, kubeproxy.local_endpoints(service), healthy))
    return app


class Server:
    """One WSGI app served on one address in a green thread of Ryu's hub."""

    def __init__(self, address: Address, app: Callable) -> None:
        self.address = address
        self._server = hub.WSGIServer(address, app)     # binds now: OSError if it cannot
        self._thread = hub.spawn(self._server.serve_forever)

    def close(self) -> None:
        hub.kill(self._thread)
        self._server.server.close()


class OperateListeners:
    """The health and metrics listeners of a running kp_app, and the Services' health
    check listeners (on each of `health_check_hosts`), opened and closed as the applied
    Services change. A listener that cannot bind is logged and tried again every
    RETRY_SECONDS, as kube-proxy does: the proxy itself goes on."""

    RETRY_SECONDS = 5.0

    def __init__(self, kubeproxy, service, healthz: Optional[Address],
                 metrics_address: Optional[Address], health_check_hosts: Sequence[str]) -> None:
        self._kp = kubeproxy
        self._hosts = tuple(health_check_hosts)
        self.servers: Dict[str, Server] = {}
        # "namespace/name" -> (port, its listeners)
        self.health_checks: Dict[str, Tuple[int, List[Server]]] = {}
        self._retries = []
        for name, address, app in (("healthz", healthz, health_app(kubeproxy.syncs)),
                                   ("metrics", metrics_address, metrics_app(service))):
            if address is not None and not self._open(name, address, app):
                self._retries.append(hub.spawn(self._retry, name, address, app))
        kubeproxy.syncs.after_sync(self.follow_health_checks)
        self.follow_health_checks()

    def _open(self, name: str, address: Address, app: Callable) -> bool:
        try:
            self.servers[name] = Server(address, app)
        except OSError as error:
            LOG.error("cannot serve %s on %s (again in %gs): %s", name, show(address),
                      self.RETRY_SECONDS, error)
            return False
        LOG.info("%s on %s", name, show(address))
        return True

    def _retry(self, name: str, address: Address, app: Callable) -> None:
        while True:
            hub.sleep(self.RETRY_SECONDS)
            if self._open(name, address, app):
                return

    def follow_health_checks(self) -> None:
        wanted = self._kp.health_check_ports()
        for name, (port, servers) in list(self.health_checks.items()):
            if wanted.get(name) != port:
                for server in servers:
                    server.close()
                del self.health_checks[name]
        for name, port in sorted(wanted.items()):
            if name in self.health_checks:
                continue
            servers = []
            for host in self._hosts:
                try:
                    servers.append(Server((host, port), service_health_app(self._kp, name)))
                except OSError as error:   # as kube-proxy: logged, the Service goes on
                    LOG.warning("Service %s: cannot serve its health check on %s: %s",
                                name, show((host, port)), error)
            if servers:     # (else tried again after the next sync)
                self.health_checks[name] = (port, servers)

    def close(self) -> None:
        for thread in self._retries:
            hub.kill(thread)
        for server in [*self.servers.values(),
                       *(s for _, servers in self.health_checks.values() for s in servers)]:
            server.close()
        self.servers.clear()
        self.health_checks.clear()


def show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
