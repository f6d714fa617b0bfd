"""What `ryu-manager kp_app` listens on: OpenFlow and REST on 127.0.0.1 unless the user
names another address (Ryu's own default for OpenFlow is every address: issue #13).

Read from /proc/net/tcp of a real ryu-manager process (stopped by its PID)."""
import os
import socket
import subprocess
import sys
import time

import pytest

RYU_MANAGER = os.path.join(os.path.dirname(sys.executable), "ryu-manager")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening(port: int) -> set:
    """The IPv4 addresses with a listening TCP socket on `port`."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def run_kp_app(*extra: str) -> tuple:
    """(OpenFlow addresses, REST addresses) of ryu-manager kp_app once both listen."""
    of_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen([RYU_MANAGER, "--ofp-tcp-listen-port", str(of_port),
                             "--wsapi-port", str(rest_port), *extra, "kp_app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("ryu-manager exited: %s" % proc.stderr.read()[-2000:])
            of, rest = listening(of_port), listening(rest_port)
            if of and rest:
                return of, rest
            time.sleep(0.2)
        pytest.fail("ryu-manager kp_app did not listen within 30 s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_kp_app_listens_on_loopback_by_default():
    assert run_kp_app() == ({"127.0.0.1"}, {"127.0.0.1"})


def test_kp_app_listens_where_it_is_told():
    assert run_kp_app("--ofp-listen-host", "127.0.0.2", "--wsapi-host", "127.0.0.3") == \
        ({"127.0.0.2"}, {"127.0.0.3"})


def test_kp_app_takes_auth_token_file(tmp_path):
    """ryu-manager kp_app --auth-token-file F: REST answers 401 without the token."""
    import json
    import urllib.error
    import urllib.request
    token = tmp_path / "token"
    token.write_text("s3cret-kp\n")
    of_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen([RYU_MANAGER, "--ofp-tcp-listen-port", str(of_port),
                             "--wsapi-port", str(rest_port), "--auth-token-file", str(token),
                             "kp_app"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(headers):
        req = urllib.request.Request("http://127.0.0.1:%d/v1/show" % rest_port, headers=headers)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.monotonic() + 30
        while not listening(rest_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ryu-manager did not serve: %s" % proc.stderr.read()[-2000:])
            time.sleep(0.2)
        code, body = status({})
        assert code == 401 and body["field"] == "Authorization"
        assert status({"Authorization": "Bearer s3cret-kp"})[0] == 200
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
