"""kp_app's encoding of kp-switch's load balancer (the kp_lb action, the KP_LB_*
messages): against Ryu's generic experimenter encoding byte for byte, against
kp_proto.lb's decoders (which kp-switch answers with), and back from a flow-stats reply."""
import ipaddress
import struct
import types

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_app import lb_pipeline, ofmsg
from kp_app.kubeproxy import KubeProxy
from kp_app.pipeline import (FlowAdd, LbConf, LbFlush, LbStatsRequest, LbVip, LbVipDelete,
                             flow)
from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID

DATAPATH = types.SimpleNamespace(ofproto=ofp, ofproto_parser=parser)


def ryu_bytes(msg, xid):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def split(data):
    """OpenFlow messages one by one: (type, xid, body after the header)."""
    out, at = [], 0
    while at < len(data):
        _, type_, length, xid = struct.unpack_from("!BBHI", data, at)
        out.append((type_, xid, data[at + 8:at + length]))
        at += length
    return out


def experimenters(data):
    """(exp_type, data) of each kp experimenter message, all of them with one xid."""
    messages = split(data)
    assert {m[0] for m in messages} == {ofp.OFPT_EXPERIMENTER}
    assert len({m[1] for m in messages}) == 1
    out = []
    for _, _, body in messages:
        experimenter, exp_type = struct.unpack_from("!II", body)
        assert experimenter == KP_EXPERIMENTER_ID
        out.append((exp_type, body[8:]))
    return out


def test_the_kp_lb_action_is_encoded_as_ryu_encodes_it():
    ryu = parser.OFPActionExperimenterUnknown(experimenter=KP_EXPERIMENTER_ID,
                                              data=kplb.encode_lb_action(7))
    buf = bytearray()
    ryu.serialize(buf, 0)
    assert ofmsg.encode_actions([(lb_pipeline.KP_LB, 7)]) == bytes(buf)
    assert len(buf) == 16


def test_a_flow_to_kp_lb_is_encoded_as_ryu_encodes_it():
    add = flow(0, 532, {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.96.0.10",
                        "tcp_dst": 80}, ((lb_pipeline.KP_LB, 5),), cookie=0x6B << 56 | 5)
    action = parser.OFPActionExperimenterUnknown(experimenter=KP_EXPERIMENTER_ID,
                                                 data=kplb.encode_lb_action(5))
    ryu = parser.OFPFlowMod(
        DATAPATH, cookie=add.cookie, table_id=0, command=ofp.OFPFC_ADD, priority=532,
        buffer_id=ofp.OFP_NO_BUFFER, match=parser.OFPMatch(**add.match_dict),
        instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [action])])
    assert ofmsg.encode(add, 9, kp_switch=True) == ryu_bytes(ryu, 9)


@pytest.mark.parametrize("msg, exp_type, data", [
    (LbConf(1024, 40, 120, 120, 40), kplb.KP_LB_CONF, kplb.encode_conf(1024, 40, 120, 120, 40)),
    (LbVipDelete(5), kplb.KP_LB_VIP_DELETE, kplb.encode_vip_delete(5)),
    (LbFlush(5), kplb.KP_LB_FLUSH, kplb.encode_flush(5)),
    (LbFlush(5, ("fd00::101", 8080)), kplb.KP_LB_FLUSH, kplb.encode_flush(5, ("fd00::101", 8080))),
    (LbStatsRequest(300), kplb.KP_LB_STATS_REQUEST, kplb.encode_stats_request(300)),
])
def test_each_message_is_the_experimenter_message_ryu_makes(msg, exp_type, data):
    ryu = parser.OFPExperimenter(DATAPATH, KP_EXPERIMENTER_ID, exp_type, data)
    assert ofmsg.encode(msg, 77, kp_switch=True) == ryu_bytes(ryu, 77)


def test_decoded_as_kp_switch_decodes_them():
    (conf,) = experimenters(ofmsg.encode(LbConf(1 << 12, 9, 120, 60, 9), 1, True))
    assert conf[0] == kplb.KP_LB_CONF
    assert kplb.decode_conf(conf[1]) == dict(buckets=4096, tcp_established=9,
                                             tcp_closing=120, tcp_opening=60, udp=9,
                                             hairpin4=None, hairpin6=None)
    (conf,) = experimenters(ofmsg.encode(LbConf(1 << 12, 9, 120, 60, 9, "10.0.0.1",
                                                "fd00::1"), 1, True))
    decoded = kplb.decode_conf(conf[1])
    assert decoded["hairpin4"] == bytes([10, 0, 0, 1])
    assert decoded["hairpin6"] == ipaddress.ip_address("fd00::1").packed


@pytest.mark.parametrize("data, why", [
    (kplb.encode_conf(1024)[:-1], "bytes of data"),
    (kplb.encode_conf(1024)[:20] + bytes([10, 0, 0, 1, 9]) + bytes(11) + bytes(16),
     "more than four bytes"),
])
def test_a_bad_conf_is_refused(data, why):
    with pytest.raises(ValueError, match=why):
        kplb.decode_conf(data)


def test_a_hairpin_source_of_the_wrong_family_is_not_encoded():
    with pytest.raises(ValueError, match="not a hairpin source for IPv4"):
        kplb.encode_conf(1024, hairpin4="fd00::1")
    (flush,) = experimenters(ofmsg.encode(LbFlush(5, ("10.0.0.101", 0)), 1, True))
    assert kplb.decode_flush(flush[1]) == dict(vip_id=5, pod=("10.0.0.101", 0))
    (delete,) = experimenters(ofmsg.encode(LbVipDelete(5), 1, True))
    assert kplb.decode_vip_delete(delete[1]) == 5


def reassemble(parts):
    """What kp-switch stages from a VIP's messages, as it commits them."""
    (exp_type, commit) = parts[-1]
    assert exp_type == kplb.KP_LB_VIP
    head = kplb.decode_vip(commit)
    table, pods = [], []
    for exp_type, data in parts[:-1]:
        if exp_type == kplb.KP_LB_TABLE:
            vip_id, offset, raw = kplb.decode_chunk(data, 2)
            assert offset == len(table)
            table += struct.unpack("!%dH" % (len(raw) // 2), raw)
        else:
            assert exp_type == kplb.KP_LB_PODS
            vip_id, offset, raw = kplb.decode_chunk(data, kplb.POD.size)
            assert offset == len(pods)
            pods += kplb.decode_pods(head["version"], raw)
        assert vip_id == head["vip_id"]
    assert len(table) == head["new_len"] and len(pods) == head["n_pods"]
    return head, tuple(table), tuple(pods)


@pytest.mark.parametrize("version, size, n_pods", [(4, 1024, 3), (6, 1 << 17, 9000)])
def test_a_vip_is_its_chunks_then_the_commit_and_decodes_to_the_same(version, size, n_pods):
    first = ipaddress.ip_address("10.0.0.1" if version == 4 else "fd00::1")
    pods = tuple((str(first + i), 8080 if version == 4 else 0) for i in range(n_pods))
    msg = LbVip(12, version, tuple(i * 7 % n_pods for i in range(size)), pods, 3)
    data = ofmsg.encode(msg, 40, kp_switch=True)
    parts = experimenters(data)
    assert all(len(d) <= kplb.MAX_DATA for _, d in parts)
    assert len(parts) > 3 or size == 1024     # a big one takes several chunks
    head, table, decoded_pods = reassemble(parts)
    assert (head["vip_id"], head["version"], head["basis"]) == (12, version, 3)
    assert table == msg.table and decoded_pods == pods
    assert split(data)[0][1] == 40


def test_a_vip_from_the_model_decodes_to_its_maglev_table():
    sent = []
    kp = KubeProxy(lambda dpid, msgs: sent.extend(msgs))
    kp.set_conf(node_ip="10.0.0.1/24")
    kp.switch_connected(1, mode="lb")
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080, protocol="tcp")
    kp.add_pods("10.96.0.10/32", 80, ["10.0.0.102", "10.0.0.101"])
    vip = kp.model.find_vip("10.96.0.10/32", 80)
    xids = iter(range(1, 10000))
    data = ofmsg.encode_batch(sent, lambda: next(xids), kp_switch=True)
    parts = [(struct.unpack_from("!I", body, 4)[0], body[8:])
             for type_, _, body in split(data) if type_ == ofp.OFPT_EXPERIMENTER]
    vip_parts = [p for p in parts if p[0] in (kplb.KP_LB_TABLE, kplb.KP_LB_PODS,
                                              kplb.KP_LB_VIP)]
    head, table, pods = reassemble(vip_parts)
    assert head["vip_id"] == vip.id
    assert [ipaddress.ip_address(pods[i][0]) for i in table] == \
        [vip.table.pods[s] for s in vip.table.slots]
    assert set(pods) == {("10.0.0.101", 8080), ("10.0.0.102", 8080)}
    # The conf went before it.
    assert [p[0] for p in parts].index(kplb.KP_LB_CONF) < \
        [p[0] for p in parts].index(kplb.KP_LB_VIP)


def test_a_switch_that_is_not_kp_switch_is_sent_none_of_them():
    for msg in (LbConf(1024, 1, 1, 1, 1), LbVip(1, 4, (0,), (("10.0.0.1", 0),), 0),
                LbVipDelete(1), LbFlush(1), LbStatsRequest()):
        assert ofmsg.encode(msg, 1, kp_switch=False) == b""


def flow_stats_of(add: FlowAdd):
    """The flow as a switch reports it in a flow-stats reply, parsed by Ryu."""
    body = ofmsg.encode(add, 1, kp_switch=True)[ofmsg.FLOW_MOD.size:]
    head = struct.pack(ofp.OFP_FLOW_STATS_0_PACK_STR, ofp.OFP_FLOW_STATS_0_SIZE + len(body),
                       add.table, 5, 0, add.priority, add.idle_timeout, 0, 0, add.cookie,
                       3, 300)
    return parser.OFPFlowStats.parser(head + body, 0)


def test_a_held_kp_lb_flow_reads_back_as_the_flow_that_made_it():
    add = flow(0, 532, {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.96.0.10",
                        "tcp_dst": 80}, ((lb_pipeline.KP_LB, 5),), cookie=0x6B << 56 | 5)
    assert ofmsg.flow_from_stats(flow_stats_of(add)) == add


@pytest.mark.parametrize("experimenter, data", [
    (KP_EXPERIMENTER_ID, struct.pack("!HHI", 9, 0, 5)),     # a kp action kp_app never sends
    (KP_EXPERIMENTER_ID, b"\0" * 16),
    (0x00ABCDEF, kplb.encode_lb_action(5)),                 # someone else's
])
def test_an_experimenter_action_kp_never_sends_is_no_flow_of_kps(experimenter, data):
    action = struct.pack("!HHI", ofp.OFPAT_EXPERIMENTER, 8 + len(data), experimenter) + data
    add = flow(0, 532, {"eth_type": 0x0800}, ((lb_pipeline.KP_LB, 5),))
    reported = flow_stats_of(add)
    reported.instructions = [parser.OFPInstructionActions.parser(
        struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(action)) + action, 0)]
    held = ofmsg.flow_from_stats(reported)
    assert held != add and held.actions[0][0] == "unknown"
