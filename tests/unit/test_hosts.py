"""Host bindings (kp_app.hosts) and what the node does with claims (kp_app.node):
addresses and MACs stay on the port they were learned on, kp's own addresses are
never learned nor passed on, the tables are bounded."""
import ipaddress

import pytest

from kp_app import frames, pipeline
from kp_app.hosts import HOST_IDLE_SECONDS, HostTable
from kp_app.kubeproxy import KubeProxy
from kp_app.node import MODE_LB, gateway_mac
from kp_app.pipeline import FlowAdd, FlowDelete, PacketOut
from test_node import CLIENT_MAC, CLIENT_PORT, PODS, Clock

GW = gateway_mac(1)
ATTACKER_MAC, ATTACKER_PORT = "00:00:00:00:0a:0a", 9
POD, (POD_MAC, POD_PORT) = next(iter(PODS.items()))
A = ipaddress.ip_address


def test_an_address_stays_bound_to_its_port_until_idle_or_released():
    t = HostTable()
    assert t.learn_address(A("10.0.0.5"), "m1", 1, 0.0).changed
    assert t.learn_address(A("10.0.0.5"), "m2", 2, 10.0).refused
    assert t.get(A("10.0.0.5")).port == 1 and t.refused == 1
    assert t.learn_address(A("10.0.0.5"), "m3", 1, 20.0).changed    # same port: a new MAC
    moved = t.learn_address(A("10.0.0.5"), "m2", 2, 20.0 + HOST_IDLE_SECONDS)
    assert moved.changed and t.get(A("10.0.0.5")).port == 2
    assert t.forget_port(2) == ([], [A("10.0.0.5")])
    assert t.learn_address(A("10.0.0.5"), "m1", 1, 21.0 + HOST_IDLE_SECONDS).changed


def test_a_mac_stays_bound_to_its_port():
    t = HostTable()
    assert t.learn_mac("m1", 1, 0.0).changed
    assert t.learn_mac("m1", 2, 1.0).refused and t.port_of("m1") == 1
    assert not t.learn_mac("m1", 1, 2.0).changed


def test_a_full_table_pushes_out_the_idle_then_the_unused_never_what_is_in_use():
    t = HostTable(limit=3)
    for i in range(3):
        t.learn_address(A(f"10.0.0.{i}"), "m", 1, float(i))
    # None idle: the least recently seen entry not in use goes.
    in_use = {A("10.0.0.0")}.__contains__
    learned = t.learn_address(A("10.0.0.9"), "m", 1, 5.0, in_use)
    assert [k for k, _ in learned.evicted] == [A("10.0.0.1")]
    # Every entry in use and none idle: the new one is refused, nothing goes.
    learned = t.learn_address(A("10.0.0.10"), "m", 1, 6.0, lambda a: True)
    assert learned.refused and not learned.evicted and len(t) == 3
    # An idle one goes first, in use or not.
    learned = t.learn_address(A("10.0.0.11"), "m", 1, 5.0 + HOST_IDLE_SECONDS,
                              lambda a: True)
    assert [k for k, _ in learned.evicted] == [A("10.0.0.0")]


def test_hosts_in_use_are_asked_again_before_their_binding_goes_idle():
    t = HostTable()
    t.learn_address(A("10.0.0.5"), "m", 4, 0.0)
    t.learn_address(A("10.0.0.6"), "m", 5, 0.0)
    in_use = {A("10.0.0.5")}.__contains__
    assert t.stale(1.0, in_use) == []
    assert [(a, h.port) for a, h in t.stale(HOST_IDLE_SECONDS / 2, in_use)] == [
        (A("10.0.0.5"), 4)]
    assert t.stale(HOST_IDLE_SECONDS, in_use) == []     # idle: released, asked no more


@pytest.fixture(params=["packet-in", "lb"])
def kp(request):
    sent = []
    clock = Clock()
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=clock)
    proxy.sent, proxy.clock = sent, clock
    proxy.set_conf(node_ip="10.0.0.1/24", node_ip6="fd00::1/64")
    proxy.switch_connected(1, mode=request.param)
    proxy.add_vip("10.96.0.10/32", port=80, target_port=8080, protocol="tcp")
    proxy.add_vip("fd00:96::10/128", port=80, target_port=8080, protocol="tcp")
    proxy.add_pods("10.96.0.10/32", 80, list(PODS))
    for address, (mac, port) in PODS.items():
        proxy.packet_in(1, port, frames.arp(2, mac, address, GW, "10.0.0.1"))
    sent.clear()
    return proxy


def host_routes(msgs, address):
    return [m for m in msgs if isinstance(m, FlowAdd) and m.priority == pipeline.PRIO_HOST_ROUTE
            and dict(m.match).get("ipv4_dst", dict(m.match).get("ipv6_dst")) == address]


def test_a_gratuitous_arp_for_a_pods_address_from_another_port_is_refused(kp):
    grat = frames.arp(2, ATTACKER_MAC, POD, frames.BROADCAST, POD)
    kp.packet_in(1, ATTACKER_PORT, grat)
    assert host_routes(kp.sent, POD) == []
    assert not [m for m in kp.sent if isinstance(m, PacketOut)]    # not passed on
    node = kp.nodes[1]
    assert node.hosts.get(A(POD)).port == POD_PORT and node.claims_refused == 1
    # The pod's traffic through the VIP still goes to the pod's port.
    assert node.resolve(A(POD)) == (POD_MAC, POD_PORT)
    # Idle for HOST_IDLE_SECONDS, the binding is released: a host that moved is taken.
    kp.clock.now += HOST_IDLE_SECONDS
    kp.packet_in(1, ATTACKER_PORT, grat)
    assert node.hosts.get(A(POD)).port == ATTACKER_PORT


def test_a_port_that_goes_down_releases_its_addresses(kp):
    kp.port_status(1, POD_PORT, "s1-eth3", live=False)
    kp.packet_in(1, ATTACKER_PORT, frames.arp(2, ATTACKER_MAC, POD, frames.BROADCAST, POD))
    assert kp.nodes[1].hosts.get(A(POD)).port == ATTACKER_PORT


@pytest.mark.parametrize("claimed", ["10.0.0.1", "10.96.0.10"])
def test_arp_claiming_the_nodes_or_a_vips_address_is_never_learned_nor_passed_on(kp, claimed):
    for op in (1, 2):
        kp.packet_in(1, ATTACKER_PORT, frames.arp(op, ATTACKER_MAC, claimed,
                                                  frames.BROADCAST, claimed))
    assert host_routes(kp.sent, claimed) == []
    assert not [m for m in kp.sent if isinstance(m, PacketOut)]
    assert kp.nodes[1].claims_refused == 2


@pytest.mark.parametrize("claimed", ["fd00::1", "fd00:96::10"])
def test_an_unsolicited_na_for_the_nodes_or_a_vips_address_is_refused(kp, claimed):
    target = A(claimed)
    solicit = frames.parse(frames.neighbor_solicit(CLIENT_MAC, None, target))
    advert = frames.neighbor_advert(solicit, ATTACKER_MAC)      # "target is at ATTACKER"
    kp.packet_in(1, ATTACKER_PORT, advert)
    assert host_routes(kp.sent, claimed) == []
    assert not [m for m in kp.sent if isinstance(m, PacketOut)]
    assert kp.nodes[1].claims_refused == 1


def test_a_request_for_a_vip_is_still_answered(kp):
    kp.packet_in(1, CLIENT_PORT, frames.arp(1, CLIENT_MAC, "10.0.0.11",
                                            "00:00:00:00:00:00", "10.96.0.10",
                                            eth_dst=frames.BROADCAST))
    (out,) = [m for m in kp.sent if isinstance(m, PacketOut)]
    reply = frames.parse(out.data)
    assert reply.arp_op == 2 and str(reply.arp_spa) == "10.96.0.10" and reply.arp_sha == GW


def test_a_switch_that_forwards_neighbours_sends_claims_of_kps_addresses_only_up():
    sent = []
    kp = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=Clock())
    kp.set_conf(node_ip="10.0.0.1/24", node_ip6="fd00::1/64")
    kp.switch_connected(1, mode=MODE_LB)
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080, protocol="tcp")
    kp.add_vip("10.96.0.10/32", port=443, target_port=8443, protocol="tcp")
    guards = {m.match: m for m in sent if isinstance(m, FlowAdd)
              and m.priority == pipeline.PRIO_NEIGHBOUR_GUARD}
    matches = [dict(m) for m in guards]
    assert {"eth_type": 0x0806, "arp_spa": "10.0.0.1"} in matches
    assert {"eth_type": 0x0806, "arp_spa": "10.96.0.10"} in matches
    assert {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136,
            "ipv6_nd_target": "fd00::1"} in matches
    assert all(f.actions == (("output", pipeline.OFPP_CONTROLLER),) and not f.goto
               for f in guards.values())
    # The address's guard goes with the last VIP on it.
    sent.clear()
    kp.del_vip("10.96.0.10/32", 443)
    assert not [m for m in sent if getattr(m, "priority", None) == pipeline.PRIO_NEIGHBOUR_GUARD]
    kp.del_vip("10.96.0.10/32", 80)
    (gone,) = [m for m in sent if getattr(m, "priority", None) == pipeline.PRIO_NEIGHBOUR_GUARD]
    assert dict(gone.match) == {"eth_type": 0x0806, "arp_spa": "10.96.0.10"}


def test_where_the_switch_forwards_arp_a_hosts_claims_pass_only_from_its_port():
    sent = []
    clock = Clock()
    kp = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=clock)
    kp.set_conf(node_ip="10.0.0.1/24")
    kp.switch_connected(1, mode=MODE_LB)
    kp.packet_in(1, POD_PORT, frames.arp(2, POD_MAC, POD, GW, "10.0.0.1"))
    guards = [m for m in sent if isinstance(m, FlowAdd) and m.priority in (
        pipeline.PRIO_NEIGHBOUR_GUARD, pipeline.PRIO_NEIGHBOUR_GUARD + 1)
        and dict(m.match).get("arp_spa") == POD]
    assert {(dict(m.match).get("in_port"), m.actions, m.goto) for m in guards} == {
        (None, (("output", pipeline.OFPP_CONTROLLER),), None),
        (POD_PORT, (("output", pipeline.OFPP_CONTROLLER),), pipeline.FORWARDING)}
    # Moved (once idle): the old port's pass goes, the new one's comes.
    sent.clear()
    clock.now += HOST_IDLE_SECONDS
    kp.packet_in(1, ATTACKER_PORT, frames.arp(2, ATTACKER_MAC, POD, GW, "10.0.0.1"))
    deleted = [dict(m.match).get("in_port") for m in sent if isinstance(m, FlowDelete)
               and m.priority == pipeline.PRIO_NEIGHBOUR_GUARD + 1]
    added = [dict(m.match).get("in_port") for m in sent if isinstance(m, FlowAdd)
             and m.priority == pipeline.PRIO_NEIGHBOUR_GUARD + 1]
    assert deleted == [POD_PORT] and added == [ATTACKER_PORT]
    # Its port gone, its guards go with it.
    sent.clear()
    kp.port_status(1, ATTACKER_PORT, "s1-eth9", live=False)
    assert {dict(m.match).get("in_port") for m in sent if isinstance(m, FlowDelete)
            and m.priority is not None and m.priority >= pipeline.PRIO_NEIGHBOUR_GUARD} == {
        None, ATTACKER_PORT}


def test_an_entry_seen_again_is_the_last_to_go():
    t = HostTable(limit=2)
    t.learn_address(A("10.0.0.1"), "m", 1, 0.0)
    t.learn_address(A("10.0.0.2"), "m", 1, 1.0)
    t.learn_address(A("10.0.0.1"), "m", 1, 2.0)         # seen again
    learned = t.learn_address(A("10.0.0.3"), "m", 1, 3.0)
    assert [k for k, _ in learned.evicted] == [A("10.0.0.2")]
