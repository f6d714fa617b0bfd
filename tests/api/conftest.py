"""A real HTTP server on 127.0.0.1 serving Ryu's WSGIApplication with kp's REST
controller registered on a real KubeProxy (no switch connected unless a test connects a
fake one: the sender callback only records what would go to a switch).

wsgiref serves from a thread: Ryu serves the same WSGI app with eventlet, but the app
is plain WSGI, and a thread keeps the test process free of eventlet's monkey patching.
"""
from __future__ import annotations

import ipaddress
import json
import os
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from ryu.app.wsgi import WSGIApplication

from kp_app import frames, rest
from kp_app.kubeproxy import KubeProxy
from kp_app.node import gateway_mac

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KU = os.path.join(ROOT, ".venv", "bin", "ku")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output for failures
        pass


@dataclass
class Api:
    """The running API: its base URL, the service behind it, what went to switches."""

    url: str
    service: KubeProxy
    sent: List[Tuple[int, list]] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, raw: Optional[bytes] = None,
             ) -> Tuple[int, Any, dict]:
        """(status, decoded JSON or None, headers) of one request; never raises on 4xx."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=10) as resp:
                status, payload, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as error:
            status, payload, headers = error.code, error.read(), dict(error.headers)
        return status, (json.loads(payload) if payload.strip() else None), headers

    def get(self, path: str) -> Any:
        status, body, _ = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def state(self) -> dict:
        """Everything a client can observe, to compare before and after an error."""
        return {path: self.get(path) for path in
                ("/v1/conf", "/v1/vips", "/v1/interfaces", "/v1/counters", "/v1/show",
                 "/v1/sessions", "/v1/kubernetes/services")}

    def ku(self, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """The real console script against this API."""
        full_env = {k: v for k, v in os.environ.items() if k != "KP_API"}
        full_env.update(env or {})
        if env is None or "KP_API" not in env:
            args = ("--api", self.url) + args
        return subprocess.run([KU, *args], capture_output=True, text=True, timeout=30,
                              env=full_env)


@pytest.fixture
def api():
    sent: List[Tuple[int, list]] = []
    service = KubeProxy(lambda dpid, msgs: sent.append((dpid, msgs)))
    app = WSGIApplication()
    rest.register(app, service)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Api(f"http://127.0.0.1:{server.server_port}", service, sent)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- a session without a switch: the frames a switch would send up as packet-ins ----------

CLIENT_MAC, POD_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _tcp_syn(src: str, sport: int, dst: str, dport: int, eth_dst: str) -> bytes:
    s, d = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     s.packed, d.packed)
    eth = frames.mac_bytes(eth_dst) + frames.mac_bytes(CLIENT_MAC) + b"\x08\x00"
    return eth + ip + tcp


def open_session(service: KubeProxy, client: str, vip: str, vip_port: int, pods: List[str],
                 dpid: int = 1, sport: int = 40000) -> None:
    """Connects switch `dpid` (if needed), lets it learn the pods, and sends a client's
    SYN to the VIP through the core, as the switch's packet-ins would."""
    if dpid not in service.show()["switches"]:
        service.switch_connected(dpid, {1: "eth1", 2: "eth2"})
    for pod in pods:
        service.packet_in(dpid, 2, frames.arp(2, POD_MAC, pod, "ff:ff:ff:ff:ff:ff", pod))
    service.packet_in(dpid, 1, _tcp_syn(client, sport, vip, vip_port, gateway_mac(dpid)))
