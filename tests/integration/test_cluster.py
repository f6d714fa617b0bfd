"""kube-proxy semantics across a cluster: kpcluster,nodes=3,pods=2 under one kp_app.

Node n: switch s<n> (dpid n), node address 10.0.n.1/24, client n<n>c1 (10.0.n.11), pods
n<n>p1, n<n>p2 (10.0.n.101, .102); a fabric switch f0 joins the nodes. kp_app finds the
links itself and routes between the node subnets.
"""
import pytest

import kp_lab
from test_kube_proxy import api

VIP = "10.96.0.10"


@pytest.fixture
def cluster(lab_factory, controller):
    lab = lab_factory("kpcluster", nodes=3, pods=2)
    for n in (1, 2, 3):
        status, body = api(controller, "PUT", "/conf", {
            "node_ip": f"10.0.{n}.1/24", "node_ip6": f"fd00:0:0:{n}::1/64", "dpid": n})
        assert status == 200, body
    status, body = api(controller, "POST", "/vips", {
        "prefix": VIP + "/32", "port": 80, "target_port": 8080, "node_port": 30080,
        "protocol": "any"})
    assert status == 201, body
    for pod in lab.pods:
        kp_lab.start_http_server(pod, 8080, name=pod.name)
        kp_lab.start_udp_server(pod, 8080, name=pod.name)
    return lab


def add_pods(controller, lab, names):
    status, body = api(controller, "POST", f"/vips/{VIP}/32/80/pods",
                       {"addresses": [lab.ip(n) for n in names]})
    assert status == 200, body


def test_a_pod_reaches_a_cluster_ip_served_on_other_nodes(cluster, controller, controller_mode):
    add_pods(controller, cluster, ["n2p1", "n2p2", "n3p1", "n3p2"])
    client = cluster.host("n1p1")
    assert kp_lab.ping(client, cluster.ip("n3p2"))           # routed between nodes
    assert kp_lab.ping(client, "10.0.1.1")                    # the node answers
    seen = set()
    for _ in range(12):
        result = kp_lab.http_get(client, kp_lab.url_for(VIP, 80))
        assert result["ok"], result
        assert result["body"]["peer"] == cluster.ip("n1p1")  # DNAT only: the pod sees us
        seen.add(result["body"]["name"])
    assert seen <= {"n2p1", "n2p2", "n3p1", "n3p2"} and len(seen) >= 2
    udp = kp_lab.udp_request(client, VIP, 80, count=3, interval=0.2)
    assert udp["ok"] and {r["from"] for r in udp["replies"]} == {VIP}, udp
    # 12 HTTP connections and one UDP flow: each a session on the node it entered, and
    # nowhere else (the pods' nodes only route).
    status, counters = api(controller, "GET", "/counters")
    assert counters["vips"][0]["new_sessions"] == 13, counters
    if controller_mode not in ("ct", "lb"):     # the switch keeps those itself
        status, sessions = api(controller, "GET", "/sessions?limit=100")
        assert {s["dpid"] for s in sessions["sessions"]} == {1}


def test_node_port_on_any_node_reaches_pods_on_any_node(cluster, controller):
    add_pods(controller, cluster, ["n1p1", "n3p1"])
    client = cluster.host("n2c1")
    for n in (1, 2, 3):
        names = set()
        for _ in range(4):
            result = kp_lab.http_get(client, kp_lab.url_for(f"10.0.{n}.1", 30080))
            assert result["ok"], (n, result)
            body = result["body"]
            local = body["name"].startswith(f"n{n}")
            # A pod on another node sees the entry node (SNAT); a local one, the client.
            assert body["peer"] == (cluster.ip("n2c1") if local else f"10.0.{n}.1"), (n, body)
            names.add(body["name"])
        udp = kp_lab.udp_request(client, f"10.0.{n}.1", 30080, count=2, interval=0.2)
        assert udp["ok"], (n, udp)
        # The reply comes back through the node it entered, from its address and node port.
        assert {(r["from"], r["from_port"]) for r in udp["replies"]} == {(f"10.0.{n}.1", 30080)}


def test_hairpin_a_pod_chosen_by_its_own_request(cluster, controller):
    add_pods(controller, cluster, ["n1p1", "n2p1"])
    pod = cluster.host("n1p1")
    answered_by = []
    for _ in range(16):
        result = kp_lab.http_get(pod, kp_lab.url_for(VIP, 80))
        assert result["ok"], result
        answered_by.append(result["body"]["name"])
        if result["body"]["name"] == "n1p1":
            assert result["body"]["peer"] == "10.0.1.1"   # hairpin is SNATed to the node
            break
    assert "n1p1" in answered_by, answered_by


def test_the_same_flow_picks_the_same_pod_again(cluster, controller):
    add_pods(controller, cluster, ["n1p1", "n1p2", "n2p1", "n2p2", "n3p1", "n3p2"])
    client = cluster.host("n3c1")
    first = kp_lab.udp_request(client, VIP, 80, count=1, src_port=41000)
    # End the session everywhere (flush every pod), then add them back: the same
    # 5-tuple must land on the same pod, as it would on any node with the same table.
    everyone = [cluster.ip(p.name) for p in cluster.pods]
    status, _ = api(controller, "DELETE", f"/vips/{VIP}/32/80/pods",
                    {"addresses": everyone, "flush": True})
    assert status == 200
    status, _ = api(controller, "POST", f"/vips/{VIP}/32/80/pods", {"addresses": everyone})
    again = kp_lab.udp_request(client, VIP, 80, count=1, src_port=41000)
    assert first["ok"] and again["ok"], (first, again)
    assert first["replies"][0]["name"] == again["replies"][0]["name"]


def test_external_policy_local_keeps_node_port_clients_on_the_entry_nodes_pods(
        cluster, controller):
    assert api(controller, "DELETE", f"/vips/{VIP}/32/80")[0] == 204
    status, body = api(controller, "POST", "/vips", {
        "prefix": VIP + "/32", "port": 80, "target_port": 8080, "node_port": 30080,
        "protocol": "tcp", "external_policy": "local"})
    assert status == 201, body
    add_pods(controller, cluster, ["n1p1", "n3p1"])
    client = cluster.host("n2c1")
    for n in (1, 3):
        for _ in range(3):
            result = kp_lab.http_get(client, kp_lab.url_for(f"10.0.{n}.1", 30080))
            assert result["ok"], (n, result)
            # the entry node's own pod, and it sees the client itself (no SNAT)
            assert (result["body"]["name"], result["body"]["peer"]) == (
                f"n{n}p1", cluster.ip("n2c1")), (n, result)
    result = kp_lab.http_get(client, kp_lab.url_for("10.0.2.1", 30080), timeout=2)
    assert not result["ok"], result            # node 2 has none of the pods: dropped
    status, vip = api(controller, "GET", f"/vips/{VIP}/32/80")
    assert vip["counters"]["no_local_pod"] >= 1


def test_nodes_route_to_each_other_with_nothing_configured_by_hand(lab_factory, controller):
    """The switches announce their node addresses (topologies/kp.py): kp_app routes
    between the node subnets, IPv4 and IPv6, with no `ku conf` at all; a hand setting
    then replaces the announced one."""
    lab = lab_factory("kpcluster", nodes=2, pods=1)
    src = lab.host("n1p1")
    for dst in ("n2p1", "n2c1"):
        for family in (4, 6):
            # The first packets may meet a fabric not yet discovered (link probes).
            assert kp_lab.procs.wait_until(
                lambda: kp_lab.ping(src, lab.ip(dst, family), timeout=1), 15), (dst, family)
    status, conf = api(controller, "GET", "/conf")
    assert status == 200
    assert conf["nodes"] == {str(n): {
        "node_ip": f"10.0.{n}.1", "node_ip6": f"fd00:0:0:{n}::1",
        "node_subnet": f"10.0.{n}.0/24", "node_subnet6": f"fd00:0:0:{n}::/64",
        "announced": ["node_ip", "node_ip6"]} for n in (1, 2)}, conf
    status, conf = api(controller, "PUT", "/conf", {"node_ip": "10.0.2.1/24", "dpid": 2})
    assert status == 200 and conf["nodes"]["2"]["announced"] == ["node_ip6"], conf
    assert kp_lab.ping(src, lab.ip("n2p1"), timeout=1)
