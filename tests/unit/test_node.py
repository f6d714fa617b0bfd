"""Session logic as data: packet-ins in, switch programming out, no switch."""
import ipaddress
import struct

import pytest

from kp_app import frames, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.node import gateway_mac
from kp_app.pipeline import FlowAdd, FlowDelete, PacketOut
from kp_app.sessions import client_hash

GW = gateway_mac(1)
CLIENT_MAC, CLIENT_PORT = "00:00:00:00:00:01", 1
PODS = {f"10.0.0.{100 + i}": (f"00:00:00:00:01:0{i}", 2 + i) for i in (1, 2, 3)}


def l4_packet(src, sport, dst, dport, proto=frames.TCP, flags=frames.TCP_SYN,
              eth_src=CLIENT_MAC, eth_dst=GW, payload=b""):
    src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if proto == frames.TCP:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0)
    else:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return frames._l3_frame(eth_dst, eth_src, src, dst, proto, seg + payload)


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=Clock())
    proxy.sent = sent
    proxy.set_conf(node_ip="10.0.0.1", timeout=7)
    proxy.switch_connected(1)
    proxy.add_vip("10.96.0.10/32", port=80, target_port=8080, node_port=30080,
                  protocol="tcp")
    proxy.add_pods("10.96.0.10/32", 80, list(PODS))
    for address, (mac, port) in PODS.items():   # the pods answer the controller's probes
        proxy.packet_in(1, port, frames.arp(2, mac, address, GW, "10.0.0.1"))
    sent.clear()
    return proxy


def flows(msgs, kind):
    return [m for m in msgs if isinstance(m, FlowAdd)
            and pipeline.cookie_parts(m.cookie)[0] == kind]


def test_first_packet_installs_dnat_and_snat_flows_and_is_sent_on(kp):
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40000, "10.96.0.10", 80))
    (fwd,), (rev,) = flows(kp.sent, pipeline.KIND_FORWARD), flows(kp.sent, pipeline.KIND_REVERSE)
    pod = fwd.match_dict and dict(a[1:] for a in fwd.actions if a[0] == "set_field")["ipv4_dst"]
    pod_mac, pod_port = PODS[pod]
    assert fwd.match_dict == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.11",
                              "ipv4_dst": "10.96.0.10", "tcp_src": 40000, "tcp_dst": 80}
    assert fwd.actions == (("set_field", "eth_src", GW), ("set_field", "eth_dst", pod_mac),
                           ("set_field", "ipv4_dst", pod), ("set_field", "tcp_dst", 8080),
                           ("output", pod_port))
    assert rev.match_dict == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": pod,
                              "ipv4_dst": "10.0.0.11", "tcp_src": 8080, "tcp_dst": 40000}
    assert rev.actions == (("set_field", "eth_src", GW), ("set_field", "eth_dst", CLIENT_MAC),
                           ("set_field", "ipv4_src", "10.96.0.10"),
                           ("set_field", "tcp_src", 80), ("output", CLIENT_PORT))
    assert fwd.idle_timeout == rev.idle_timeout == 7 and fwd.notify_removed
    out = [m for m in kp.sent if isinstance(m, PacketOut)]
    assert len(out) == 1 and out[0].actions == fwd.actions and out[0].in_port == CLIENT_PORT
    assert kp.sessions()["count"] == 1


def test_the_same_flow_keeps_its_pod_after_its_flow_expires(kp):
    packet = l4_packet("10.0.0.11", 40001, "10.96.0.10", 80)
    kp.packet_in(1, CLIENT_PORT, packet)
    (fwd,) = flows(kp.sent, pipeline.KIND_FORWARD)
    kp.flow_removed(1, fwd.cookie, fwd.match_dict, 5, 500)   # reverse flow still alive
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, packet)
    (again,) = flows(kp.sent, pipeline.KIND_FORWARD)
    assert again.actions == fwd.actions and not flows(kp.sent, pipeline.KIND_REVERSE)
    assert kp.vip("10.96.0.10/32")["counters"]["new_sessions"] == 1


def test_flows_spread_over_pods_in_proportion(kp):
    for sport in range(20000, 20600):
        kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    counts = {p["address"]: p["new_sessions"] for p in kp.vip("10.96.0.10/32")["pods"]}
    assert sum(counts.values()) == 600
    assert all(150 <= n <= 250 for n in counts.values()), counts


def test_session_ends_when_both_flows_are_removed_and_counts_stay(kp):
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40002, "10.96.0.10", 80))
    (fwd,), (rev,) = flows(kp.sent, pipeline.KIND_FORWARD), flows(kp.sent, pipeline.KIND_REVERSE)
    kp.flow_removed(1, fwd.cookie, fwd.match_dict, 10, 1000)
    assert kp.sessions()["count"] == 1
    kp.flow_removed(1, rev.cookie, rev.match_dict, 8, 800)
    assert kp.sessions()["count"] == 0
    counters = kp.vip("10.96.0.10/32")["counters"]
    assert (counters["packets"], counters["bytes"], counters["active_sessions"]) == (18, 1800, 0)


def test_node_port_session_answers_from_the_node_address(kp):
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40003, "10.0.0.1", 30080))
    (fwd,), (rev,) = flows(kp.sent, pipeline.KIND_FORWARD), flows(kp.sent, pipeline.KIND_REVERSE)
    assert ("set_field", "tcp_dst", 8080) in fwd.actions
    assert ("set_field", "ipv4_src", "10.0.0.1") in rev.actions
    assert ("set_field", "tcp_src", 30080) in rev.actions


def test_vip_without_pods_refuses_tcp_with_reset_and_udp_with_icmp(kp):
    kp.add_vip("10.96.0.20/32", port=53, protocol="any")
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40004, "10.96.0.20", 53))
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40005, "10.96.0.20", 53,
                                           proto=frames.UDP, payload=b"q"))
    rst, icmp = [frames.parse(m.data) for m in kp.sent if isinstance(m, PacketOut)]
    assert rst.ip_src == ipaddress.ip_address("10.96.0.20") and rst.tcp_flags & frames.TCP_RST
    assert (rst.src_port, rst.dst_port, rst.tcp_ack) == (53, 40004, 1001)
    assert icmp.ip_proto == frames.ICMP and icmp.icmp_type == 3
    assert kp.vip("10.96.0.20/32")["counters"]["no_pod"] == 2
    assert not flows(kp.sent, pipeline.KIND_FORWARD)


def test_unknown_pod_mac_is_resolved_then_the_held_packet_goes_on(kp):
    kp.add_vip("10.96.0.30/32", port=80, target_port=80, protocol="tcp")
    kp.add_pods("10.96.0.30/32", 80, ["10.0.0.200"])
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40006, "10.96.0.30", 80))
    (probe,) = [m for m in kp.sent if isinstance(m, PacketOut)]
    assert frames.parse(probe.data).arp_tpa == ipaddress.ip_address("10.0.0.200")
    kp.sent.clear()
    kp.packet_in(1, 9, frames.arp(2, "00:00:00:00:02:00", "10.0.0.200", GW, "10.0.0.1"))
    (fwd,) = flows(kp.sent, pipeline.KIND_FORWARD)
    assert ("output", 9) in fwd.actions


def test_flush_deletes_the_pods_flows_and_drain_keeps_them(kp):
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40007, "10.96.0.10", 80))
    (fwd,) = flows(kp.sent, pipeline.KIND_FORWARD)
    pod = dict(a[1:] for a in fwd.actions if a[0] == "set_field")["ipv4_dst"]
    kp.sent.clear()
    kp.del_pods("10.96.0.10/32", 80, [pod])            # drain
    assert not [m for m in kp.sent if isinstance(m, FlowDelete)]
    assert kp.sessions()["count"] == 1
    states = {p["address"]: p["state"] for p in kp.vip("10.96.0.10/32")["pods"]}
    assert states[pod] == "draining"
    kp.add_pods("10.96.0.10/32", 80, [pod])
    kp.sent.clear()
    kp.del_pods("10.96.0.10/32", 80, [pod], flush=True)
    pod_delete, reply_delete = [m for m in kp.sent if isinstance(m, FlowDelete)]
    assert pod_delete.cookie_mask == pipeline.MASK_POD
    assert pipeline.cookie_parts(pod_delete.cookie)[1] == pipeline.cookie_parts(fwd.cookie)[1]
    assert reply_delete == pipeline.reply_delete((ipaddress.ip_address(pod), 8080, 6))
    assert kp.sessions()["count"] == 0


def test_deleting_a_vip_is_one_cookie_masked_delete_and_one_per_pods_replies(kp):
    kp.sent.clear()
    kp.del_vip("10.96.0.10/32")
    assert kp.sent[0] == FlowDelete(pipeline.cookie(0, 1), pipeline.MASK_VIP)
    replies = [dict(m.match)["ipv4_src"] for m in kp.sent[1:]]
    assert sorted(replies) == sorted(PODS)
    assert all(m.cookie == pipeline.cookie(pipeline.KIND_REPLY_MISS) for m in kp.sent[1:])


def test_node_answers_arp_for_its_address_and_vips_and_floods_others(kp):
    for target, answered in (("10.0.0.1", True), ("10.96.0.10", True), ("10.0.0.12", False)):
        kp.sent.clear()
        kp.packet_in(1, CLIENT_PORT, frames.arp_request(CLIENT_MAC, "10.0.0.11",
                                                        ipaddress.ip_address(target)))
        (out,) = kp.sent[-1:]
        reply = frames.parse(out.data)
        if answered:
            assert reply.arp_op == 2 and reply.arp_sha == GW and str(reply.arp_spa) == target
            assert out.actions == (("output", CLIENT_PORT),)
        else:
            assert out.actions == (("output", pipeline.OFPP_FLOOD),)


def test_reconnect_rebuilds_everything_from_the_model(kp):
    kp.switch_connected(1)
    kinds = [pipeline.cookie_parts(m.cookie)[0] for m in kp.sent if isinstance(m, FlowAdd)]
    assert isinstance(kp.sent[0], FlowDelete)
    assert kinds.count(pipeline.KIND_VIP) == 1 and kinds.count(pipeline.KIND_NODE_PORT) == 1
    # Per pod: to SESSIONS (table 0); there, to the controller or routed on.
    replies = [m for m in kp.sent if isinstance(m, FlowAdd)
               and pipeline.cookie_parts(m.cookie)[0] == pipeline.KIND_REPLY_MISS]
    assert sorted(m.table for m in replies) == [pipeline.SERVICES] * 3 + [pipeline.SESSIONS] * 6


def test_session_flows_have_a_table_only_service_traffic_reaches(kp):
    kp.switch_connected(1)
    classifiers = [m for m in kp.sent if isinstance(m, FlowAdd) and m.goto == pipeline.SESSIONS]
    assert classifiers and all(m.table == pipeline.SERVICES for m in classifiers)
    assert {pipeline.cookie_parts(m.cookie)[0] for m in classifiers} == {
        pipeline.KIND_VIP, pipeline.KIND_NODE_PORT, pipeline.KIND_REPLY_MISS}
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40100, "10.96.0.10", 80))
    sessions = flows(kp.sent, pipeline.KIND_FORWARD) + flows(kp.sent, pipeline.KIND_REVERSE)
    assert len(sessions) == 2 and {m.table for m in sessions} == {pipeline.SESSIONS}


def test_reply_flows_two_vips_share_go_with_the_last_of_them(kp):
    kp.add_vip("10.96.0.10/32", port=8080, target_port=8080, protocol="tcp")
    kp.add_pods("10.96.0.10/32", 8080, list(PODS))
    kp.sent.clear()
    kp.del_vip("10.96.0.10/32", 8080)      # same pods, same target port as the port-80 VIP
    assert [type(m) for m in kp.sent] == [FlowDelete]
    kp.del_pods("10.96.0.10/32", 80, ["10.0.0.101"])
    assert [dict(m.match).get("ipv4_src") for m in kp.sent[1:]] == [None, "10.0.0.101"]


def test_set_interface_nat4_limits_where_replies_are_unnatted(kp):
    kp.nodes[1].port_names = {1: "s1-eth1", 3: "s1-eth3", 4: "s1-eth4", 5: "s1-eth5"}
    kp.set_interface("nat4", "s1-eth3")                # only pod 10.0.0.101's port
    for sport in range(42000, 42060):
        kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    reverse = flows(kp.sent, pipeline.KIND_REVERSE)
    by_port = {f.match_dict["in_port"]: f for f in reverse}
    assert set(by_port) == {3, 4, 5}
    assert ("set_field", "ipv4_src", "10.96.0.10") in by_port[3].actions
    assert not [a for a in by_port[4].actions if a[1] in ("ipv4_src", "tcp_src")]


def test_a_pod_answering_a_direct_request_is_not_natted(kp):
    # The client talks to 10.0.0.101:8080 itself, not to the service: no session.
    kp.packet_in(1, CLIENT_PORT, frames.arp(2, CLIENT_MAC, "10.0.0.11", GW, "10.0.0.1"))
    kp.sent.clear()
    pod_mac, pod_port = PODS["10.0.0.101"]
    kp.packet_in(1, pod_port, l4_packet("10.0.0.101", 8080, "10.0.0.11", 40100,
                                        flags=frames.TCP_ACK | frames.TCP_SYN,
                                        eth_src=pod_mac, eth_dst=CLIENT_MAC))
    (passthrough,) = [m for m in kp.sent if isinstance(m, FlowAdd)]
    (out,) = [m for m in kp.sent if isinstance(m, PacketOut)]
    assert out.actions == passthrough.actions == (("output", CLIENT_PORT),)
    assert passthrough.match_dict["ipv4_src"] == "10.0.0.101"
    assert kp.sessions()["count"] == 0


def _open(kp, sport):
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    return list(kp.sent)


def _reply_from(pod, sport, flags=frames.TCP_SYN | frames.TCP_ACK):
    mac, port = PODS[pod]
    return port, l4_packet(pod, 8080, "10.0.0.11", sport, flags=flags, eth_src=mac, eth_dst=GW)


def test_sessions_beyond_the_table_are_relayed_both_ways_by_the_controller(kp):
    kp.set_conf(buckets=1)                       # room for 4 tracked sessions
    for sport in range(41000, 41004):
        assert flows(_open(kp, sport), pipeline.KIND_FORWARD)
    sent = _open(kp, 41004)
    (out,) = sent                                # no flow: the controller sends it on
    assert isinstance(out, PacketOut) and out.in_port == CLIENT_PORT
    pod = dict(a[1:] for a in out.actions if a[0] == "set_field")["ipv4_dst"]
    assert ("set_field", "tcp_dst", 8080) in out.actions

    kp.sent.clear()                              # the pod's reply leaves as the service
    kp.packet_in(1, *_reply_from(pod, 41004))
    (back,) = kp.sent
    assert isinstance(back, PacketOut)
    assert back.actions == (("set_field", "eth_src", GW), ("set_field", "eth_dst", CLIENT_MAC),
                            ("set_field", "ipv4_src", "10.96.0.10"),
                            ("set_field", "tcp_src", 80), ("output", CLIENT_PORT))
    counters = kp.vip("10.96.0.10/32")["counters"]
    assert (counters["untracked"], counters["table_full"], counters["new_sessions"]) == (1, 1, 5)
    listed = kp.sessions()["sessions"]
    assert sorted(s["tracked"] for s in listed) == [False, True, True, True, True]
    assert [s["packets"] for s in listed if not s["tracked"]] == [2]


def test_an_untracked_session_takes_a_place_that_frees_up(kp):
    kp.set_conf(buckets=1)
    first = _open(kp, 42000)
    for sport in range(42001, 42004):
        _open(kp, sport)
    (out,) = _open(kp, 42004)
    for flow in first:
        if isinstance(flow, FlowAdd):
            kp.flow_removed(1, flow.cookie, flow.match_dict, 1, 60)
    sent = _open(kp, 42004)                      # its next packet: flows go in now
    (fwd,), (rev,) = flows(sent, pipeline.KIND_FORWARD), flows(sent, pipeline.KIND_REVERSE)
    assert fwd.match_dict["tcp_src"] == 42004
    assert [p.actions for p in sent if isinstance(p, PacketOut)] == [out.actions]
    assert all(s["tracked"] for s in kp.sessions()["sessions"])


def test_untracked_sessions_end_when_idle_and_beyond_them_new_flows_are_dropped(kp):
    kp.set_conf(buckets=1)                       # 4 tracked + 4 untracked
    for sport in range(43000, 43008):
        assert _open(kp, sport)
    assert _open(kp, 43008) == []                # dropped, as conntrack does when full
    counters = kp.vip("10.96.0.10/32")["counters"]
    assert (counters["new_sessions"], counters["untracked"], counters["table_full"]) == (8, 4, 5)
    kp._clock.now += 7                           # the conf timeout
    assert kp.sessions()["count"] == 4
    counters = kp.vip("10.96.0.10/32")["counters"]
    assert counters["packets"] == 4 and counters["active_sessions"] == 4
    assert flows(_open(kp, 43009), pipeline.KIND_FORWARD) == []     # untracked again
    assert kp.vip("10.96.0.10/32")["counters"]["untracked"] == 5


def test_pods_show_their_share_of_the_table_and_a_draining_pod_none(kp):
    shares = {p["address"]: p["table_entries"] for p in kp.vip("10.96.0.10/32")["pods"]}
    assert sorted(shares.values()) == [341, 341, 342]           # new_len 1024 over 3
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 44000, "10.96.0.10", 80))
    (fwd,) = flows(kp.sent, pipeline.KIND_FORWARD)
    pod = dict(a[1:] for a in fwd.actions if a[0] == "set_field")["ipv4_dst"]
    kp.del_pods("10.96.0.10/32", 80, [pod])                    # drains: its session lives on
    shares = {p["address"]: (p["state"], p["table_entries"])
              for p in kp.vip("10.96.0.10/32")["pods"]}
    assert shares.pop(pod) == ("draining", 0)
    assert sorted(shares.values()) == [("active", 512), ("active", 512)]


def test_a_port_that_comes_is_named_probed_and_can_be_a_nat_interface(kp):
    kp.packet_in(1, CLIENT_PORT, frames.arp(2, CLIENT_MAC, "10.0.0.11", GW, "10.0.0.1"))
    kp.set_interface("nat4", "s1-eth9")
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.109"])
    kp.sent.clear()
    kp.port_status(1, 9, "s1-eth9", live=True)           # a pod plugged in after connect
    (probe,) = [m for m in kp.sent if isinstance(m, PacketOut)]
    assert probe.actions == (("output", 9),) and frames.is_link_probe(probe.data)
    kp.packet_in(1, 9, frames.arp(2, "00:00:00:00:01:09", "10.0.0.109", GW, "10.0.0.1"))
    for sport in range(43000, 43040):
        kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    reverse = [f for f in flows(kp.sent, pipeline.KIND_REVERSE) if f.match_dict["in_port"] == 9]
    assert reverse and all(("set_field", "ipv4_src", "10.96.0.10") in f.actions  # un-NATed
                           for f in reverse)


def test_a_port_that_goes_down_takes_its_hosts_and_their_sessions(kp):
    kp.packet_in(1, CLIENT_PORT, frames.arp(2, CLIENT_MAC, "10.0.0.11", GW, "10.0.0.1"))
    for sport in range(44000, 44012):
        kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    on_port = {p: [s for s in kp.nodes[1].sessions if str(s.pod) == p] for p in PODS}
    mac, port = PODS["10.0.0.101"]
    assert on_port["10.0.0.101"] and kp.sessions()["count"] == 12
    kp.sent.clear()
    kp.port_status(1, port, "s1-eth3", live=False)
    assert kp.sent[0] == FlowDelete(pipeline.cookie(pipeline.KIND_HOST),
                                    pipeline.MASK_TAG | pipeline.MASK_KIND, out_port=port)
    assert kp.sent[1:] == [d for s in on_port["10.0.0.101"] for d in pipeline.session_deletes(s)]
    assert kp.sessions()["count"] == 12 - len(on_port["10.0.0.101"])
    assert ipaddress.ip_address("10.0.0.101") not in kp.nodes[1].hosts
    # The pod turns up behind another port: learned there, and new sessions go there.
    kp.port_status(1, port, "s1-eth3", live=True)
    kp.packet_in(1, 9, frames.arp(2, mac, "10.0.0.101", GW, "10.0.0.1"))
    kp.sent.clear()
    for sport in range(44000, 44012):
        kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", sport, "10.96.0.10", 80))
    moved = [f for f in flows(kp.sent, pipeline.KIND_FORWARD)
             if ("set_field", "ipv4_dst", "10.0.0.101") in f.actions]
    assert len(moved) == len(on_port["10.0.0.101"])
    assert all(f.actions[-1] == ("output", 9) for f in moved)
    kp.sent.clear()
    kp.port_status(1, CLIENT_PORT, "s1-eth1", live=False, deleted=True)  # the client's
    assert kp.sessions()["count"] == 0


def _pods_of_new_sessions(kp, client, sports, prefix="10.96.0.20/32"):
    before = {s["client"] for s in kp.sessions(limit=10000)["sessions"]}
    for sport in sports:
        kp.packet_in(1, CLIENT_PORT, l4_packet(client, sport, prefix.split("/")[0], 80))
    return {s["client"]: s["pod"].split(":")[0]
            for s in kp.sessions(limit=10000)["sessions"] if s["client"] not in before}


def test_client_ip_affinity_keeps_a_clients_new_sessions_on_one_pod(kp):
    kp.add_vip("10.96.0.20/32", port=80, target_port=8080, protocol="tcp",
               affinity_timeout=30)
    kp.add_pods("10.96.0.20/32", 80, list(PODS)[:2])
    clients = [f"10.0.0.{i}" for i in range(11, 31)]
    firsts = {c: set(_pods_of_new_sessions(kp, c, range(30000, 30008)).values())
              for c in clients}
    assert all(len(pods) == 1 for pods in firsts.values()), firsts     # one pod per client
    assert len({p for pods in firsts.values() for p in pods}) == 2        # clients spread
    # A pod joins: clients stay where they were (the table alone would move a third).
    kp.add_pods("10.96.0.20/32", 80, [list(PODS)[2]])
    kp._clock.now += 20
    for c in clients:
        assert set(_pods_of_new_sessions(kp, c, [31000]).values()) == firsts[c]


def test_affinity_ends_after_its_timeout_or_with_its_pod(kp):
    kp.add_vip("10.96.0.20/32", port=80, target_port=8080, protocol="tcp",
               affinity_timeout=30)
    kp.add_pods("10.96.0.20/32", 80, list(PODS))
    vip = kp.model.find_vip("10.96.0.20/32", 80)
    client = ipaddress.ip_address("10.0.0.11")
    by_client = str(vip.table.pick(client_hash(client)))
    (first,) = set(_pods_of_new_sessions(kp, "10.0.0.11", [32000]).values())
    assert first == by_client                    # every node starts a client on one pod
    kp.del_pods("10.96.0.20/32", 80, [first])
    (second,) = set(_pods_of_new_sessions(kp, "10.0.0.11", [32001, 32002]).values())
    assert second != first
    kp.add_pods("10.96.0.20/32", 80, [first])   # back, but the client stays on `second`
    kp._clock.now += 29
    assert set(_pods_of_new_sessions(kp, "10.0.0.11", [32003]).values()) == {second}
    kp._clock.now += 31                              # 31 s after its last new session
    assert set(_pods_of_new_sessions(kp, "10.0.0.11", [32004]).values()) == {by_client}


def test_source_ranges_limit_who_reaches_the_external_ips_only(kp):
    kp.add_vip("10.96.0.30/32", port=80, target_port=8080, protocol="tcp", node_port=30090,
               external_ips=["192.0.2.30"], source_ranges=["10.0.0.0/28"])
    kp.add_pods("10.96.0.30/32", 80, list(PODS)[:1])

    def opened(client, dst, dport):
        kp.sent.clear()
        kp.packet_in(1, CLIENT_PORT, l4_packet(client, 41000, dst, dport))
        return bool(flows(kp.sent, pipeline.KIND_FORWARD))
    assert opened("10.0.0.11", "192.0.2.30", 80)          # inside 10.0.0.0/28
    assert not opened("10.0.0.21", "192.0.2.30", 80)      # outside: dropped
    assert opened("10.0.0.21", "10.96.0.30", 80)          # the ClusterIP: anyone
    assert opened("10.0.0.22", "10.0.0.1", 30090)         # the node port: anyone
    vip = kp.vip("10.96.0.30/32", 80)
    assert vip["source_ranges"] == ["10.0.0.0/28"] and vip["counters"]["filtered"] == 1


def test_udp_sessions_take_the_udp_timeout(kp):
    """conntrack.udpTimeout (ku conf udp_timeout): the idle timeout of UDP sessions' flows;
    TCP's stays `timeout`."""
    kp.add_vip("10.96.0.53/32", port=53, target_port=53, protocol="udp")
    kp.add_pods("10.96.0.53/32", 53, list(PODS))
    kp.set_conf(udp_timeout=3)
    kp.sent.clear()
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40001, "10.96.0.53", 53,
                                           proto=frames.UDP))
    kp.packet_in(1, CLIENT_PORT, l4_packet("10.0.0.11", 40002, "10.96.0.10", 80))
    forward = flows(kp.sent, pipeline.KIND_FORWARD)
    assert sorted((f.match_dict["ip_proto"], f.idle_timeout) for f in forward) == [
        (6, 7), (17, 3)]
