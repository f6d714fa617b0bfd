"""VIPs compiled for kp-switch ("lb" mode: the switch makes the sessions in its data path
from the VIP tables kp_app sends it): the programming as data, with no switch. The wire
encoding of these messages is in tests/unit/test_ofmsg_lb.py."""
import ipaddress
import struct
import types

import pytest

from kp_app import ct_pipeline, lb_pipeline, ofmsg, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.node import MODE_LB, MODES
from kp_app.pipeline import (CONNTRACK, LB, SERVICES, SESSIONS, ConntrackFlush, FlowAdd,
                             FlowDelete, LbConf, LbFlush, LbVip, LbVipDelete,
                             SetCacheBuckets)
from kp_app.ryu_shim import session_mode
from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID
from kp_proto.session_hash import session_hash

VIP = "10.96.0.10/32"
PODS = ["10.0.0.101", "10.0.0.102", "10.0.0.103"]


@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=lambda: 100.0)
    proxy.sent = sent
    proxy.set_conf(node_ip="10.0.0.1/24", timeout=9)
    proxy.switch_connected(1, mode=MODE_LB)
    proxy.add_vip(VIP, port=80, target_port=8080, protocol="tcp")
    proxy.add_pods(VIP, 80, PODS)
    return proxy


def adds(msgs, table=None, kind=None):
    return [m for m in msgs if isinstance(m, FlowAdd) and (table is None or m.table == table)
            and (kind is None or pipeline.cookie_parts(m.cookie)[0] == kind)]


def of_type(msgs, kind):
    return [m for m in msgs if isinstance(m, kind)]


def to_lb(msgs, vip):
    return [m for m in adds(msgs, SERVICES, pipeline.KIND_VIP)
            if m.actions == ((lb_pipeline.KP_LB, vip.id),)]


def test_a_compiled_vip_ends_in_kp_lb_after_its_table():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs))
    proxy.set_conf(node_ip="10.0.0.1/24")
    proxy.add_vip(VIP, port=80, target_port=8080, protocol="tcp")
    proxy.add_pods(VIP, 80, PODS)
    proxy.switch_connected(1, mode=MODE_LB)
    vip = proxy.model.find_vip(VIP, 80)
    (classifier,) = to_lb(sent, vip)
    assert classifier.goto is None and classifier.match_dict["ipv4_dst"] == "10.96.0.10"
    (table,) = of_type(sent, LbVip)
    assert table == LbVip(vip.id, 4, vip.table.slots,
                          tuple((p, 8080) for p in PODS), 0)
    # The switch must know the VIP before a flow sends packets to it. A pod's request
    # to its own VIP is the switch's too (it rewrites the source: lb_conf's hairpin
    # address), and the switch translates its sessions' replies: no hairpin flow, no
    # reply flow, one flow for the VIP.
    assert sent.index(table) < sent.index(classifier)
    assert [m for m in adds(sent) if m.cookie == classifier.cookie] == [classifier]
    assert not adds(sent, kind=pipeline.KIND_REPLY_MISS)
    # No table of ct mode's, no conntrack, and replies meet no conntrack.
    assert not adds(sent, CONNTRACK) and not adds(sent, LB)
    assert not [m for m in adds(sent) if pipeline.TO_CONNTRACK in m.actions]
    # ARP and ND go on without the controller, as in ct mode.
    arp = [m for m in adds(sent, SERVICES) if m.match_dict == {"eth_type": 0x0806}]
    assert arp and arp[0].goto == pipeline.FORWARDING


def test_an_sctp_vip_is_compiled_for_kp_switch(kp):
    """kp-switch makes SCTP sessions itself (an INIT starts one): kp_lb after a
    classifier on SCTP's port field."""
    kp.sent.clear()
    kp.add_vip("10.96.0.40/32", port=38412, target_port=36412, protocol="sctp")
    kp.add_pods("10.96.0.40/32", 38412, PODS)
    vip = kp.model.find_vip("10.96.0.40/32", 38412)
    (classifier,) = to_lb(kp.sent, vip)
    assert classifier.match_dict["ip_proto"] == 132
    assert classifier.match_dict["sctp_dst"] == 38412
    (table,) = of_type(kp.sent, LbVip)
    assert table.pods == tuple((p, 36412) for p in PODS)


def test_a_vip_whose_first_pods_come_later_gets_its_table_before_kp_lb(kp):
    vip = kp.model.find_vip(VIP, 80)
    (classifier,) = to_lb(kp.sent, vip)
    (table,) = of_type(kp.sent, LbVip)
    assert kp.sent.index(table) < kp.sent.index(classifier)


def test_connect_sends_the_conf_then_every_vip_and_a_reconnect_the_same_without_flows(kp):
    node = kp.nodes[1]
    program = node.full_programming()
    (conf,) = of_type(program, LbConf)
    # never longer than the idle timeout; hairpin requests come from the node
    assert conf == LbConf(1024, 9, 9, 9, 9, "10.0.0.1", None)
    (table,) = of_type(program, LbVip)
    assert program.index(conf) < program.index(table)
    # A switch that holds the flows (a controller restart) is sent no flow, but its
    # conf and VIPs again: the same table disturbs no session.
    held = adds(program)
    again = node.full_programming(held)
    assert not [m for m in again if isinstance(m, (FlowAdd, FlowDelete))]
    assert of_type(again, LbConf) == [conf] and of_type(again, LbVip) == [table]


def test_the_switch_picks_the_pod_the_model_picks(kp):
    """The table entry the switch's hash selects holds the model's pick for the 5-tuple."""
    vip = kp.model.find_vip(VIP, 80)
    (table,) = of_type(kp.sent, LbVip)
    client, address = ipaddress.ip_address("10.0.0.11"), ipaddress.ip_address("10.96.0.10")
    for sport in range(40000, 40200):
        index = session_hash(6, client, sport, address, 80, table.basis) % len(table.table)
        pick = vip.table.pick(session_hash(6, client, sport, address, 80))
        assert table.pods[table.table[index]] == (str(pick), 8080)


def test_a_pod_change_sends_a_new_table_and_no_flow_churn(kp):
    vip = kp.model.find_vip(VIP, 80)
    kp.sent.clear()
    kp.add_pods(VIP, 80, ["10.0.0.104"])
    (table,) = of_type(kp.sent, LbVip)
    assert table.table == vip.table.slots and ("10.0.0.104", 8080) in table.pods
    # No flow for the new pod (the switch makes all of the VIP's sessions), none
    # deleted, and the VIP's classifier flows are not sent again.
    assert not adds(kp.sent) and not of_type(kp.sent, FlowDelete)
    # A pod removed drains: a new table, its sessions stay, no flow changes.
    kp.sent.clear()
    kp.del_pods(VIP, 80, ["10.0.0.101"])
    (table,) = of_type(kp.sent, LbVip)
    assert ("10.0.0.101", 8080) not in table.pods
    assert not of_type(kp.sent, LbFlush) and not to_lb(kp.sent, vip)
    assert not [m for m in of_type(kp.sent, FlowDelete) if m.priority is not None]


def test_a_vip_the_controller_makes_sessions_of_has_its_pods_reply_flows(kp):
    """A NodePort's sessions are the controller's, even on kp-switch: the pods' reply
    flows take their replies to it (those it relays), added first, for every pod."""
    kp.sent.clear()
    kp.add_vip("10.96.0.30/32", port=80, target_port=8080, protocol="tcp", node_port=30080)
    kp.add_pods("10.96.0.30/32", 80, PODS)
    replies = adds(kp.sent, kind=pipeline.KIND_REPLY_MISS)
    assert sorted({m.match_dict["ipv4_src"] for m in replies}) == PODS
    (table,) = of_type(kp.sent, LbVip)
    assert max(kp.sent.index(m) for m in replies) < kp.sent.index(table)
    kp.sent.clear()
    kp.add_pods("10.96.0.30/32", 80, ["10.0.0.104"])
    assert {m.match_dict["ipv4_src"] for m in adds(kp.sent)} == {"10.0.0.104"}


def test_the_same_table_again_sends_nothing(kp):
    assert kp.nodes[1].compiled_programming(kp.model.find_vip(VIP, 80)) == []


def test_a_vip_that_loses_its_pods_goes_back_to_the_controller(kp):
    vip = kp.model.find_vip(VIP, 80)
    kp.sent.clear()
    kp.del_pods(VIP, 80, PODS)
    classifier = adds(kp.sent, SERVICES, pipeline.KIND_VIP)
    assert classifier and all(m.goto == SESSIONS and not m.actions for m in classifier)
    # Its pods' reply flows come back (the controller's sessions are relayed), before
    # the classifier sends it packets.
    replies = adds(kp.sent, kind=pipeline.KIND_REPLY_MISS)
    assert {m.match_dict["ipv4_src"] for m in replies} == set(PODS) or not vip.pods
    # Forgotten once no flow sends packets to it any more.
    assert kp.sent.count(LbVipDelete(vip.id)) == 1
    last = max(kp.sent.index(m) for m in classifier)
    assert kp.sent.index(LbVipDelete(vip.id)) > last
    assert not of_type(kp.sent, LbVip)


def test_what_the_switch_cannot_do_stays_with_the_controller(kp):
    kp.sent.clear()
    kp.add_vip("10.96.0.20/32", port=80, target_port=8080, protocol="tcp",
               affinity_timeout=60)
    kp.add_pods("10.96.0.20/32", 80, PODS)
    assert not of_type(kp.sent, LbVip)
    assert all(m.goto == SESSIONS for m in adds(kp.sent, SERVICES, pipeline.KIND_VIP))
    assert lb_pipeline.why_not_compiled(kp.model.find_vip("10.96.0.20/32", 80)) == \
        "ClientIP affinity"
    # A NodePort stays with the controller, and so do the external IPs of a VIP with
    # source ranges, while its ClusterIP is compiled.
    kp.sent.clear()
    kp.add_vip("10.96.0.30/32", port=80, target_port=8080, node_port=30080, protocol="tcp",
               external_ips=["192.0.2.7"], source_ranges=["198.51.100.0/24"])
    kp.add_pods("10.96.0.30/32", 80, PODS)
    vip = kp.model.find_vip("10.96.0.30/32", 80)
    (node_port,) = adds(kp.sent, SERVICES, pipeline.KIND_NODE_PORT)
    assert node_port.goto == SESSIONS
    (clusterip,) = to_lb(kp.sent, vip)
    assert clusterip.match_dict["ipv4_dst"] == "10.96.0.30"
    external = [m for m in adds(kp.sent, SERVICES, pipeline.KIND_VIP)
                if m.match_dict["ipv4_dst"] == "192.0.2.7"]
    assert external and all(m.goto == SESSIONS for m in external)


def test_kp_switch_takes_tables_open_vswitch_cannot_index():
    vip = types.SimpleNamespace(table=types.SimpleNamespace(slots=[0], pods=["p"]),
                                affinity_timeout=0, internal_policy="cluster",
                                new_len=1 << 17, ip_protos=(6,))
    assert "Open vSwitch" in ct_pipeline.why_not_compiled(vip)
    assert lb_pipeline.why_not_compiled(vip) is None
    vip.new_len = kplb.MAX_TABLE * 2
    assert "kp-switch" in lb_pipeline.why_not_compiled(vip)


def test_a_port_0_ipv6_vip_keeps_the_packets_port(kp):
    kp.sent.clear()
    kp.set_conf(node_ip6="fd00::1/64")
    kp.add_vip("fd00:96::/126", port=0, protocol="tcp", nat="nat66")
    kp.add_pods("fd00:96::/126", 0, ["fd00::101", "fd00::102"])
    (table,) = [m for m in of_type(kp.sent, LbVip) if m.version == 6]
    assert table.pods == (("fd00::101", 0), ("fd00::102", 0))


def test_flushes_end_the_switchs_sessions_after_what_would_start_new_ones(kp):
    vip = kp.model.find_vip(VIP, 80)
    kp.sent.clear()
    kp.del_pods(VIP, 80, ["10.0.0.102"], flush=True)
    assert LbFlush(vip.id, ("10.0.0.102", 8080)) in kp.sent
    (table,) = of_type(kp.sent, LbVip)
    assert kp.sent.index(table) < kp.sent.index(LbFlush(vip.id, ("10.0.0.102", 8080)))
    kp.sent.clear()
    kp.del_vip(VIP, 80)
    (delete,) = [m for m in of_type(kp.sent, FlowDelete)
                 if m.cookie_mask == pipeline.MASK_VIP]
    assert kp.sent[-2:] == [LbFlush(vip.id), LbVipDelete(vip.id)]
    assert kp.sent.index(delete) < kp.sent.index(LbFlush(vip.id))
    assert not of_type(kp.sent, ConntrackFlush)


def test_a_flush_of_some_protocols_only_cannot_be_said_and_the_sessions_drain():
    vip = types.SimpleNamespace(id=3, ip_protos=(6, 17), target_port=53)
    pod = ipaddress.ip_address("10.0.0.101")
    assert lb_pipeline.flushes(vip, [pod], (17,)) == []
    vip.ip_protos = (17,)
    assert lb_pipeline.flushes(vip, [pod], (17,)) == [LbFlush(3, ("10.0.0.101", 53))]
    assert lb_pipeline.flushes(vip, None) == []     # a whole VIP's: forget's


def test_conf_changes_reach_the_switchs_session_table(kp):
    kp.sent.clear()
    kp.set_conf(timeout=30)     # closing and opening: conntrack's, but at most the timeout
    assert kp.sent == [LbConf(1024, 30, 30, 30, 30, "10.0.0.1")]
    kp.sent.clear()
    kp.set_conf(timeout=3600)
    assert kp.sent == [LbConf(1024, 3600, kplb.DEFAULT_TCP_CLOSING,
                              kplb.DEFAULT_TCP_OPENING, 3600, "10.0.0.1")]
    kp.sent.clear()
    kp.set_conf(node_ip6="fd00::1/64")     # the hairpin source of IPv6 sessions too
    assert of_type(kp.sent, LbConf) == [LbConf(1024, 3600, kplb.DEFAULT_TCP_CLOSING,
                                               kplb.DEFAULT_TCP_OPENING, 3600, "10.0.0.1",
                                               "fd00::1")]
    kp.sent.clear()
    kp.set_conf(buckets=1 << 24)    # more than kp-switch's table takes: its most
    assert SetCacheBuckets(1 << 24) in kp.sent
    assert of_type(kp.sent, LbConf)[0].buckets == kplb.MAX_SESSION_BUCKETS
    kp.sent.clear()
    kp.set_conf(timeout=3600)        # the same again: nothing to send
    assert kp.sent == []
    kp.set_conf(udp_timeout=30, tcp_close_wait=600)     # conntrack.udpTimeout, ...CloseWait
    assert of_type(kp.sent, LbConf) == [LbConf(kplb.MAX_SESSION_BUCKETS, 3600, 600,
                                               kplb.DEFAULT_TCP_OPENING, 30, "10.0.0.1",
                                               "fd00::1")]


def stats(vip, pods, **figures):
    """A KP_LB_STATS_REPLY as the switch encodes it, decoded as the shim does."""
    totals = dict(sessions=5, capacity=4096, created=12, untracked=1, dropped=2)
    record = dict(vip_id=vip.id, packets=40, bytes=4000, sessions=12, untracked=1,
                  pods=pods, **figures)
    data = kplb.encode_stats_reply(totals, [record, dict(record, vip_id=999)])
    return kplb.decode_stats_reply(data)


def test_counters_come_from_the_switchs_session_stats(kp):
    vip = kp.model.find_vip(VIP, 80)
    totals, records, next_vip_id = stats(vip, [7, 0, 5])
    assert next_vip_id == 0
    kp.lb_stats(1, totals, records)
    counters = kp.counters()
    (mine,) = counters["vips"]
    assert (mine["new_sessions"], mine["packets"], mine["bytes"], mine["untracked"]) == \
        (12, 40, 4000, 1)
    assert {p["address"]: p["new_sessions"] for p in mine["pods"]} == dict(zip(PODS, [7, 0, 5]))
    assert counters["switches"]["1"]["lb_sessions"] == 5
    assert counters["switches"]["1"]["lb_dropped"] == 2
    assert kp.vip(VIP, 80)["counters"]["new_sessions"] == 12
    # A reply about the pod list before the last change: the VIP's figures, no pod's.
    kp.lb_stats(1, *stats(vip, [7, 5])[:2])
    (mine,) = kp.counters()["vips"]
    assert mine["new_sessions"] == 12 and all(p["new_sessions"] == 0 for p in mine["pods"])


def test_the_switchs_own_sessions_are_counted_and_listed(kp):
    vip = kp.model.find_vip(VIP, 80)
    kp.lb_stats(1, *stats(vip, [7, 0, 5])[:2])
    sample = [dict(proto=6, version=4, state="established", vip_id=vip.id, idle_ms=1500,
                   client=("10.0.0.11", 40000 + i), vip=("10.96.0.10", 80),
                   pod=(PODS[i % 3], 8080)) for i in range(3)]
    kp.lb_sessions(1, kplb.decode_sessions_reply(kplb.encode_sessions_reply(sample)))
    listed = kp.sessions(limit=2)
    assert listed["count"] == 5           # the switch's count (its sample is of 3)
    assert listed["sessions"][0] == {
        "dpid": 1, "protocol": "tcp", "client": "10.0.0.11:40000", "vip": "10.96.0.10:80",
        "service": vip.label(), "pod": "10.0.0.101:8080", "idle": 1.5,
        "state": "established", "tracked": True, "made_by": "switch"}
    assert len(listed["sessions"]) == 2
    assert kp.sessions(prefix=VIP, port=80)["count"] == 3
    # what goes on the wire to ask for them
    data = ofmsg.encode_batch([pipeline.LbSessionsRequest(kplb.MAX_SESSIONS_LISTED)],
                              lambda: 7, True)
    assert struct.unpack_from("!II", data, 8) == (KP_EXPERIMENTER_ID, kplb.KP_LB_SESSIONS_REQUEST)
    assert kplb.decode_sessions_request(data[16:]) == kplb.MAX_SESSIONS_LISTED


def test_modes_and_how_auto_picks_them(kp):
    assert "lb" in MODES and kp.show()["modes"] == {"1": "lb"}
    assert session_mode("auto", "kp", kp_switch=True) == MODE_LB
    assert session_mode("auto", "Nicira, Inc.") == "ct"
    assert session_mode("auto", "someone") == "packet-in"
    assert session_mode("lb", "Nicira, Inc.") == MODE_LB
    assert session_mode("packet-in", "kp", kp_switch=True) == "packet-in"


def test_kp_ryu_compat_offers_the_mode():
    import kp_ryu_compat
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    kp_ryu_compat._register_kp_options(types.SimpleNamespace(CONF=conf))
    conf(["--kp-mode", "lb"], project="kp-test")
    assert conf.kp_mode == "lb"


def test_the_shim_pages_through_the_switchs_stats_then_hands_them_over(kp):
    """KpRyuApp's KP_LB_STATS_REPLY handling, without Ryu running: a page that names a
    next VIP id is followed by a request from there; the last one goes to the node."""
    from kp_app.ryu_shim import KpRyuApp
    kp.add_vip("10.96.0.20/32", port=53, target_port=53, protocol="udp")
    kp.add_pods("10.96.0.20/32", 53, PODS[:1])
    first, second = kp.model.find_vip(VIP, 80), kp.model.find_vip("10.96.0.20/32", 53)
    app = KpRyuApp.__new__(KpRyuApp)
    requests, done = [], []
    app.kubeproxy = kp
    app._send = lambda dpid, msgs: requests.extend(msgs)
    app._stats_pending = {1: (types.SimpleNamespace(set=lambda: done.append(1)), {"lb"})}
    app._lb_stats_parts = {1: None}
    totals = dict(sessions=2, capacity=4096, created=3, untracked=0, dropped=0)

    def record(vip, sessions, pods):
        return dict(vip_id=vip.id, packets=10, bytes=1000, sessions=sessions, untracked=0,
                    pods=pods)
    page = kplb.encode_stats_reply(totals, [record(first, 2, [1, 1, 0])])
    at = kplb.STATS_HEAD.size - 8       # the head's next VIP id
    page = page[:at] + struct.pack("!I", second.id) + page[at + 4:]
    app._lb_stats_reply(1, page)
    assert requests == [pipeline.LbStatsRequest(second.id)] and not done
    app._lb_stats_reply(1, kplb.encode_stats_reply(totals, [record(second, 1, [1])]))
    assert done and 1 not in app._lb_stats_parts
    by_vip = {v["prefix"]: v["new_sessions"] for v in kp.counters()["vips"]}
    assert by_vip == {VIP: 2, "10.96.0.20/32": 1}
    # A reply that does not decode ends the wait too, and changes nothing.
    app._stats_pending = {1: (types.SimpleNamespace(set=lambda: done.append(2)), {"lb"})}
    app._lb_stats_parts = {1: None}
    app._lb_stats_reply(1, b"short")
    assert done[-1] == 2 and kp.counters()["vips"][0]["new_sessions"] == 2
