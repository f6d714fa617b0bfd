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
