"""Who may call the REST API, and with what (issue #13), over real HTTP: a web page's
cross-site POST (text/plain, forms), DNS rebinding (a Host or Origin that is not the
API's address), oversized and deeply nested bodies, and the optional bearer token.

Each refusal is the project's JSON error body and changes nothing."""
import http.client
import json
import os
import subprocess
import threading
from wsgiref.simple_server import make_server

import pytest
from ryu.app.wsgi import WSGIApplication

from conftest import KU, _QuietHandler
from kp_app import rest
from kp_app.kubeproxy import KubeProxy

SERVICE = {"kind": "List", "items": [
    {"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}},
    {"kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
     "subsets": [{"addresses": [{"ip": "10.1.0.2"}], "ports": [{"port": 8080}]}]}]}
EMPTY = {"kind": "List", "items": []}
TOKEN = "kp-test-token-5d1f"


class Server:
    """A real HTTP server with kp's REST API under an AccessPolicy."""

    def __init__(self, policy):
        self.service = KubeProxy(lambda dpid, msgs: None)
        app = WSGIApplication()
        rest.register(app, self.service, policy)
        self.httpd = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.port = self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def call(self, method, path, body=None, headers=None, host=None):
        """(status, JSON answer or None, headers); `headers` are sent as given (no
        Content-Type unless named), `host` replaces the Host header."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host if host is not None else "127.0.0.1:%d" % self.port)
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw.strip() else None), dict(resp.headers)
        finally:
            conn.close()

    def services(self):
        status, body, _ = self.call("GET", "/v1/kubernetes/services")
        assert status == 200, body
        return body

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server():
    s = Server(rest.AccessPolicy("127.0.0.1"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def with_token():
    s = Server(rest.AccessPolicy("127.0.0.1", token=TOKEN))
    try:
        yield s
    finally:
        s.close()


def refused(answer, status, field):
    got, body, headers = answer
    assert got == status, body
    assert isinstance(body, dict) and body["error"] and body.get("field") == field, body
    assert headers.get("Content-Type", "").startswith("application/json")
    return body, headers


# -- cross-site POSTs -------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None, "application/yaml", "application/jsonx"])
def test_a_cross_site_prune_is_refused_and_deletes_nothing(server, content_type):
    """What a web page can POST without a preflight: the prune that deleted every
    Service before is a 415 now, and the Service is still there."""
    assert server.call("POST", "/v1/kubernetes/apply", SERVICE, JSON)[0] == 200
    before = server.services()
    assert before
    headers = {} if content_type is None else {"Content-Type": content_type}
    refused(server.call("POST", "/v1/kubernetes/apply?prune=true", EMPTY, headers), 415,
            "Content-Type")
    assert server.services() == before


def test_json_with_parameters_is_json(server):
    assert server.call("POST", "/v1/kubernetes/apply", SERVICE,
                       {"Content-Type": "Application/JSON; charset=utf-8"})[0] == 200
    assert server.call("POST", "/v1/kubernetes/apply?prune=true", EMPTY, JSON)[0] == 200
    assert server.services() == []


def test_a_put_with_a_body_needs_json_and_one_without_does_not(server):
    refused(server.call("PUT", "/v1/conf", {"timeout": 30}, {"Content-Type": "text/plain"}),
            415, "Content-Type")
    assert server.call("GET", "/v1/conf")[1]["timeout"] == 40
    assert server.call("PUT", "/v1/conf", {"timeout": 30}, JSON)[0] == 200
    assert server.call("DELETE", "/v1/vips/10.96.0.99/32/80")[0] == 404  # no body: no type


# -- Host and Origin (DNS rebinding) ---------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example:%d", "rebind.evil.example", "127.0.0.1:1",
                                  "10.0.0.1:%d", "", "127.0.0.1:%d.evil.example"])
def test_a_host_that_is_not_the_api_is_refused(server, host):
    host = host % server.port if "%d" in host else host
    refused(server.call("GET", "/v1/show", host=host), 403, "Host")
    before = server.services()
    refused(server.call("POST", "/v1/kubernetes/apply", SERVICE, JSON, host=host), 403, "Host")
    assert server.services() == before


@pytest.mark.parametrize("host", ["127.0.0.1:%d", "localhost:%d", "LOCALHOST:%d", "[::1]:%d",
                                  "127.0.0.2:%d"])
def test_loopback_names_are_the_api_when_it_listens_on_loopback(server, host):
    assert server.call("GET", "/v1/show", host=host % server.port)[0] == 200


def test_an_api_on_every_address_takes_any_ip_literal_but_no_name():
    s = Server(rest.AccessPolicy("0.0.0.0"))
    try:
        for host in ("10.1.2.3:%d", "[fd00::1]:%d", "localhost:%d"):
            assert s.call("GET", "/v1/show", host=host % s.port)[0] == 200, host
        refused(s.call("GET", "/v1/show", host="kp.evil.example:%d" % s.port), 403, "Host")
    finally:
        s.close()


def test_an_api_on_one_address_takes_that_address_only():
    s = Server(rest.AccessPolicy("192.0.2.7"))
    try:
        assert s.call("GET", "/v1/show", host="192.0.2.7:%d" % s.port)[0] == 200
        for host in ("127.0.0.1:%d", "localhost:%d", "192.0.2.8:%d"):
            refused(s.call("GET", "/v1/show", host=host % s.port), 403, "Host")
    finally:
        s.close()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "file://", "http://evil.example:%d"])
def test_a_foreign_origin_is_refused(server, origin):
    origin = origin % server.port if "%d" in origin else origin
    before = server.services()
    refused(server.call("POST", "/v1/kubernetes/apply", SERVICE, dict(JSON, Origin=origin)),
            403, "Origin")
    assert server.services() == before


def test_the_api_own_origin_is_fine(server):
    origin = "http://127.0.0.1:%d" % server.port
    assert server.call("POST", "/v1/kubernetes/apply", SERVICE, dict(JSON, Origin=origin))[0] == 200


# -- bodies ---------------------------------------------------------------------------

def test_a_body_over_the_cap_is_413_before_it_is_read(server):
    """The answer comes after the first bytes of a body that says it is bigger than
    MAX_BODY_BYTES: the API does not wait for (or keep) the rest."""
    import socket
    s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        s.sendall(b"POST /v1/kubernetes/apply?prune=true HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % (server.port, rest.MAX_BODY_BYTES + 1) + b'{"kind": "List", "items": []')
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413", answer
    assert json.loads(body)["field"] == "body"
    assert server.call("GET", "/v1/show")[0] == 200


@pytest.mark.parametrize("depth", [rest.MAX_JSON_DEPTH + 1, 100000])
def test_deeply_nested_json_is_400(server, depth):
    body = b'{"kind": "List", "items": ' + b"[" * depth + b"]" * depth + b"}"
    answer, _ = refused(server.call("POST", "/v1/kubernetes/apply", body, JSON), 400, "body")
    assert "nested deeper" in answer["error"]


def test_nesting_up_to_the_cap_reaches_the_service(server):
    depth = rest.MAX_JSON_DEPTH - 1
    body = b'{"prefix": ' + b"[" * depth + b"]" * depth + b"}"
    answer, _ = refused(server.call("POST", "/v1/vips", body, JSON), 400, "prefix")
    assert "nested" not in answer["error"]


# -- the bearer token -------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer " + TOKEN + "x", TOKEN,
                                  "Basic " + TOKEN, "Bearer"])
def test_without_the_token_nothing_is_served(with_token, auth):
    headers = dict(JSON) if auth is None else dict(JSON, Authorization=auth)
    _, got = refused(with_token.call("GET", "/v1/show", headers=headers), 401, "Authorization")
    assert got.get("WWW-Authenticate", "").startswith("Bearer")
    refused(with_token.call("POST", "/v1/kubernetes/apply", SERVICE, headers), 401, "Authorization")
    assert with_token.service.kubernetes_services() == []


def test_with_the_token_everything_is(with_token):
    auth = dict(JSON, Authorization="Bearer " + TOKEN)
    assert with_token.call("POST", "/v1/kubernetes/apply", SERVICE, auth)[0] == 200
    assert with_token.call("GET", "/v1/kubernetes/services", headers=auth)[1]


def _ku(server, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("KP_API", "KP_TOKEN_FILE")}
    full_env.update(env or {})
    return subprocess.run([KU, "--api", "http://127.0.0.1:%d" % server.port, *args],
                          capture_output=True, text=True, timeout=30, env=full_env)


def test_ku_sends_the_token_from_its_file_or_the_environment(with_token, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    manifest = tmp_path / "web.json"
    manifest.write_text(json.dumps(SERVICE))
    r = _ku(with_token, "show", "services")
    assert r.returncode == 1 and "Authorization: a valid bearer token is required" in r.stderr, r
    r = _ku(with_token, "--token-file", str(token_file), "apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    r = _ku(with_token, "show", "services", "--json", env={"KP_TOKEN_FILE": str(token_file)})
    assert r.returncode == 0 and json.loads(r.stdout)[0]["service"] == "default/web", r
    r = _ku(with_token, "--token-file", str(tmp_path / "missing"), "show")
    assert r.returncode == 1 and "missing" in r.stderr


def test_ku_help_says_where_the_token_comes_from():
    r = subprocess.run([KU, "--help"], capture_output=True, text=True, timeout=30)
    assert "--token-file FILE" in r.stdout and "$KP_TOKEN_FILE" in r.stdout


def test_an_api_on_localhost_is_on_loopback():
    s = Server(rest.AccessPolicy("localhost"))
    try:
        for host in ("127.0.0.1:%d", "localhost:%d"):
            assert s.call("GET", "/v1/show", host=host % s.port)[0] == 200, host
        refused(s.call("GET", "/v1/show", host="10.0.0.1:%d" % s.port), 403, "Host")
    finally:
        s.close()
