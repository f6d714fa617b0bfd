"""What `ryu-manager kp_app` listens on: OpenFlow and REST on 127.0.0.1 unless the user
names another address (Ryu's own default for OpenFlow is every address: issue #13).

Read from /proc/net/tcp of a real ryu-manager process (kp_lab.ControllerProcess, stopped
by its PID)."""
import json
import socket
import time
import urllib.error
import urllib.request

import kp_lab


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
    with kp_lab.ControllerProcess(listen_host=None, extra_args=extra) as ctl:
        return listening(ctl.of_port), listening(ctl.wsapi_port)


def test_kp_app_listens_on_loopback_by_default():
    assert run_kp_app() == ({"127.0.0.1"}, {"127.0.0.1"})


def test_health_and_metrics_listen_on_kube_proxys_ports_on_loopback_by_default():
    with kp_lab.ControllerProcess(listen_host=None, operate_ports=False) as ctl:
        deadline = time.monotonic() + 10
        while not (listening(10256) and listening(10249)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (listening(10256), listening(10249)) == ({"127.0.0.1"}, {"127.0.0.1"}), \
            ctl.log_tail()


def test_kp_app_listens_where_it_is_told():
    assert run_kp_app("--ofp-listen-host", "127.0.0.2", "--wsapi-host", "127.0.0.3") == \
        ({"127.0.0.2"}, {"127.0.0.3"})


def test_kp_app_takes_auth_token_file(tmp_path):
    """ryu-manager kp_app --auth-token-file F: REST answers 401 without the token."""
    token = tmp_path / "token"
    token.write_text("s3cret-kp\n")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(headers):
        req = urllib.request.Request(ctl.url("/v1/show"), headers=headers)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with kp_lab.ControllerProcess(extra_args=["--auth-token-file", str(token)]) as ctl:
        code, body = status({})
        assert code == 401 and body["field"] == "Authorization"
        assert status({"Authorization": "Bearer s3cret-kp"})[0] == 200
