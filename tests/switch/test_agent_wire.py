"""wire.py's fast decoders give what Ryu's parsers give (the flow-mod match straight to
ints, cached instruction / action parses, packet-in match bytes)."""
import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_switch import wire
from kp_switch.actions import Context, compile_instructions
from kp_switch.errors import OFError
from kp_switch.match import Match


class _Dp:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def encode(msg):
    msg.set_xid(7)
    msg.serialize()
    return bytes(msg.buf)


def fm_bytes(match, actions=(), **kw):
    ins = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))] if actions else []
    return encode(parser.OFPFlowMod(_Dp(), match=match, instructions=ins, **kw))


CTX = Context(lambda p: p < 10, lambda g: False, 8)

MATCHES = [
    parser.OFPMatch(),
    parser.OFPMatch(in_port=1),
    parser.OFPMatch(eth_type=0x0800, ip_proto=17, ipv4_src="10.0.0.11", ipv4_dst="10.96.0.10",
                    udp_src=20001, udp_dst=80),
    parser.OFPMatch(eth_type=0x0800, ipv4_dst=("10.0.0.0", "255.255.255.0")),
    parser.OFPMatch(eth_dst=("02:00:00:00:00:00", "ff:ff:ff:00:00:00"), vlan_vid=(0x1000, 0x1000)),
    parser.OFPMatch(eth_type=0x86DD, ip_proto=58, icmpv6_type=135, ipv6_nd_target="fe80::1"),
    parser.OFPMatch(eth_type=0x86DD, ipv6_src=("2001:db8::", "ffff:ffff::"), metadata=(5, 0xFF)),
    parser.OFPMatch(tcp_dst=80),                      # prerequisite missing
    parser.OFPMatch(in_port=(1, 0xFFFF)),             # mask on a field without one
    parser.OFPMatch(mpls_label=5, eth_type=0x8847),   # a field kp does not support
]

ACTIONS = [parser.OFPActionSetField(eth_src="02:6b:70:00:00:01"),
           parser.OFPActionSetField(ipv4_dst="10.0.0.101"), parser.OFPActionSetField(udp_dst=8080),
           parser.OFPActionOutput(2)]


def ryu_decode(data):
    msg = parser.OFPFlowMod.parser(None, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(data), 7, data)
    return msg


def outcome(f):
    try:
        return ("ok", f())
    except OFError as e:
        return ("error", e.type, e.code)


@pytest.mark.parametrize("match", MATCHES, ids=range(len(MATCHES)))
def test_flow_mod_match_as_ryu_gives_it(match):
    data = fm_bytes(match, ACTIONS, priority=900, idle_timeout=30, flags=ofp.OFPFF_SEND_FLOW_REM,
                    cookie=0x6B << 56)
    fast = wire.decode(data).msg
    ryu = ryu_decode(data)
    for a in ("cookie", "cookie_mask", "table_id", "command", "idle_timeout", "hard_timeout",
              "priority", "buffer_id", "out_port", "out_group", "flags"):
        assert getattr(fast, a) == getattr(ryu, a), a
    assert outcome(lambda: Match.from_ryu(fast.match)) == outcome(lambda: Match.from_ryu(ryu.match))


def test_odd_oxms_go_through_ryu():
    data = bytearray(fm_bytes(parser.OFPMatch(in_port=1), ACTIONS))
    data[48 + 4 + 3] = 8  # in_port OXM claiming 8 bytes: not for the fast decoder
    assert wire.fast_match_items(bytes(data), 48) is None


def test_instructions_compile_the_same_and_parses_are_shared():
    m = parser.OFPMatch(eth_type=0x0800, ip_proto=17, udp_dst=80)
    data = fm_bytes(m, ACTIONS)
    a, b = wire.decode(data).msg, wire.decode(data).msg
    assert a.instructions[0] is b.instructions[0]
    match = Match.from_ryu(m)
    got = compile_instructions(a.instructions, CTX, 0, match)
    want = compile_instructions(ryu_decode(data).instructions, CTX, 0, match)
    assert (got.apply, got.write, got.goto) == (want.apply, want.write, want.goto)
    match_len = int.from_bytes(data[50:52], "big")
    assert wire.instructions_bytes(got.raw) == data[48 + (match_len + 7) // 8 * 8:]


def test_set_field_inconsistent_with_the_match_is_still_refused():
    data = fm_bytes(parser.OFPMatch(in_port=1), ACTIONS)
    ins = wire.decode(data).msg.instructions
    with pytest.raises(OFError) as e:
        compile_instructions(ins, CTX, 0, Match.from_ryu(parser.OFPMatch(in_port=1)))
    assert e.value.code == ofp.OFPBAC_MATCH_INCONSISTENT


def test_packet_out_actions_cached():
    po = encode(parser.OFPPacketOut(_Dp(), buffer_id=ofp.OFP_NO_BUFFER, in_port=1,
                                    actions=ACTIONS, data=b"\0" * 60))
    a, b = wire.decode(po), wire.decode(po)
    assert [type(x) for x in a.actions] == [type(x) for x in ACTIONS]
    assert a.actions == b.actions and a.actions is not b.actions
    assert a.packet == b"\0" * 60


@pytest.mark.parametrize("in_port,metadata", [(1, 0), (0xFFFFFFFD, 0), (7, 1), (2, (1 << 64) - 1)])
def test_packet_in_match_bytes(in_port, metadata):
    fields = {"in_port": in_port}
    if metadata:
        fields["metadata"] = metadata
    assert wire.packet_in_match(in_port, metadata) == wire.match_bytes(parser.OFPMatch(**fields))
