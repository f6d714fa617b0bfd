"""The real `ku` console script (.venv/bin/ku) against the real API over HTTP."""
import json
import subprocess
import sys
import threading
import urllib.request

import pytest

import kp_lab

from conftest import KU, Api, open_session


def ok(api: Api, *args: str) -> str:
    result = api.ku(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(api: Api, *args: str, code: int, stderr: str) -> None:
    """ku exits with `code`, says exactly `stderr` on one line, prints nothing on stdout,
    and the controller's state is as it was."""
    before, sent = api.state(), len(api.sent)
    result = api.ku(*args)
    assert (result.returncode, result.stderr, result.stdout) == (code, stderr + "\n", "")
    assert api.state() == before and len(api.sent) == sent


def lines_with(text: str, word: str) -> list:
    return [line.split() for line in text.splitlines() if word in line]


@pytest.fixture
def web(api):
    """An API with a TCP ClusterIP/NodePort service, an IPv6 UDP one, and their pods (set
    up through the service directly: ku's own adds are tested below, and this is faster)."""
    api.service.add_vip("10.96.0.10/32", 80, 8080, node_port=30080, protocol="tcp",
                        external_ips=["192.0.2.10"])
    api.service.add_vip("fd00:96::10/128", 53, 5353, protocol="udp", nat="nat66", new_len=64)
    api.service.add_pods("10.96.0.10/32", 80, ["10.1.0.1", "10.1.0.2"])
    api.service.add_pods("fd00:96::10/128", None, ["fd00:1::1"])
    return api


# -- each command -------------------------------------------------------------------------


def test_conf(api):
    out = ok(api, "conf")
    assert ["buckets", "1024"] in [line.split() for line in out.splitlines()]
    out = ok(api, "conf", "buckets", "2048", "timeout", "30", "node_ip", "192.168.1.1",
             "node_ip6", "fd00::1")
    assert ["buckets", "2048"] in [line.split() for line in out.splitlines()]
    assert ["node_ip6", "fd00::1"] in [line.split() for line in out.splitlines()]
    out = ok(api, "conf", "node_ip", "192.168.1.2", "dpid", "0x2")
    assert ["2", "192.168.1.2", "-", "-"] in [line.split() for line in out.splitlines()]
    assert api.service.conf()["timeout"] == 30


def test_vip_add_prints_it(api):
    out = ok(api, "vip", "10.96.0.10/32", "protocol", "tcp", "port", "80", "target_port",
             "8080", "node_port", "30080", "external_ip", "192.0.2.10", "external_ip",
             "192.0.2.11")
    assert lines_with(out, "10.96.0.10/32") == [
        ["10.96.0.10/32", "80", "tcp", "8080", "30080", "nat44", "1024", "0", "0", "0", "0",
         "0"]]
    assert "external_ips: 192.0.2.10, 192.0.2.11" in out
    vip = api.service.vip("10.96.0.10/32", 80)
    assert vip["external_ips"] == ["192.0.2.10", "192.0.2.11"]


def test_vip_without_port_takes_every_port(api):
    ok(api, "vip", "90.0.0.0/8", "nat44", "new_len", "2048")   # the seed's own example
    (vip,) = api.service.vips()
    assert (vip["port"], vip["protocol"], vip["new_len"]) == (0, "any", 2048)
    assert ok(api, "vip", "90.0.0.0/8", "nat44", "new_len", "2048", "del") == (
        "deleted VIP 90.0.0.0/8\n")
    assert api.service.vips() == []


def test_vip_del_by_port(web):
    assert ok(web, "vip", "fd00:96::10/128", "port", "53", "del") == (
        "deleted VIP fd00:96::10/128 port 53\n")
    assert [v["prefix"] for v in web.service.vips()] == ["10.96.0.10/32"]


def test_pods_add_and_del(web):
    vip = web.service.vip("10.96.0.10/32", 80)
    assert [p["address"] for p in vip["pods"]] == ["10.1.0.1", "10.1.0.2"]
    out = ok(web, "pod", "10.96.0.10/32", "10.1.0.1", "del", "flush")
    assert "pods: 10.1.0.2" in out
    out = ok(web, "pod", "fd00:96::10/128", "port", "53", "fd00:1::2", "fd00:1::3")
    assert "pods: fd00:1::1, fd00:1::2, fd00:1::3" in out


def test_set_interface(api):
    out = ok(api, "set", "interface", "nat4", "in", "s1-eth1")
    assert out.split() == ["NAT", "INTERFACE", "nat4", "s1-eth1"]
    ok(api, "set", "interface", "nat6", "in", "s1-eth2")
    assert ok(api, "show", "interfaces").split() == [
        "NAT", "INTERFACE", "nat4", "s1-eth1", "nat6", "s1-eth2"]
    ok(api, "set", "interface", "nat4", "in", "s1-eth1", "del")
    ok(api, "set", "interface", "nat6", "in", "s1-eth2", "del")
    assert ok(api, "show", "interfaces") == "no SNAT interfaces\n"


def test_show(web):
    open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"])
    web.service.cache_stats(1, {"hits": 100, "misses": 3})
    ok(web, "set", "interface", "nat4", "in", "s1-eth1")
    out = ok(web, "show")
    assert "conf: buckets 1024, timeout 40 s" in out
    assert "2 VIPs, 3 pods, 1 sessions; switches: 1 (packet-in)" in out
    assert "SNAT interfaces: nat4 s1-eth1; nat6 -" in out
    assert lines_with(out, "10.96.0.10/32")[0][:9] == [
        "10.96.0.10/32", "80", "tcp", "8080", "30080", "nat44", "1024", "2", "1"]
    assert "pods: 10.1.0.1, 10.1.0.2" in out and "pods: fd00:1::1" in out
    assert out.splitlines()[-3:] == [
        "switch caches:", "DPID  HITS  MISSES  PACKET_INS  SERVICE_PACKET_INS",
        "1      100       3           3                   1"]


def test_show_vip_and_verbose(web):
    open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"])
    out = ok(web, "show", "vip")
    assert "STATE" not in out and "pods: 10.1.0.1, 10.1.0.2" in out
    verbose = ok(web, "show", "vip", "verbose")
    pod_rows = [row for row in lines_with(verbose, "10.1.0.") if row[1] == "active"]
    assert len(pod_rows) == 2
    assert [int(row[2]) for row in pod_rows] == [512, 512]  # new-connection table entries
    assert sum(int(row[3]) for row in pod_rows) == 1       # the one session, on one pod
    assert "no_pod 0  untracked 0  table_full 0" in verbose


def test_show_one_vip(web):
    out = ok(web, "show", "vip", "fd00:96::10/128", "verbose")
    assert [row[0] for row in lines_with(out, "/128")] == ["fd00:96::10/128"]
    assert "10.96.0.10/32" not in out and lines_with(out, "fd00:1::1")[0][1] == "active"
    assert ok(web, "show", "vip", "10.96.0.10/32", "port", "80").splitlines()[1].startswith(
        "10.96.0.10/32")
    fails(web, "show", "vip", "10.96.0.10/32", "port", "81", code=1,
          stderr="ku: no VIP 10.96.0.10/32 port 81")


def test_show_sessions_is_bounded(web):
    for sport in (40000, 40001, 40002):
        open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"],
                     sport=sport)
    out = ok(web, "show", "sessions", "limit", "2")
    assert out.splitlines()[0] == "3 sessions (showing 2)"
    assert len(lines_with(out, "10.0.0.5:")) == 2
    assert ok(web, "show", "sessions").splitlines()[0] == "3 sessions"


def test_show_sessions_of_one_vip(web):
    web.service.add_vip("10.96.0.11/32", 80, 8080, protocol="tcp")
    web.service.add_pods("10.96.0.11/32", 80, ["10.1.0.3"])
    open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"])
    open_session(web.service, "10.0.0.5", "10.96.0.11", 80, ["10.1.0.3"], sport=40001)
    assert ok(web, "show", "sessions").splitlines()[0] == "2 sessions"
    out = ok(web, "show", "sessions", "10.96.0.11/32", "port", "80")
    assert out.splitlines()[0] == "1 session"
    assert [row[3] for row in lines_with(out, "10.0.0.5:")] == ["10.96.0.11:80"]
    result = web.ku("show", "sessions", "10.96.0.12/32")  # (sessions age: not `fails`)
    assert (result.returncode, result.stderr) == (1, "ku: no VIP 10.96.0.12/32\n")


def test_show_sessions_says_how_many_are_untracked(web):
    web.service.set_conf(buckets=1)                 # 4 sessions have switch flows
    for sport in range(40000, 40006):
        open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"],
                     sport=sport)
    out = ok(web, "show", "sessions")
    assert out.splitlines()[0] == "6 sessions, 2 untracked (over the table's capacity)"
    assert [row[-1] for row in lines_with(out, "10.0.0.5:")].count("no") == 2


def test_show_counters(web):
    open_session(web.service, "10.0.0.5", "10.96.0.10", 80, ["10.1.0.1", "10.1.0.2"])
    out = ok(web, "show", "counters")
    (vip_row,) = lines_with(out, "10.96.0.10/32")
    assert vip_row[:5] == ["10.96.0.10/32", "80", "tcp", "1", "1"]
    assert len(lines_with(out, "pod 10.1.0.")) == 2


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_json_anywhere(web, where):
    args = ["show", "vip"]
    args.insert({"first": 0, "middle": 1, "last": 2}[where], "--json")
    assert json.loads(ok(web, *args)) == web.service.vips()


def test_json_of_each_command(web):
    assert json.loads(ok(web, "--json", "conf")) == web.service.conf()
    assert json.loads(ok(web, "show", "--json")) == {
        "show": web.service.show(), "vips": web.service.vips(),
        "counters": web.service.counters()}
    assert json.loads(ok(web, "--json", "show", "counters")) == web.service.counters()
    assert json.loads(ok(web, "--json", "show", "sessions")) == {
        "count": 0, "untracked": 0, "sessions": []}
    vip = json.loads(ok(web, "--json", "pod", "10.96.0.10/32", "10.1.0.3"))
    assert vip == web.service.vip("10.96.0.10/32", 80)
    assert ok(web, "--json", "vip", "10.96.0.10/32", "del") == ""


def test_api_from_environment(web):
    result = web.ku("show", "interfaces", env={"KP_API": web.url})
    assert result.returncode == 0 and result.stdout == "no SNAT interfaces\n"


# -- failures: one line on stderr, non-zero, nothing changed -------------------------------


@pytest.mark.parametrize("args, stderr", [
    # From the API (exit 1): its field and message.
    (["vip", "10.96.0.11/32", "port", "70000"], "ku: port: 70000 is out of range 0-65535"),
    (["vip", "10.96.0.11/32", "port", "80", "protocol", "quic"],
     "ku: protocol: 'quic' is not one of tcp, udp, sctp, any"),
    (["vip", "10.96.0.11/32", "nat66"],
     "ku: nat: nat66 does not match the IPv4 prefix 10.96.0.11/32 (use nat44)"),
    (["vip", "10.96.0.10/32", "port", "80"], "ku: VIP 10.96.0.10/32 port 80 already exists"),
    (["vip", "10.96.0.99/32", "del"], "ku: no VIP 10.96.0.99/32"),
    (["vip", "10.96.0.300/32", "port", "80"], None),
    (["pod", "10.96.0.10/32", "10.1.0.3", "fd00::1"],
     "ku: addresses: fd00::1 is IPv6, expected IPv4"),
    (["pod", "10.96.0.10/32", "10.1.0.1"], "ku: 10.1.0.1 is already a pod of VIP "
                                          "10.96.0.10/32 port 80"),
    (["pod", "10.96.0.10/32", "10.1.0.1", "10.1.0.9", "del"],
     "ku: 10.1.0.9 is not a pod of VIP 10.96.0.10/32 port 80"),
    (["pod", "10.96.0.10/32", "port", "81", "10.1.0.3"], "ku: no VIP 10.96.0.10/32 port 81"),
    (["conf", "buckets", "1000"], "ku: buckets: 1000 is not a power of 2"),
    (["conf", "timeout", "0"], "ku: timeout: 0 is out of range 1-86400"),
    (["set", "interface", "nat4", "in", "s1-eth9", "del"], "ku: s1-eth9 has no nat4 feature"),
])
def test_api_errors(web, args, stderr):
    if stderr is None:   # the core's wording of a bad prefix includes ipaddress's
        result = web.ku(*args)
        assert result.returncode == 1 and result.stderr.startswith("ku: prefix: ")
        assert result.stderr.count("\n") == 1
        return
    fails(web, *args, code=1, stderr=stderr)


@pytest.mark.parametrize("args, stderr", [
    ([], "ku: missing command (expected conf, vip, pod, set, show, apply, delete; see ku --help)"),
    (["frob"], "ku: unknown command 'frob' (expected conf, vip, pod, set, show, apply, delete)"),
    (["vip", "10.96.0.11/32", "port", "8o"], "ku: port: '8o' is not an integer"),
    (["vip", "10.96.0.11/32", "port"], "ku: port: missing value"),
    (["vip", "10.96.0.11/32", "prot", "tcp"], None),
    (["vip", "port", "80"], "ku: vip: missing <prefix>"),
    (["vip", "10.96.0.11", "port", "80"],
     "ku: prefix: expected <address>/<length>, got '10.96.0.11'"),
    (["pod", "10.96.0.10/32"], "ku: pod: missing <address> (give one or more pod addresses)"),
    (["pod", "10.96.0.10/32", "10.1.0.1", "flush"],
     "ku: flush: only with del (ku pod <prefix> <address>... del flush)"),
    (["set", "interface", "nat5", "in", "eth0"],
     "ku: set interface: expected nat4 or nat6, got 'nat5'"),
    (["show", "vips"], None),
    (["show", "sessions", "limit", "ten"], "ku: limit: 'ten' is not an integer"),
    (["--jsno", "show"], "ku: unknown option '--jsno' (expected --api, --token-file, --json, --help)"),
])
def test_usage_errors_send_nothing(web, args, stderr):
    if stderr is None:   # the message lists every keyword; its start is what matters
        result = web.ku(*args)
        assert result.returncode == 2 and "unknown keyword" in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
        return
    fails(web, *args, code=2, stderr=stderr)


def test_unreachable_controller():
    port = kp_lab.free_port()     # free a moment ago: nobody listens there
    result = subprocess.run([KU, "--api", f"http://127.0.0.1:{port}", "show"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"ku: cannot reach the API at http://127.0.0.1:{port}: "
                             "Connection refused\n")


def test_bad_api_url():
    result = subprocess.run([KU, "--api", "127.0.0.1:8080", "show"], capture_output=True,
                            text=True, timeout=30)
    assert (result.returncode, result.stderr) == (
        2, "ku: --api: '127.0.0.1:8080' is not an http:// or https:// URL\n")


def test_not_our_api(api):
    """A server that answers with something else than kp's JSON errors (here, Ryu's own
    404 outside /v1) is reported as such."""
    result = subprocess.run([KU, "--api", api.url + "/elsewhere", "show"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == (f"ku: HTTP 404 Not Found from {api.url}/elsewhere/v1/show\n")


def test_help():
    result = subprocess.run([KU, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("usage: ku ")
    assert "ku pod <vip-prefix> [port <n>] <address>... [del [flush]]" in result.stdout


def test_reader_that_stops_early_is_not_an_error(web):
    """`ku show | head -1`: no traceback, exit 0."""
    proc = subprocess.Popen([KU, "--api", web.url, "show", "vip", "verbose"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    assert (proc.wait(30), proc.stderr.read()) == (0, b"")
    proc.stderr.close()


def test_ku_imports_neither_ryu_nor_eventlet():
    code = ("import sys, kp_app.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('ryu', 'eventlet', 'webob', 'routes', 'greenlet')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"


# -- the real controller: ryu-manager serves the API with eventlet's WSGI server ----------


@pytest.fixture
def ryu_manager():
    """`ryu-manager kp_app` on free ports (no switch connects); its API URL."""
    with kp_lab.ControllerProcess() as ctl:
        yield ctl.url("").rstrip("/")


def test_ku_against_ryu_manager(ryu_manager):
    def ku(*args):
        return subprocess.run([KU, "--api", ryu_manager, *args], capture_output=True,
                              text=True, timeout=30)

    assert ku("vip", "fd00:96::10/128", "protocol", "udp", "port", "53", "target_port",
              "5353").returncode == 0
    assert ku("pod", "fd00:96::10/128", "fd00:1::1", "fd00:1::2").returncode == 0
    # A DELETE with a JSON body, through eventlet's server.
    out = ku("pod", "fd00:96::10/128", "port", "53", "fd00:1::1", "del").stdout
    assert "pods: fd00:1::2" in out
    before = ku("--json", "show").stdout
    bad = ku("vip", "fd00:96::10/128", "port", "53")
    assert (bad.returncode, bad.stderr) == (
        1, "ku: VIP fd00:96::10/128 port 53 already exists\n")
    assert ku("--json", "show").stdout == before
    assert ku("vip", "fd00:96::10/128", "del").stdout == "deleted VIP fd00:96::10/128\n"
    assert json.loads(ku("--json", "show", "vip").stdout) == []


def _call(url, method, path, body=None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data, method=method,
                                 headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=60) as answer:
        return json.loads(answer.read())


def _while_answering(url, method, path, body):
    """The answer to one request, and how many others the controller answered while it
    was being made."""
    answered = []
    posted = threading.Thread(target=lambda: answered.append(_call(url, method, path, body)))
    posted.start()
    meanwhile = 0
    while posted.is_alive():
        _call(url, "GET", "/v1/conf")
        meanwhile += posted.is_alive()
    posted.join()
    return answered[0], meanwhile


def test_a_big_table_builds_while_the_controller_answers(ryu_manager):
    """2**20 slots take seconds to build: the controller keeps answering meanwhile (other
    requests here; packet-ins and echo requests alike), and the change still gets it."""
    _call(ryu_manager, "POST", "/v1/vips", {"prefix": "10.96.0.10/32", "port": 80,
                                            "target_port": 8080, "new_len": 1 << 20})
    pods = [f"10.1.0.{i}" for i in range(1, 11)]
    vip, meanwhile = _while_answering(ryu_manager, "POST", "/v1/vips/10.96.0.10/32/80/pods",
                                      {"addresses": pods})
    entries = sorted(p["table_entries"] for p in vip["pods"])
    assert entries == [104857] * 4 + [104858] * 6
    # Before, the controller did nothing else until the table was built: a request
    # or two slipped in ahead of it at most.
    assert meanwhile >= 10


def test_a_big_service_is_applied_while_the_controller_answers(ryu_manager):
    """700 pods get 2**17 table entries (100 per pod): built in a thread, as for `ku pod`."""
    pods = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(700)]
    document = {"kind": "List", "items": [
        {"kind": "Service", "metadata": {"name": "big"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}},
        {"kind": "Endpoints", "metadata": {"name": "big"},
         "subsets": [{"addresses": [{"ip": p} for p in pods], "ports": [{"port": 8080}]}]}]}
    changes, meanwhile = _while_answering(ryu_manager, "POST", "/v1/kubernetes/apply",
                                          document)
    assert changes["vips"][0]["action"] == "created"
    vip = _call(ryu_manager, "GET", "/v1/vips/10.96.0.10/32/80")
    assert vip["new_len"] == 1 << 17
    assert sorted({p["table_entries"] for p in vip["pods"]}) == [187, 188]
    assert meanwhile >= 10
