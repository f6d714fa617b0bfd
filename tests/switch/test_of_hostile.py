"""Hostile OpenFlow input (issue #13): a real kp-switch answers malformed messages sent
over a real TCP connection with OFPT_ERROR and the right type/code within a second, and
still answers an echo afterwards on the same connection.

The first cases are the ones that sent the old decoder into an endless loop (Ryu's list
parsers advanced by the length of the object they built: an OUTPUT declaring 32 bytes
was 16 to them, and the SET_FIELD of length 0 hidden in its tail never advanced)."""
import os
import struct

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from of_harness import DP, Hosts, SwitchProcess, connect

pytestmark = pytest.mark.kpswitch

REPLY_WITHIN = 1.0  # seconds: a malformed message is answered at once, not after a hang
BAD_ACTION_LEN = (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_LEN)
BAD_SET_LEN = (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_LEN)
BAD_INSTRUCTION_LEN = (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN)
BAD_MATCH_LEN = (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN)
BAD_REQUEST_LEN = (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN)
BAD_BUCKET = (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_BUCKET)


# -- raw messages, packed here with struct (nothing from kp_switch.wire) ---------------

def message(type_, body, xid=0):
    return struct.pack("!BBHI", ofp.OFP_VERSION, type_, 8 + len(body), xid) + body


def output(port=1, length=16):
    return struct.pack("!HHIH6x", ofp.OFPAT_OUTPUT, length, port, 0xFFFF)


def action(type_, length, payload=b""):
    return struct.pack("!HH", type_, length) + payload


def set_field_ip_proto(length):
    """SET_FIELD declaring `length`, with an ip_proto OXM and its padding (16 bytes)."""
    return struct.pack("!HHIB7x", ofp.OFPAT_SET_FIELD, length, ofp.OXM_OF_IP_PROTO, 6)


def set_field_eth_dst():
    return struct.pack("!HHI6s2x", ofp.OFPAT_SET_FIELD, 16, ofp.OXM_OF_ETH_DST, b"\x02" * 6)


# The attack of the issue: an OUTPUT whose length covers a SET_FIELD of length 0.
HIDDEN_ZERO = output(length=32) + set_field_ip_proto(0)


def packet_out(actions, actions_len=None, data=b"\x00" * 60):
    alen = len(actions) if actions_len is None else actions_len
    return message(ofp.OFPT_PACKET_OUT,
                   struct.pack("!IIH6x", ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, alen) + actions + data)


def match(oxms=b"", length=None):
    """An ofp_match of OXM bytes, padded to 8."""
    n = 4 + len(oxms) if length is None else length
    raw = struct.pack("!HH", ofp.OFPMT_OXM, n) + oxms
    return raw + b"\0" * (-len(raw) % 8)


def flow_mod(instructions=b"", match_bytes=None):
    head = struct.pack(ofp.OFP_FLOW_MOD_PACK_STR0, 0, 0, 0, ofp.OFPFC_ADD, 0, 0, 100,
                       ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0)
    return message(ofp.OFPT_FLOW_MOD, head + (match() if match_bytes is None else match_bytes) + instructions)


def apply_actions(actions, length=None):
    return struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(actions) if length is None else length) + actions


def group_mod(buckets, gtype=ofp.OFPGT_ALL, group_id=7):
    return message(ofp.OFPT_GROUP_MOD, struct.pack("!HBxI", ofp.OFPGC_ADD, gtype, group_id) + buckets)


def bucket(actions, length=None):
    n = 16 + len(actions) if length is None else length
    return struct.pack("!HHII4x", n, 0, ofp.OFPP_ANY, ofp.OFPG_ANY) + actions


def flow_stats_request(body_match):
    body = struct.pack("!B3xII4xQQ", ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0) + body_match
    return message(ofp.OFPT_MULTIPART_REQUEST, struct.pack("!HH4x", ofp.OFPMP_FLOW, 0) + body)


def oxm(field_header, value):
    return struct.pack("!I", field_header) + value


IN_PORT_1 = oxm(ofp.OXM_OF_IN_PORT, struct.pack("!I", 1))

CASES = {
    # the endless loops, in each message that carries actions
    "packet-out, OUTPUT hides a SET_FIELD of length 0": (packet_out(HIDDEN_ZERO), BAD_ACTION_LEN),
    "packet-out, OUTPUT of 24 hides a SET_FIELD header": (
        packet_out(output(length=24) + action(ofp.OFPAT_SET_FIELD, 0, b"\0\0\0\0")), BAD_ACTION_LEN),
    "flow-mod, OUTPUT hides a SET_FIELD of length 0": (flow_mod(apply_actions(HIDDEN_ZERO)), BAD_ACTION_LEN),
    "group-mod, OUTPUT hides a SET_FIELD of length 0": (group_mod(bucket(HIDDEN_ZERO)), BAD_ACTION_LEN),
    # action lengths
    "action of length 0": (packet_out(action(ofp.OFPAT_OUTPUT, 0, b"\0" * 12)), BAD_ACTION_LEN),
    "action length not a multiple of 8": (packet_out(output(length=12) + b"\0" * 4), BAD_ACTION_LEN),
    "action shorter than its fixed part": (packet_out(action(ofp.OFPAT_OUTPUT, 8, b"\0" * 4)), BAD_ACTION_LEN),
    "action past the end of its list": (packet_out(output(length=24)), BAD_ACTION_LEN),
    "POP_VLAN longer than its fixed part": (packet_out(action(ofp.OFPAT_POP_VLAN, 16, b"\0" * 12)), BAD_ACTION_LEN),
    "4 bytes after the last action": (packet_out(output() + b"\0" * 4), BAD_ACTION_LEN),
    "SET_FIELD whose OXM runs past it": (packet_out(set_field_ip_proto(8) + b"\0" * 8), BAD_SET_LEN),
    "SET_FIELD with a short OXM value": (
        packet_out(action(ofp.OFPAT_SET_FIELD, 16, oxm(ofp.OXM_OF_ETH_DST & ~0xFF | 2, b"\x02\x02") + b"\0" * 6)),
        BAD_SET_LEN),
    "SET_FIELD with an OXM of length 0": (
        packet_out(action(ofp.OFPAT_SET_FIELD, 8, struct.pack("!I", ofp.OXM_OF_ETH_DST & ~0xFF))), BAD_SET_LEN),
    "packet-out actions_len past the message": (packet_out(output(), actions_len=200, data=b""), BAD_REQUEST_LEN),
    # instruction lengths
    "instruction of length 0": (flow_mod(struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 0)), BAD_INSTRUCTION_LEN),
    "instruction length not a multiple of 8": (
        flow_mod(struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 12, 1) + b"\0" * 4), BAD_INSTRUCTION_LEN),
    "GOTO_TABLE longer than its fixed part": (
        flow_mod(struct.pack("!HHB3x8x", ofp.OFPIT_GOTO_TABLE, 16, 1)), BAD_INSTRUCTION_LEN),
    "WRITE_METADATA shorter than its fixed part": (
        flow_mod(struct.pack("!HH4xQ", ofp.OFPIT_WRITE_METADATA, 16, 1)), BAD_INSTRUCTION_LEN),
    "instruction past the end": (flow_mod(apply_actions(output(), length=40)), BAD_INSTRUCTION_LEN),
    "APPLY_ACTIONS whose action runs past it": (
        flow_mod(apply_actions(output(length=24), length=24) + b"\0" * 8), BAD_ACTION_LEN),
    # match and OXM lengths
    "match length under its header": (flow_mod(match_bytes=match(length=2)), BAD_MATCH_LEN),
    "match past the end of the message": (flow_mod(match_bytes=match(length=200)), BAD_MATCH_LEN),
    "OXM of length 0": (flow_mod(match_bytes=match(oxm(ofp.OXM_OF_IN_PORT & ~0xFF, b""))), BAD_MATCH_LEN),
    "OXM past the end of its match": (
        flow_mod(apply_actions(output()), match(IN_PORT_1, length=8)), BAD_MATCH_LEN),
    "OXM shorter than its field": (
        flow_mod(match_bytes=match(oxm(ofp.OXM_OF_IN_PORT & ~0xFF | 2, b"\0\1"))), BAD_MATCH_LEN),
    "3 bytes after the last OXM": (flow_mod(match_bytes=match(IN_PORT_1 + b"\0\0\0")), BAD_MATCH_LEN),
    "flow-stats request whose match has an OXM of length 0": (
        flow_stats_request(match(oxm(ofp.OXM_OF_IN_PORT & ~0xFF, b""))), BAD_MATCH_LEN),
    "flow-stats request shorter than its fixed part": (
        message(ofp.OFPT_MULTIPART_REQUEST, struct.pack("!HH4x", ofp.OFPMP_FLOW, 0) + b"\0" * 16),
        BAD_REQUEST_LEN),
    # bucket lengths
    "bucket of length 0": (group_mod(bucket(b"", length=0)), BAD_BUCKET),
    "bucket shorter than its fixed part": (group_mod(bucket(b"", length=8)), BAD_BUCKET),
    "bucket length not a multiple of 8": (group_mod(bucket(output(), length=20) + b"\0" * 4), BAD_BUCKET),
    "bucket past the end": (group_mod(bucket(output(), length=48)), BAD_BUCKET),
    # fixed-size messages
    "flow-mod shorter than its fixed part": (message(ofp.OFPT_FLOW_MOD, b"\0" * 20), BAD_REQUEST_LEN),
    "group-mod shorter than its fixed part": (message(ofp.OFPT_GROUP_MOD, b"\0" * 4), BAD_REQUEST_LEN),
    "port-mod shorter than its fixed part": (message(ofp.OFPT_PORT_MOD, b"\0" * 8), BAD_REQUEST_LEN),
}


@pytest.fixture(scope="module")
def switch():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(1, net=81)
    sw = None
    try:
        sw = SwitchProcess([h.port_if for h in hosts])
        connect(sw.listen_port).close()  # up and answering
        yield sw
        assert sw.stop() == 0, sw.log()[-2000:]
        log = sw.log()
        assert "Traceback" not in log and "failed to handle" not in log, log[-3000:]
    finally:
        if sw is not None:
            sw.stop()
        hosts.close()


def error_of(ch, xid, timeout=REPLY_WITHIN):
    item = ch._get(lambda it: it[1] == xid, timeout)
    assert item is not None, "no answer within %.1fs" % timeout
    type_, _, msg, _raw = item
    assert type_ == ofp.OFPT_ERROR, "answered with message type %d" % type_
    return msg.type, msg.code


def echo_answered(ch, timeout=REPLY_WITHIN):
    xid = ch.send(parser.OFPEchoRequest(DP, data=b"still there"))
    item = ch._get(lambda it: it[1] == xid, timeout)
    return item is not None and item[0] == ofp.OFPT_ECHO_REPLY and item[3][8:] == b"still there"


def send_with_xid(ch, data):
    xid = ch.next_xid()
    ch.send_raw(data[:4] + struct.pack("!I", xid) + data[8:])
    return xid


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_message_is_refused_with_its_error_and_the_connection_goes_on(switch, name):
    data, want = CASES[name]
    ch = connect(switch.listen_port)
    try:
        xid = send_with_xid(ch, data)
        assert error_of(ch, xid) == want
        assert echo_answered(ch)
    finally:
        ch.close()


def test_the_same_lists_with_right_lengths_are_accepted(switch):
    """The cases above are malformed only in their lengths: these are their good twins."""
    ch = connect(switch.listen_port)
    try:
        good = [packet_out(output() + set_field_eth_dst()),
                packet_out(set_field_eth_dst() + output()),
                flow_mod(apply_actions(set_field_eth_dst() + output()), match(IN_PORT_1)),
                flow_mod(struct.pack("!HH4xQQ", ofp.OFPIT_WRITE_METADATA, 24, 1, 1)),
                group_mod(bucket(set_field_eth_dst() + output())),
                flow_stats_request(match(IN_PORT_1))]
        for data in good:
            xid = send_with_xid(ch, data)
            errors = [e for e in ch.barrier() if e is not None and e.xid == xid]
            assert errors == [], (data.hex(), [(e.type, e.code) for e in errors])
        ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, ofp.OFPG_ALL, []))
        ch.send(parser.OFPFlowMod(DP, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                  out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        assert ch.barrier() == []
    finally:
        ch.close()


def test_hello_with_a_truncated_element_keeps_the_connection(switch):
    """A version-bitmap element that claims more bytes than the hello has: read leniently
    (the old reader thread died on it and took the connection along)."""
    ch = connect(switch.listen_port)
    try:
        ch.send_raw(message(ofp.OFPT_HELLO, struct.pack("!HH", ofp.OFPHET_VERSIONBITMAP, 8), xid=5))
        assert echo_answered(ch)
    finally:
        ch.close()


def test_header_length_under_8_is_refused_and_the_switch_serves_others(switch):
    """A header length under 8 leaves no way to find the next message: the switch says so
    and closes that connection only."""
    ch = connect(switch.listen_port)
    other = connect(switch.listen_port)
    try:
        ch.send_raw(struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST, 4, 77))
        assert error_of(ch, 77) == BAD_REQUEST_LEN
        assert ch.closed.wait(REPLY_WITHIN)
        assert echo_answered(other)
    finally:
        ch.close()
        other.close()


# -- fuzzing: random and mutated valid messages (fixed seeds) ------------------------

def _encode(msg, xid=1):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def valid_messages():
    """Well-formed requests of every kind the decoder reads lists or fields of."""
    M, A, I = parser.OFPMatch, parser, parser
    acts = [A.OFPActionSetField(eth_dst="02:00:00:00:00:09"), A.OFPActionSetField(ipv4_dst="10.0.0.9"),
            A.OFPActionSetField(tcp_dst=8080), A.OFPActionPushVlan(0x8100),
            A.OFPActionSetField(vlan_vid=0x1005), A.OFPActionPopVlan(), A.OFPActionDecNwTtl(),
            A.OFPActionGroup(7), A.OFPActionOutput(1), A.OFPActionOutput(ofp.OFPP_CONTROLLER, 128)]
    matches = [M(), M(in_port=1), M(eth_type=0x0800, ip_proto=6, ipv4_dst=("10.96.0.0", "255.255.0.0"),
                                    tcp_dst=80),
               M(eth_type=0x86DD, ip_proto=17, ipv6_src="fd00::1", udp_dst=53, metadata=(1, 3)),
               M(eth_type=0x0806, arp_tpa="10.0.0.1", vlan_vid=(0x1000, 0x1000)),
               M(eth_type=0x0800, ip_proto=6, tcp_flags=2)]
    instructions = [[I.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts[:3] + acts[-2:])],
                    [I.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [acts[8]]),
                     I.OFPInstructionWriteMetadata(5, 0xFF), I.OFPInstructionGotoTable(2)],
                    [I.OFPInstructionActions(ofp.OFPIT_CLEAR_ACTIONS, [])],
                    [I.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts[3:6] + [acts[8]])]]
    out = []
    for m in matches:
        for ins in instructions:
            out.append(_encode(parser.OFPFlowMod(DP, match=m, instructions=ins, priority=10)))
    out.append(_encode(parser.OFPFlowMod(DP, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                         out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=matches[2])))
    out.append(_encode(parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                           actions=acts[:3] + [acts[8]], data=b"\x02" * 60)))
    out.append(_encode(parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=1,
                                           actions=[acts[9]], data=b"\x00" * 14)))
    for gtype, buckets in ((ofp.OFPGT_ALL, [parser.OFPBucket(actions=[acts[0], acts[8]]),
                                            parser.OFPBucket(actions=[acts[9]])]),
                           (ofp.OFPGT_SELECT, [parser.OFPBucket(weight=3, actions=[acts[8]])]),
                           (ofp.OFPGT_FF, [parser.OFPBucket(watch_port=1, actions=[acts[8]])]),
                           (ofp.OFPGT_INDIRECT, [parser.OFPBucket(actions=[acts[7]])])):
        out.append(_encode(parser.OFPGroupMod(DP, ofp.OFPGC_ADD, gtype, 7, buckets)))
    out += [_encode(parser.OFPFlowStatsRequest(DP, match=matches[2])),
            _encode(parser.OFPAggregateStatsRequest(DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                                    0, 0, matches[3])),
            _encode(parser.OFPPortStatsRequest(DP)), _encode(parser.OFPGroupStatsRequest(DP)),
            _encode(parser.OFPGroupDescStatsRequest(DP)), _encode(parser.OFPQueueStatsRequest(DP)),
            _encode(parser.OFPDescStatsRequest(DP)), _encode(parser.OFPTableFeaturesStatsRequest(DP)),
            _encode(parser.OFPPortMod(DP, 1, "02:00:00:00:00:01", 0, 0, 0)),
            _encode(parser.OFPTableMod(DP, 0, 0)), _encode(parser.OFPQueueGetConfigRequest(DP, 1)),
            _encode(parser.OFPEchoRequest(DP, data=b"x")), _encode(parser.OFPBarrierRequest(DP)),
            _encode(parser.OFPExperimenter(DP, 0x004B5000, 2, b""))]
    return out


LENGTHS = (0, 1, 4, 7, 8, 12, 16, 24, 32, 40, 0x7FFF, 0xFFF8, 0xFFFF)


def mutate(rng, data, seeds):
    """`data` with 1-3 random changes to its body (the header's version and type stay;
    its length is set to the result's)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 6:                       # an item grows over the next, whose length is 0
            tlvs = [p for p in range(8, len(b) - 4, 8)
                    if 8 <= int.from_bytes(b[p + 2:p + 4], "big") <= 64
                    and not int.from_bytes(b[p + 2:p + 4], "big") % 8]
            if tlvs:
                p = rng.choice(tlvs)
                cur = int.from_bytes(b[p + 2:p + 4], "big")
                b[p + 2:p + 4] = (cur + rng.choice((8, 16, 24))).to_bytes(2, "big")
                if p + cur + 4 <= len(b) and rng.random() < 0.7:
                    b[p + cur + 2:p + cur + 4] = b"\0\0"
            continue
        if kind == 0 and len(b) > 8:        # flip bytes
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(8, len(b))] = rng.randrange(256)
        elif kind == 1 and len(b) > 10:     # a length-like value where a length may be
            at = rng.randrange(8, len(b) - 1) & ~1
            v = rng.choice(LENGTHS) if rng.random() < 0.8 else rng.randrange(0x10000)
            b[at:at + 2] = v.to_bytes(2, "big")
        elif kind == 2 and len(b) > 8:      # truncate
            del b[rng.randrange(8, len(b)):]
        elif kind == 3:                     # append
            b += rng.randbytes(rng.randrange(1, 25))
        elif kind == 4:                     # insert 4 or 8 bytes somewhere
            at = rng.randrange(8, len(b) + 1)
            b[at:at] = rng.choice((b"\0" * 4, b"\0" * 8, rng.randbytes(4), rng.randbytes(8)))
        else:                               # splice in a piece of another message
            other = rng.choice([s for s in seeds if len(s) > 16])
            i = rng.randrange(8, len(other))
            piece = other[i:i + rng.randrange(4, 48)]
            at = rng.randrange(8, len(b) + 1)
            b[at:at + len(piece)] = piece
    del b[0xFFFF:]
    b[2:4] = len(b).to_bytes(2, "big")
    return bytes(b)


def random_message(rng, types):
    body = rng.randbytes(rng.randrange(0, 120))
    return message(rng.choice(types), body)


FUZZ_TYPES = (ofp.OFPT_FLOW_MOD, ofp.OFPT_PACKET_OUT, ofp.OFPT_GROUP_MOD, ofp.OFPT_MULTIPART_REQUEST,
              ofp.OFPT_PORT_MOD, ofp.OFPT_TABLE_MOD, ofp.OFPT_QUEUE_GET_CONFIG_REQUEST,
              ofp.OFPT_EXPERIMENTER, ofp.OFPT_ECHO_REQUEST, ofp.OFPT_BARRIER_REQUEST)


def fuzz_messages(seed, n):
    import random
    rng = random.Random(seed)
    seeds = valid_messages()
    for _ in range(n):
        if rng.random() < 0.1:
            yield random_message(rng, FUZZ_TYPES)
        else:
            yield mutate(rng, rng.choice(seeds), seeds)


def decode_outcome(data):
    """('ok', None) or ('error', (type, code)) of the decoder; anything else raises."""
    from kp_switch import wire
    from kp_switch.errors import OFError
    try:
        wire.decode(data)
        return "ok", None
    except OFError as e:
        assert not e.text.startswith(wire.DECODER_BUG), e.text
        return "error", (e.type, e.code)


def test_decoder_fuzz_only_decodes_or_refuses():
    """20000 mutated and random messages through the decoder in this process: each one
    decodes or raises OFError (never the decoder's catch-all, never a hang: an alarm
    stops the test if the loop does not end)."""
    import signal

    class Hang(BaseException):  # not an Exception: no handler in the decoder may catch it
        pass

    def hang(*_):
        raise Hang("the decoder did not finish the fuzz messages")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        outcomes = {"ok": 0, "error": 0}
        for data in fuzz_messages(13, 20000):
            outcomes[decode_outcome(data)[0]] += 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert outcomes["ok"] > 1000 and outcomes["error"] > 1000, outcomes  # both paths exercised


def test_switch_fuzz_answers_every_message_and_stays_up(switch):
    """1000 mutated and random messages over TCP to the switch, each followed by an
    echo: what the decoder refuses is answered with that error, the echo always within
    a second, and the switch logs no failure (checked at teardown)."""
    ch = connect(switch.listen_port)
    try:
        refused = 0
        for i, data in enumerate(fuzz_messages(1313, 1000)):
            xid = send_with_xid(ch, data)
            data = data[:4] + struct.pack("!I", xid) + data[8:]
            kind, want = decode_outcome(data)
            echo = ch.send(parser.OFPEchoRequest(DP, data=b"%d" % i))
            got = []
            while True:
                item = ch._get(lambda it: it[1] in (xid, echo), REPLY_WITHIN)
                assert item is not None, "message %d (%s): no echo within %.1fs" % (i, data.hex(), REPLY_WITHIN)
                if item[1] == echo:
                    break
                got.append(item)
            if kind == "error":
                refused += 1
                errors = [(m.type, m.code) for t, _, m, _ in got if t == ofp.OFPT_ERROR]
                assert errors == [want], (i, data.hex(), errors)
        assert refused > 100
        ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, ofp.OFPG_ALL, []))
        ch.send(parser.OFPFlowMod(DP, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                  out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        assert ch.barrier() == []
    finally:
        ch.close()
    assert switch.proc.poll() is None


# -- group chains: bounded depth and copies (issue #13) ------------------------------

def _group(ch, gid, buckets, gtype=ofp.OFPGT_ALL, command=ofp.OFPGC_ADD):
    """Send a group-mod; the (type, code) of its error, or None."""
    e = ch.check(parser.OFPGroupMod(DP, command, gtype, gid, buckets))
    return None if e is None else (e.type, e.code)


def _to(*actions, **kw):
    return parser.OFPBucket(actions=list(actions), **kw)


@pytest.fixture
def mgmt(switch):
    ch = connect(switch.listen_port)
    try:
        yield ch
        ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, ofp.OFPG_ALL, []))
        assert ch.barrier() == []
        assert echo_answered(ch)
    finally:
        ch.close()


def test_a_group_chain_deeper_than_the_bound_is_refused(mgmt):
    from kp_switch.groups import MAX_CHAIN_DEPTH
    assert _group(mgmt, 100, [_to(parser.OFPActionOutput(1))]) is None
    for gid in range(101, 100 + MAX_CHAIN_DEPTH):
        assert _group(mgmt, gid, [_to(parser.OFPActionGroup(gid - 1))]) is None
    top = 100 + MAX_CHAIN_DEPTH
    assert _group(mgmt, top, [_to(parser.OFPActionGroup(top - 1))]) == \
        (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_CHAINING_UNSUPPORTED)
    # nor can a modify deepen a chain from below: the leaf may not grow a level
    assert _group(mgmt, 99, [_to(parser.OFPActionOutput(1))]) is None
    assert _group(mgmt, 100, [_to(parser.OFPActionGroup(99))], command=ofp.OFPGC_MODIFY) == \
        (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_CHAINING_UNSUPPORTED)


def test_a_group_fan_out_beyond_the_copy_bound_is_refused(mgmt):
    """An ALL group of k buckets, each into an ALL group of 16, runs k * (1 + 16)
    buckets per packet: 15 * 17 is within MAX_GROUP_COPIES (256), 16 * 17 is not."""
    from kp_switch.groups import MAX_GROUP_COPIES
    assert 15 * 17 <= MAX_GROUP_COPIES < 16 * 17
    assert _group(mgmt, 1, [_to(parser.OFPActionOutput(1))] * 16) is None
    assert _group(mgmt, 2, [_to(parser.OFPActionGroup(1))] * 15) is None
    assert _group(mgmt, 3, [_to(parser.OFPActionGroup(1))] * 16) == \
        (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_OUT_OF_BUCKETS)
    assert echo_answered(mgmt)


def test_a_loop_of_watched_groups_is_refused(mgmt):
    assert _group(mgmt, 10, [_to(parser.OFPActionOutput(1), watch_port=1)], ofp.OFPGT_FF) is None
    assert _group(mgmt, 11, [_to(parser.OFPActionOutput(1), watch_group=10)], ofp.OFPGT_FF) is None
    assert _group(mgmt, 10, [_to(parser.OFPActionOutput(1), watch_group=11)], ofp.OFPGT_FF,
                  ofp.OFPGC_MODIFY) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_WATCH)
    # the groups still forward: a packet through 11 leaves by port 1
    before = _tx(mgmt, 1)
    mgmt.send_raw(packet_out(struct.pack("!HHI", ofp.OFPAT_GROUP, 8, 11)))
    assert mgmt.barrier() == []
    assert _tx(mgmt, 1) - before == 1


def _tx(ch, port_no):
    return [s for s in ch.stats(parser.OFPPortStatsRequest(DP, 0, port_no))][0].tx_packets


def test_one_packet_runs_at_most_the_copy_bound_of_buckets(mgmt):
    """Each group is within the bounds, but a packet-out naming it 8 times would make
    8 * 64 copies: the switch sends MAX_GROUP_COPIES of them and drops the rest."""
    from kp_switch.groups import MAX_GROUP_COPIES
    assert _group(mgmt, 20, [_to(parser.OFPActionOutput(1))] * 64) is None
    before = _tx(mgmt, 1)
    mgmt.send_raw(packet_out(struct.pack("!HHI", ofp.OFPAT_GROUP, 8, 20) * 8))
    assert mgmt.barrier() == []
    assert _tx(mgmt, 1) - before == MAX_GROUP_COPIES


def test_the_management_listener_binds_loopback_unless_told(switch):
    """`--listen ptcp:PORT` (no address) accepts on 127.0.0.1 only."""
    import socket as _socket
    bound = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.split(":")
            if state == "0A" and int(port, 16) == switch.listen_port:
                bound.add(_socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    assert bound == {"127.0.0.1"}


def test_long_action_lists_are_decoded_each_time_not_remembered():
    """The decoder remembers short lists only: a controller sending many distinct
    64 KB lists cannot grow its caches past _PARSED_MAX short entries."""
    from kp_switch import wire
    before = len(wire._parsed_actions)
    long_list = b"".join(struct.pack("!HH4x", ofp.OFPAT_POP_VLAN, 8) for _ in range(1000)) + output()
    m = wire.decode(packet_out(long_list))
    assert len(m.actions) == 1001
    assert len(wire._parsed_actions) == before
