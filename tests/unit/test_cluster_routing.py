"""Several switches under one controller: link discovery, roles, routes, remote pods."""
import ipaddress

import pytest

from kp_app import frames, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.node import gateway_mac
from kp_app.pipeline import FlowAdd, PacketOut
from test_node import l4_packet

FABRIC = 256


@pytest.fixture
def cluster():
    """kpcluster,nodes=3,pods=1: node n has client port 1, pod port 2, uplink port 3;
    fabric port n goes to node n."""
    sent = {}
    kp = KubeProxy(lambda dpid, msgs: sent.setdefault(dpid, []).extend(msgs), clock=lambda: 5.0)
    kp.sent = sent
    for n in (1, 2, 3):
        kp.set_conf(node_ip=f"10.0.{n}.1/24", dpid=n)
        kp.switch_connected(n, {1: f"s{n}-eth1", 2: f"s{n}-eth2", 3: f"s{n}-eth3"})
    kp.switch_connected(FABRIC, {1: "f0-eth1", 2: "f0-eth2", 3: "f0-eth3"})
    for n in (1, 2, 3):   # each node's probe out of its uplink arrives at the fabric...
        kp.packet_in(FABRIC, n, kp.probes.probe(gateway_mac(n), n, 3, 5.0))
        # ...and the pods answer the controller's ARP probes
        kp.packet_in(n, 2, frames.arp(2, f"00:00:00:0{n}:01:01", f"10.0.{n}.101",
                                      gateway_mac(n), f"10.0.{n}.1"))
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080, node_port=30080, protocol="tcp")
    kp.add_pods("10.96.0.10/32", 80, ["10.0.2.101", "10.0.3.101"])
    for msgs in sent.values():
        msgs.clear()
    return kp


def flows_of(msgs, kind):
    return [m for m in msgs if isinstance(m, FlowAdd) and pipeline.cookie_parts(m.cookie)[0] == kind]


def test_fabric_is_a_transit_switch_and_nodes_route_to_each_other(cluster):
    fabric = cluster.nodes[FABRIC]
    assert fabric.transit_gateways == [(gateway_mac(n), n) for n in (1, 2, 3)]
    routes = cluster.nodes[1].routes
    assert [(str(s), mac, port) for s, mac, port in routes] == [
        ("10.0.2.0/24", gateway_mac(2), 3), ("10.0.3.0/24", gateway_mac(3), 3)]
    assert cluster.nodes[1].switch_ports == {3}


def test_a_pod_on_node_1_reaches_a_cluster_ip_served_on_other_nodes(cluster):
    cluster.packet_in(1, 1, l4_packet("10.0.1.11", 40000, "10.96.0.10", 80,
                                      eth_src="00:00:00:01:00:11", eth_dst=gateway_mac(1)))
    (fwd,) = flows_of(cluster.sent[1], pipeline.KIND_FORWARD)
    (rev,) = flows_of(cluster.sent[1], pipeline.KIND_REVERSE)
    pod = dict(a[1:] for a in fwd.actions if a[0] == "set_field")["ipv4_dst"]
    node = int(pod.split(".")[2])
    assert ("set_field", "eth_dst", gateway_mac(node)) in fwd.actions
    assert fwd.actions[-1] == ("output", 3)                 # up to the fabric
    assert rev.match_dict["ipv4_src"] == pod and rev.actions[-1] == ("output", 1)


def test_node_port_to_another_nodes_pod_is_snated_to_the_entry_node(cluster):
    cluster.packet_in(1, 1, l4_packet("10.0.1.11", 40001, "10.0.1.1", 30080,
                                      eth_src="00:00:00:01:00:11", eth_dst=gateway_mac(1)))
    (fwd,) = flows_of(cluster.sent[1], pipeline.KIND_FORWARD)
    (rev,) = flows_of(cluster.sent[1], pipeline.KIND_REVERSE)
    sets = dict(a[1:] for a in fwd.actions if a[0] == "set_field")
    assert sets["ipv4_src"] == "10.0.1.1" and sets["tcp_src"] >= 32768
    assert rev.match_dict["ipv4_dst"] == "10.0.1.1"
    assert rev.match_dict["tcp_dst"] == sets["tcp_src"]
    rsets = dict(a[1:] for a in rev.actions if a[0] == "set_field")
    assert (rsets["ipv4_src"], rsets["tcp_src"]) == ("10.0.1.1", 30080)
    assert (rsets["ipv4_dst"], rsets["tcp_dst"]) == ("10.0.1.11", 40001)


def test_hairpin_goes_back_out_of_the_in_port_with_snat(cluster):
    cluster.add_pods("10.96.0.10/32", 80, ["10.0.1.101"])
    cluster.packet_in(1, 2, frames.arp(2, "00:00:00:01:01:01", "10.0.1.101", gateway_mac(1),
                                       "10.0.1.1"))
    # find a source port whose flow picks the pod itself
    for sport in range(41000, 41300):
        cluster.sent[1].clear()
        cluster.packet_in(1, 2, l4_packet("10.0.1.101", sport, "10.96.0.10", 80,
                                          eth_src="00:00:00:01:01:01", eth_dst=gateway_mac(1)))
        (fwd,) = flows_of(cluster.sent[1], pipeline.KIND_FORWARD)
        if ("set_field", "ipv4_dst", "10.0.1.101") in fwd.actions:
            break
    else:
        pytest.fail("no flow picked the client pod itself")
    (rev,) = flows_of(cluster.sent[1], pipeline.KIND_REVERSE)
    assert fwd.actions[-1] == rev.actions[-1] == ("output", pipeline.OFPP_IN_PORT)
    assert ("set_field", "ipv4_src", "10.0.1.1") in fwd.actions


def test_the_same_five_tuple_picks_the_same_pod_on_every_node(cluster):
    picks = set()
    for n in (1, 2, 3):
        cluster.packet_in(n, 1, l4_packet(f"10.0.9.11", 40002, "10.96.0.10", 80,
                                          eth_src="00:00:00:09:00:11", eth_dst=gateway_mac(n)))
        (fwd,) = flows_of(cluster.sent[n], pipeline.KIND_FORWARD)
        picks.add(dict(a[1:] for a in fwd.actions if a[0] == "set_field")["ipv4_dst"])
    assert len(picks) == 1


def test_ping_to_the_node_address_is_answered(cluster):
    raw = frames._l3_frame(gateway_mac(1), "00:00:00:01:00:11", ipaddress.ip_address("10.0.1.11"),
                           ipaddress.ip_address("10.0.1.1"), frames.ICMP,
                           bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"abcd")
    cluster.packet_in(1, 1, raw)
    (reply,) = [m for m in cluster.sent[1] if isinstance(m, PacketOut)]
    answer = frames.parse(reply.data)
    assert answer.icmp_type == 0 and str(answer.ip_src) == "10.0.1.1"


def test_a_fabric_link_that_goes_down_takes_its_routes_and_comes_back(cluster):
    cluster.port_status(1, 3, "s1-eth3", live=False)      # both ends see the link go
    cluster.port_status(FABRIC, 1, "f0-eth1", live=False)
    assert cluster.nodes[1].routes == [] and cluster.nodes[1].switch_ports == set()
    assert (1, 3) not in cluster.links
    assert [g for g, _ in cluster.nodes[FABRIC].transit_gateways] == [gateway_mac(2),
                                                                      gateway_mac(3)]
    cluster.sent[1].clear()
    cluster.port_status(FABRIC, 1, "f0-eth1", live=True)
    cluster.port_status(1, 3, "s1-eth3", live=True)
    (probe,) = [m for m in cluster.sent[1] if isinstance(m, PacketOut)]
    assert probe.actions == (("output", 3),)
    cluster.packet_in(FABRIC, 1, probe.data)              # it arrives at the fabric again
    assert [(str(s), port) for s, _, port in cluster.nodes[1].routes] == [
        ("10.0.2.0/24", 3), ("10.0.3.0/24", 3)]


def _node_port_syn(cluster, n, sport):
    for msgs in cluster.sent.values():
        msgs.clear()
    cluster.packet_in(n, 1, l4_packet(f"10.0.{n}.11", sport, f"10.0.{n}.1", 30080,
                                      eth_src=f"00:00:00:0{n}:00:11", eth_dst=gateway_mac(n)))
    return cluster.sent.get(n, [])


def _session_or_packet(msgs):
    return flows_of(msgs, pipeline.KIND_FORWARD) + [m for m in msgs if isinstance(m, PacketOut)]


def test_external_policy_local_keeps_node_port_clients_on_the_nodes_own_pods(cluster):
    cluster.del_vip("10.96.0.10/32", 80)
    cluster.add_vip("10.96.0.10/32", port=80, target_port=8080, node_port=30080,
                    protocol="tcp", external_policy="local")
    cluster.add_pods("10.96.0.10/32", 80, ["10.0.2.101", "10.0.3.101"])
    for sport in range(41000, 41010):          # node 2: its own pod, and no SNAT
        (fwd,) = flows_of(_node_port_syn(cluster, 2, sport), pipeline.KIND_FORWARD)
        sets = dict(a[1:] for a in fwd.actions if a[0] == "set_field")
        assert sets["ipv4_dst"] == "10.0.2.101" and "ipv4_src" not in sets
    assert not _session_or_packet(_node_port_syn(cluster, 1, 41100))   # none on 1: dropped
    vip = cluster.vip("10.96.0.10/32", 80)
    assert vip["external_policy"] == "local" and vip["counters"]["no_local_pod"] == 1
    cluster.packet_in(1, 1, l4_packet("10.0.1.11", 41200, "10.96.0.10", 80,
                                      eth_src="00:00:00:01:00:11", eth_dst=gateway_mac(1)))
    assert flows_of(cluster.sent[1], pipeline.KIND_FORWARD)   # the ClusterIP: any node's
    cluster.del_pods("10.96.0.10/32", 80, ["10.0.2.101"])
    assert not _session_or_packet(_node_port_syn(cluster, 2, 41300))   # gone from 2 too


def test_internal_policy_local_keeps_cluster_ip_clients_on_the_nodes_own_pods(cluster):
    cluster.del_vip("10.96.0.10/32", 80)
    cluster.add_vip("10.96.0.10/32", port=80, target_port=8080, node_port=30080,
                    protocol="tcp", internal_policy="local")
    cluster.add_pods("10.96.0.10/32", 80, ["10.0.2.101", "10.0.3.101"])

    def cluster_ip_syn(n, sport):
        for msgs in cluster.sent.values():
            msgs.clear()
        cluster.packet_in(n, 1, l4_packet(f"10.0.{n}.11", sport, "10.96.0.10", 80,
                                          eth_src=f"00:00:00:0{n}:00:11",
                                          eth_dst=gateway_mac(n)))
        return cluster.sent.get(n, [])
    for sport in range(42000, 42010):
        (fwd,) = flows_of(cluster_ip_syn(3, sport), pipeline.KIND_FORWARD)
        assert ("set_field", "ipv4_dst", "10.0.3.101") in fwd.actions
    assert not _session_or_packet(cluster_ip_syn(1, 42100))      # none on node 1
    assert cluster.vip("10.96.0.10/32", 80)["counters"]["no_local_pod"] == 1
    # the node port is external traffic: any node's pods, as before
    assert flows_of(_node_port_syn(cluster, 1, 42200), pipeline.KIND_FORWARD)
