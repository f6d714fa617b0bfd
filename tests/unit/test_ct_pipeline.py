"""VIPs compiled for a switch that makes sessions itself (Open vSwitch's conntrack): the
programming as data, with no switch. Real traffic through Open vSwitch in this mode is in
tests/integration (the 'ovs' case), and the NX encoding against Ryu and Open vSwitch in
tests/unit/test_ofmsg_nx.py."""
import ipaddress

import pytest

from kp_app import ct_pipeline, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.node import MODE_CT
from kp_app.pipeline import CONNTRACK, LB, SERVICES, ConntrackFlush, FlowAdd, FlowDelete
from kp_app.sessions import FiveTuple
from kp_proto.session_hash import session_hash

VIP = "10.96.0.10/32"
PODS = ["10.0.0.101", "10.0.0.102", "10.0.0.103"]


@pytest.fixture
def kp():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=lambda: 100.0)
    proxy.sent = sent
    proxy.set_conf(node_ip="10.0.0.1/24", timeout=9)
    proxy.switch_connected(1, mode=MODE_CT)
    proxy.add_vip(VIP, port=80, target_port=8080, protocol="tcp")
    proxy.add_pods(VIP, 80, PODS)
    return proxy


def adds(msgs, table=None, kind=None):
    return [m for m in msgs if isinstance(m, FlowAdd) and (table is None or m.table == table)
            and (kind is None or pipeline.cookie_parts(m.cookie)[0] == kind)]


def lb_entries(msgs):
    """index -> the pod its entry translates to."""
    out = {}
    for m in adds(msgs, LB):
        match = m.match_dict
        if "reg0" in match:
            (ct,) = m.actions
            assert ct[:4] == ("ct", True, pipeline.CT_ZONE, pipeline.FORWARDING)
            out[match["reg0"]] = ct[4][1]
    return out


def test_a_compiled_vip_goes_to_conntrack_and_its_table_is_on_the_switch(kp):
    vip = kp.model.find_vip(VIP, 80)
    (classifier,) = [m for m in adds(kp.sent, SERVICES, pipeline.KIND_VIP)
                     if m.match_dict.get("ipv4_dst") == "10.96.0.10"][-1:]
    assert classifier.goto is None
    assert classifier.actions == (("set_field", "reg1", vip.id), pipeline.TO_CONNTRACK)
    (select,) = adds(kp.sent, CONNTRACK, pipeline.KIND_CT)
    assert select.match_dict == {"ct_state": (0x21, 0x21), "reg1": vip.id}
    assert select.actions == (("multipath", 0, vip.new_len), ("resubmit", LB))
    entries = lb_entries(kp.sent)
    assert sorted(entries) == list(range(vip.new_len))
    table = vip.table
    assert entries == {i: str(table.pods[s]) for i, s in enumerate(table.slots)}
    # Each pod's own requests to the VIP go to the controller (hairpin needs SNAT).
    hairpin = [m for m in adds(kp.sent, LB) if "ipv4_src" in m.match_dict]
    assert sorted(m.match_dict["ipv4_src"] for m in hairpin) == PODS
    assert all(m.actions == (("resubmit", pipeline.SESSIONS),) for m in hairpin)


def test_the_switch_picks_the_pod_the_model_picks(kp):
    """The LB entry the switch's multipath selects is the model's pick for the 5-tuple."""
    vip = kp.model.find_vip(VIP, 80)
    entries = lb_entries(kp.sent)
    for sport in range(40000, 40200):
        key = FiveTuple(6, ipaddress.ip_address("10.0.0.11"), sport,
                        ipaddress.ip_address("10.96.0.10"), 80)
        index = session_hash(6, key.src, sport, key.dst, 80) % vip.new_len
        assert entries[index] == str(vip.table.pick(key.flow_hash()))


def test_a_pod_change_sends_only_the_entries_that_change_and_deletes_none(kp):
    vip = kp.model.find_vip(VIP, 80)
    before = dict(enumerate(vip.table.slots))
    old_pods = list(vip.table.pods)
    kp.sent.clear()
    kp.add_pods(VIP, 80, ["10.0.0.104"])
    changed = lb_entries(kp.sent)
    table = vip.table
    moved = {i for i, s in enumerate(table.slots)
             if str(table.pods[s]) != str(old_pods[before[i]])}
    assert set(changed) == moved and 0 < len(moved) < vip.new_len // 2
    # Nearly all go to the new pod (Maglev moves few of the others' entries).
    assert sum(changed[i] == "10.0.0.104" for i in moved) >= 0.9 * len(moved)
    assert not [m for m in kp.sent if isinstance(m, FlowDelete)]
    # The LB entries come before the classifier flows that lead to them.
    kinds = [pipeline.cookie_parts(m.cookie)[0] for m in kp.sent if isinstance(m, FlowAdd)]
    last_entry = len(kinds) - 1 - kinds[::-1].index(pipeline.KIND_LB)
    assert last_entry < kinds.index(pipeline.KIND_VIP)


def test_a_vip_that_loses_its_pods_goes_back_to_the_controller(kp):
    vip = kp.model.find_vip(VIP, 80)
    kp.sent.clear()
    kp.del_pods(VIP, 80, PODS)
    deletes = [m for m in kp.sent if isinstance(m, FlowDelete)]
    assert FlowDelete(pipeline.cookie(pipeline.KIND_LB, vip.id),
                      pipeline.MASK_VIP | pipeline.MASK_KIND, LB) in deletes
    assert FlowDelete(pipeline.cookie(pipeline.KIND_CT, vip.id),
                      pipeline.MASK_VIP | pipeline.MASK_KIND, CONNTRACK) in deletes
    classifier = [m for m in adds(kp.sent, SERVICES, pipeline.KIND_VIP)]
    assert classifier and all(m.goto == pipeline.SESSIONS and not m.actions
                              for m in classifier)


def test_what_the_switch_cannot_do_stays_with_the_controller(kp):
    kp.sent.clear()
    kp.add_vip("10.96.0.20/32", port=80, target_port=8080, protocol="tcp",
               affinity_timeout=60)
    kp.add_pods("10.96.0.20/32", 80, PODS)
    assert not adds(kp.sent, LB) and not adds(kp.sent, CONNTRACK)
    assert all(m.goto == pipeline.SESSIONS for m in adds(kp.sent, SERVICES, pipeline.KIND_VIP))
    vip = kp.model.find_vip("10.96.0.20/32", 80)
    assert ct_pipeline.why_not_compiled(vip) == "ClientIP affinity"
    # ... and the node port of a compiled VIP too.
    kp.sent.clear()
    kp.add_vip("10.96.0.30/32", port=80, target_port=8080, node_port=30080, protocol="tcp")
    kp.add_pods("10.96.0.30/32", 80, PODS)
    (node_port,) = adds(kp.sent, SERVICES, pipeline.KIND_NODE_PORT)
    assert node_port.goto == pipeline.SESSIONS


def test_an_sctp_vip_stays_with_the_controller_on_open_vswitch(kp):
    """Its conntrack has no SCTP ports (tests/switch/test_ovs_sctp_conntrack.py): the
    VIP's classifier sends it to SESSIONS, matching SCTP's own port field."""
    kp.sent.clear()
    kp.add_vip("10.96.0.40/32", port=38412, target_port=36412, protocol="sctp")
    kp.add_pods("10.96.0.40/32", 38412, PODS)
    assert not adds(kp.sent, LB) and not adds(kp.sent, CONNTRACK)
    (classifier,) = adds(kp.sent, SERVICES, pipeline.KIND_VIP)
    assert classifier.goto == pipeline.SESSIONS
    assert classifier.match_dict["ip_proto"] == 132
    assert classifier.match_dict["sctp_dst"] == 38412
    vip = kp.model.find_vip("10.96.0.40/32", 38412)
    assert ct_pipeline.why_not_compiled(vip) == ct_pipeline.SCTP_NOT_TRACKED


def test_pod_replies_meet_conntrack_first(kp):
    tracked = [m for m in adds(kp.sent, SERVICES, pipeline.KIND_REPLY_MISS)
               if m.actions == (pipeline.TO_CONNTRACK,)]
    assert sorted(m.match_dict["ipv4_src"] for m in tracked) == PODS
    assert all(m.match_dict["ipv4_dst"] == ("10.0.0.0", "255.255.255.0") for m in tracked)


def test_a_removed_pods_reply_flows_outlive_it_while_idle_at_most_the_timeout(kp):
    """Its sessions live on in conntrack (drain): its reply flows stay, idle-timed."""
    kp.sent.clear()
    kp.del_pods(VIP, 80, ["10.0.0.103"])
    replies = [m for m in adds(kp.sent, kind=pipeline.KIND_REPLY_MISS)
               if m.match_dict.get("ipv4_src") == "10.0.0.103"]
    assert replies and all(m.idle_timeout == 9 for m in replies)
    # (the pod's cookie-masked delete cannot reach them: they carry no pod)
    assert not [m for m in kp.sent if isinstance(m, FlowDelete) and m.match
                and m.table != LB]


def test_flush_and_removed_udp_endpoints_end_the_switchs_sessions(kp):
    kp.sent.clear()
    kp.del_pods(VIP, 80, ["10.0.0.102"], flush=True)
    assert ConntrackFlush(pipeline.CT_ZONE, 6, "10.96.0.10", 80, "10.0.0.102", 8080) in kp.sent
    kp.sent.clear()
    kp.del_vip(VIP, 80)
    assert kp.sent[0] == ConntrackFlush(pipeline.CT_ZONE, 6, "10.96.0.10", 80)


def test_packet_in_mode_is_unchanged():
    sent = []
    proxy = KubeProxy(lambda dpid, msgs: sent.extend(msgs), clock=lambda: 100.0)
    proxy.switch_connected(1)
    proxy.add_vip(VIP, port=80, target_port=8080, protocol="tcp")
    proxy.add_pods(VIP, 80, PODS)
    assert not adds(sent, LB) and not adds(sent, CONNTRACK)
    assert not [m for m in sent if isinstance(m, ConntrackFlush)]
    assert not [m for m in adds(sent, SERVICES) if pipeline.TO_CONNTRACK in m.actions]


def test_an_unknown_mode_is_refused():
    proxy = KubeProxy(lambda dpid, msgs: None)
    with pytest.raises(Exception, match="not one of"):
        proxy.switch_connected(1, mode="ebpf")
    assert not proxy.nodes


def test_counters_come_from_the_switchs_flow_stats(kp):
    vip = kp.model.find_vip(VIP, 80)
    table = vip.table
    pod = table.pods[table.slots[5]]
    stats = [(pipeline.cookie(pipeline.KIND_LB, vip.id), {"reg1": vip.id, "reg0": 5}, 7, 0),
             (pipeline.cookie(pipeline.KIND_VIP, vip.id), {}, 40, 4000)]
    kp.flow_stats(1, stats)
    counters = kp.counters()["vips"][0]
    assert (counters["new_sessions"], counters["packets"], counters["bytes"]) == (7, 40, 4000)
    by_pod = {p["address"]: p["new_sessions"] for p in counters["pods"]}
    assert by_pod[str(pod)] == 7 and sum(by_pod.values()) == 7


def test_a_reconnecting_switch_keeps_what_it_holds_as_it_should(kp):
    """Programming with what the switch reports: the same flows are not sent again, a
    changed one is, one the program does not have goes (strictly: that flow alone), and
    nothing is deleted wholesale first."""
    node = kp.nodes[1]
    def flow_mods(msgs):
        return [m for m in msgs if isinstance(m, (FlowAdd, FlowDelete))]
    held = [m for m in node.full_programming() if isinstance(m, FlowAdd)]
    assert flow_mods(node.full_programming(held)) == []
    vip = kp.model.find_vip(VIP, 80)
    entry = next(m for m in held if m.table == LB and m.match_dict.get("reg0") == 0)
    moved = FlowAdd(entry.table, entry.priority, entry.match,
                    (("ct", True, pipeline.CT_ZONE, pipeline.FORWARDING,
                      ("dnat", "10.0.0.199", 8080)),), entry.goto, entry.cookie)
    extra = pipeline.flow(pipeline.SESSIONS, pipeline.PRIO_SESSION,
                          {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.11"},
                          (("output", 3),), cookie=pipeline.cookie(pipeline.KIND_FORWARD, vip.id))
    msgs = flow_mods(node.full_programming([moved if m is entry else m for m in held] + [extra]))
    assert msgs == [entry, FlowDelete(extra.cookie, pipeline.MASK_ALL, extra.table,
                                      extra.match, priority=extra.priority)]
