"""kp_app end to end: real traffic through Mininet, on both switches, same assertions.

The kpnode topology (topologies/kp.py): node address 10.0.0.1 / fd00::1, clients c1, c2
at .11, .12, pods p1..p3 at .101..103, service range 10.96.0.0/16 and fd00:96::/112.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

import kp_lab

VIP, VIP6 = "10.96.0.10", "fd00:96::10"
KU = os.path.join(os.path.dirname(sys.executable), "ku")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # no http_proxy


def api(controller, method, path, body=None):
    request = urllib.request.Request(
        controller.url("/v1" + path), method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with DIRECT.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def ku(controller, *args):
    return subprocess.run([KU, "--api", controller.url("").rstrip("/"), *map(str, args)],
                          capture_output=True, text=True, timeout=20)


def configure(controller, lab, prefix=VIP + "/32", port=80, target_port=8080,
              node_port=30080, protocol="tcp", pods=None, family=4):
    status, _ = api(controller, "PUT", "/conf", {"node_ip": "10.0.0.1", "node_ip6": "fd00::1"})
    assert status == 200
    status, body = api(controller, "POST", "/vips", {
        "prefix": prefix, "port": port, "target_port": target_port, "node_port": node_port,
        "protocol": protocol})
    assert status == 201, body
    addresses = pods if pods is not None else [lab.ip(p.name, family) for p in lab.pods]
    if addresses:
        addr, plen = prefix.split("/")
        status, body = api(controller, "POST", f"/vips/{addr}/{plen}/{port}/pods",
                           {"addresses": addresses})
        assert status == 200, body


def serve(lab, kind, port):
    starter = {"http": kp_lab.start_http_server, "tcp": kp_lab.start_tcp_server,
               "udp": kp_lab.start_udp_server}[kind]
    return [starter(pod, port, name=pod.name) for pod in lab.pods]


@pytest.mark.both_port_io
def test_http_to_a_cluster_ip_reaches_every_pod_in_proportion(kpnode, controller):
    configure(controller, kpnode)
    serve(kpnode, "http", 8080)
    seen = Counter()
    flows = {}
    for client in kpnode.clients:
        for _ in range(30):
            result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
            assert result["ok"], result
            body = result["body"]
            assert body["peer"] == kpnode.ip(client.name)   # the pod sees the real client
            seen[body["name"]] += 1
            # A client may reuse a source port: the same 5-tuple is the same session.
            assert flows.setdefault((body["peer"], body["peer_port"]), body["name"]) == \
                body["name"]
    assert set(seen) == {p.name for p in kpnode.pods}
    assert all(8 <= n <= 36 for n in seen.values()), seen     # 60 flows over 3 pods
    status, counters = api(controller, "GET", "/counters")
    vip = counters["vips"][0]
    assert vip["new_sessions"] == len(flows) and vip["packets"] > 60 * 4
    assert {p["address"]: p["new_sessions"] for p in vip["pods"]} == {
        kpnode.ip(name): n for name, n in Counter(flows.values()).items()}
    show = ku(controller, "show", "vip", "verbose")
    assert show.returncode == 0 and VIP in show.stdout


def test_a_long_tcp_connection_and_a_udp_flow_each_stay_on_their_pod(kpnode, controller):
    configure(controller, kpnode, protocol="any", target_port=5000, port=5000, node_port=None)
    serve(kpnode, "tcp", 5000)
    serve(kpnode, "udp", 5000)
    c1 = kpnode.clients[0]
    tcp = kp_lab.start_tcp_session(c1, VIP, 5000, count=6, interval=0.5)
    udp = kp_lab.udp_request(c1, VIP, 5000, count=6, interval=0.5, src_port=40123)
    tcp = tcp.result()
    assert tcp["ok"] and udp["ok"], (tcp, udp)
    assert len({r["name"] for r in tcp["replies"]}) == 1
    assert len({r["name"] for r in udp["replies"]}) == 1
    # The client only ever sees the VIP and its port; the pod sees the client.
    assert {(r["from"], r["from_port"]) for r in udp["replies"]} == {(VIP, 5000)}
    assert {r["peer"] for r in tcp["replies"] + udp["replies"]} == {kpnode.ip(c1.name)}


@pytest.mark.both_port_io
def test_node_port_over_tcp_and_udp(kpnode, controller):
    configure(controller, kpnode, protocol="any", port=80, target_port=8080, node_port=30080)
    serve(kpnode, "http", 8080)
    serve(kpnode, "udp", 8080)
    c2 = kpnode.clients[1]
    result = kp_lab.http_get(c2, kp_lab.url_for("10.0.0.1", 30080))
    assert result["ok"] and result["body"]["peer"] == kpnode.ip(c2.name), result
    udp = kp_lab.udp_request(c2, "10.0.0.1", 30080, count=3, interval=0.2)
    assert udp["ok"], udp
    assert {(r["from"], r["from_port"]) for r in udp["replies"]} == {("10.0.0.1", 30080)}


@pytest.mark.both_port_io
def test_nat66_over_ipv6(kpnode, controller):
    configure(controller, kpnode, prefix=VIP6 + "/128", family=6)
    serve(kpnode, "http", 8080)
    seen = set()
    for _ in range(12):
        result = kp_lab.http_get(kpnode.clients[0], kp_lab.url_for(VIP6, 80))
        assert result["ok"], result
        assert result["body"]["peer"] == kpnode.ip(kpnode.clients[0].name, 6)
        seen.add(result["body"]["name"])
    assert len(seen) >= 2


@pytest.mark.packet_in_sessions
def test_removing_a_pod_leaves_other_pods_connections_working(kpnode, controller):
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None)
    serve(kpnode, "tcp", 5000)
    sessions = [kp_lab.start_tcp_session(c, VIP, 5000, count=8, interval=0.5)
                for c in kpnode.clients for _ in range(3)]
    time.sleep(1.2)
    status, listed = api(controller, "GET", "/sessions?limit=50")
    assert listed["count"] == 6
    victim = listed["sessions"][0]["pod"].split(":")[0]
    status, body = api(controller, "DELETE", f"/vips/{VIP}/32/5000/pods",
                       {"addresses": [victim], "flush": True})
    assert status == 200, body
    victim_name = next(p.name for p in kpnode.pods if kpnode.ip(p.name) == victim)
    results = [s.result() for s in sessions]
    survivors = [r for r in results if r["replies"] and r["replies"][0]["name"] != victim_name]
    assert survivors and all(r["ok"] for r in survivors), results
    # New connections no longer go to the removed pod.
    for _ in range(6):
        result = kp_lab.tcp_session(kpnode.clients[0], VIP, 5000, count=1)
        assert result["ok"] and result["replies"][0]["name"] != victim_name, result


def test_a_vip_with_no_pods_refuses_quickly(kpnode, controller):
    configure(controller, kpnode, pods=[], protocol="any", node_port=None)
    c1 = kpnode.clients[0]
    started = time.monotonic()
    result = kp_lab.http_get(c1, kp_lab.url_for(VIP, 80), timeout=5)
    assert not result["ok"] and "refused" in (result.get("error") or "").lower(), result
    udp = kp_lab.udp_request(c1, VIP, 80, count=1, timeout=3)
    assert not udp["ok"]
    assert time.monotonic() - started < 5
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/80")
    assert vip["counters"]["no_pod"] >= 2


def test_invalid_ku_input_errors_and_changes_nothing(kpnode, controller):
    configure(controller, kpnode)
    before = [api(controller, "GET", p)[1] for p in ("/conf", "/vips")]
    for args in (["vip", "10.96.0.300/32", "port", 80, "target_port", 80],
                 ["vip", "10.96.0.11/32", "port", 70000, "target_port", 80],
                 ["vip", VIP + "/32", "port", 80, "target_port", 8080],          # duplicate
                 ["pod", VIP + "/32", "fd00::101"],                                # wrong family
                 ["pod", "10.96.9.9/32", "10.0.0.101"],                            # unknown VIP
                 ["conf", "buckets", 1000]):
        result = ku(controller, *args)
        assert result.returncode != 0 and result.stderr.strip(), (args, result)
    assert [api(controller, "GET", p)[1] for p in ("/conf", "/vips")] == before


def test_an_external_load_balancer_ip_reaches_the_service(kpnode, controller):
    status, body = api(controller, "PUT", "/conf", {"node_ip": "10.0.0.1"})
    status, body = api(controller, "POST", "/vips", {
        "prefix": VIP + "/32", "port": 80, "target_port": 8080, "protocol": "tcp",
        "external_ips": ["192.0.2.10"]})
    assert status == 201, body
    api(controller, "POST", f"/vips/{VIP}/32/80/pods",
        {"addresses": [kpnode.ip(p.name) for p in kpnode.pods]})
    serve(kpnode, "http", 8080)
    c1 = kpnode.clients[0]
    for address in ("192.0.2.10", VIP):
        result = kp_lab.http_get(c1, kp_lab.url_for(address, 80))
        assert result["ok"] and result["body"]["peer"] == kpnode.ip(c1.name), (address, result)


def test_conf_buckets_reaches_the_switch_cache(kpnode, controller, switch_kind):
    configure(controller, kpnode)
    serve(kpnode, "http", 8080)
    status, conf = api(controller, "PUT", "/conf", {"buckets": 4096})
    assert status == 200 and conf["buckets"] == 4096
    assert kp_lab.http_get(kpnode.clients[0], kp_lab.url_for(VIP, 80))["ok"]
    status, counters = api(controller, "GET", "/counters")
    cache = counters["switches"]["1"]
    if switch_kind == "kpswitch":
        assert cache["buckets"] == 4096 and cache["hits"] + cache["misses"] > 0, cache
        show = ku(controller, "show")
        assert show.returncode == 0 and "4096" in show.stdout, show.stdout
    else:
        # Open vSwitch has no such cache: only kp_app's own count of its packet-ins
        assert set(cache) == {"packet_ins", "service_packet_ins"}, cache


@pytest.mark.packet_in_sessions
def test_sessions_beyond_the_table_still_work_through_the_controller(kpnode, controller):
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None)
    status, conf = api(controller, "PUT", "/conf", {"buckets": 1})   # 4 tracked sessions
    assert status == 200 and conf["buckets"] == 1
    serve(kpnode, "tcp", 5000)
    sessions = [kp_lab.start_tcp_session(c, VIP, 5000, count=4, interval=0.4)
                for c in kpnode.clients for _ in range(3)]
    time.sleep(0.8)
    status, listed = api(controller, "GET", "/sessions?limit=50")
    assert sorted(s["tracked"] for s in listed["sessions"]) == [False] * 2 + [True] * 4, listed
    results = [s.result() for s in sessions]
    # A connection only opens if every reply comes back from the VIP and its port.
    assert all(r["ok"] and len(r["replies"]) == 4 for r in results), results
    assert {r["replies"][0]["peer"] for r in results} == {kpnode.ip(c.name)
                                                          for c in kpnode.clients}
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/5000")
    assert (vip["counters"]["untracked"], vip["counters"]["table_full"]) == (2, 2), vip


GSO_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)          # UDP_SEGMENT: 1000-byte datagrams
for _ in range(2):
    s.sendto(b"q" * 3500, (sys.argv[1], int(sys.argv[2])))   # 4 datagrams each
s.settimeout(3)
replies = []
try:
    while len(replies) < 8:
        data, addr = s.recvfrom(65535)
        body = json.loads(data)
        replies.append([addr[0], addr[1], body["name"], body["peer"], len(body["payload"])])
except socket.timeout:
    pass
print(json.dumps(replies))
"""


@pytest.mark.both_port_io
def test_udp_segment_senders_reach_the_service(kpnode, controller):
    # UDP_SEGMENT (as QUIC stacks write): the veth hands the switch 4 datagrams joined.
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None,
              protocol="udp")
    serve(kpnode, "udp", 5000)
    c1 = kpnode.clients[0]
    out = c1.cmd("%s -c '%s' %s 5000" % (kp_lab.traffic.PYTHON, GSO_CLIENT, VIP))
    replies = json.loads(out[out.find("["):])     # after the shell's continuation prompts
    assert len(replies) == 8, out
    assert {(r[0], r[1]) for r in replies} == {(VIP, 5000)}       # un-NATed replies
    assert len({r[2] for r in replies}) == 1                     # one session, one pod
    assert {r[3] for r in replies} == {kpnode.ip(c1.name)}
    assert sorted(r[4] for r in replies) == [500, 500] + [1000] * 6


def test_a_pod_that_moves_to_another_port_is_found_there(kpnode, controller):
    """A pod's port goes down and its address turns up behind another port (a pod
    restarted with its address elsewhere, a VM moved): kp_app forgets what it had learned
    behind the dead port, so new connections find the pod where it is now."""
    configure(controller, kpnode, port=5000, target_port=5000, node_port=None)
    serve(kpnode, "tcp", 5000)
    client, mover, new_home = kpnode.clients[0], kpnode.pods[0], kpnode.clients[1]

    def connect_all(first_port, count=24):
        runs = [kp_lab.start_tcp_session(client, VIP, 5000, count=1, timeout=1.0,
                                         src_port=first_port + i) for i in range(count)]
        return [r["replies"][0]["name"] if r["ok"] else None
                for r in (run.result() for run in runs)]

    assert set(connect_all(41000)) == {p.name for p in kpnode.pods}
    mover.cmd("ip link set %s down" % mover.defaultIntf())
    new_home.cmd("ip addr add %s/24 dev %s" % (kpnode.ip(mover.name), new_home.defaultIntf()))
    kp_lab.start_tcp_server(new_home, 5000, name="moved")
    deadline = time.monotonic() + 20
    attempt = 0
    while True:      # until the switch has reported the port down (kp-switch polls links)
        attempt += 1
        names = connect_all(42000 + 100 * attempt)
        if all(names) or time.monotonic() > deadline:
            break
    assert all(names) and "moved" in names and mover.name not in names, names


def test_a_kubernetes_service_applied_with_ku_serves_and_follows_its_endpoints(
        kpnode, controller, tmp_path):
    manifest = os.path.join(os.path.dirname(os.path.dirname(__file__)), "manifests",
                            "web.yaml")
    assert ku(controller, "conf", "node_ip", "10.0.0.1").returncode == 0
    applied = ku(controller, "apply", "-f", manifest)
    assert applied.returncode == 0 and "created" in applied.stdout, applied.stderr
    serve(kpnode, "http", 8080)       # the EndpointSlice's "http" port
    seen, used = Counter(), set()
    for client in kpnode.clients:
        for _ in range(12):
            result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
            assert result["ok"], result
            seen[result["body"]["name"]] += 1
            used.add((result["body"]["peer"], result["body"]["peer_port"]))
    assert set(seen) == {p.name for p in kpnode.pods}
    result = kp_lab.http_get(kpnode.clients[0], kp_lab.url_for("10.0.0.1", 30080))
    assert result["ok"], result                                  # its NodePort
    # The endpoints change: p3 is no longer ready. Applying again takes it out.
    with open(manifest) as f:
        text = f.read()
    (tmp_path / "web.yaml").write_text(text.replace(
        "- addresses: [10.0.0.103]\n  conditions: {ready: true}",
        "- addresses: [10.0.0.103]\n  conditions: {ready: false}"))
    updated = ku(controller, "apply", "-f", tmp_path / "web.yaml")
    assert updated.returncode == 0 and "-10.0.0.103" in updated.stdout, updated.stderr
    bodies = [kp_lab.http_get(c, kp_lab.url_for(VIP, 80))["body"]
              for c in kpnode.clients for _ in range(10)]
    # A client that happens to reuse a source port is still in its session, which may be
    # p3's: draining keeps it. New 5-tuples must avoid p3.
    after = {b["name"] for b in bodies if (b["peer"], b["peer_port"]) not in used}
    assert after == {"p1", "p2"}
    deleted = ku(controller, "delete", "-f", manifest)
    assert deleted.returncode == 0, deleted.stderr
    assert api(controller, "GET", "/vips") == (200, [])


def test_client_ip_affinity_keeps_each_clients_connections_on_one_pod(kpnode, controller):
    assert ku(controller, "conf", "node_ip", "10.0.0.1").returncode == 0
    made = ku(controller, "vip", VIP + "/32", "protocol", "tcp", "port", 80, "target_port",
              8080, "affinity_timeout", 60)
    assert made.returncode == 0 and "affinity: client IP, 60 s" in made.stdout, made
    assert ku(controller, "pod", VIP + "/32",
              *[kpnode.ip(p.name) for p in kpnode.pods]).returncode == 0
    serve(kpnode, "http", 8080)
    by_client = {}
    for client in kpnode.clients:
        for _ in range(10):                   # 10 connections, 10 source ports
            result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
            assert result["ok"], result
            by_client.setdefault(client.name, set()).add(result["body"]["name"])
    assert all(len(pods) == 1 for pods in by_client.values()), by_client


def test_source_ranges_let_only_their_clients_reach_the_external_ip(kpnode, controller):
    assert ku(controller, "conf", "node_ip", "10.0.0.1").returncode == 0
    c1, c2 = kpnode.clients
    made = ku(controller, "vip", VIP + "/32", "protocol", "tcp", "port", 80, "target_port",
              8080, "external_ip", "192.0.2.10", "source_range", kpnode.ip(c1.name) + "/32")
    assert made.returncode == 0, made.stderr
    assert ku(controller, "pod", VIP + "/32",
              *[kpnode.ip(p.name) for p in kpnode.pods]).returncode == 0
    serve(kpnode, "http", 8080)
    assert kp_lab.http_get(c1, kp_lab.url_for("192.0.2.10", 80))["ok"]
    refused = kp_lab.http_get(c2, kp_lab.url_for("192.0.2.10", 80), timeout=2)
    assert not refused["ok"], refused                          # outside: dropped
    assert kp_lab.http_get(c2, kp_lab.url_for(VIP, 80))["ok"]  # the ClusterIP is open
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/80")
    assert vip["counters"]["filtered"] >= 1
