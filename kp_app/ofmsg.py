"""kp_app's OpenFlow 1.3 messages on the wire: kp_app.pipeline data -> bytes.

Packed with struct, not built as Ryu message objects: a new session sends two flow-mods
and a packet-out, and building and serializing them with Ryu cost about 270 µs, four
times kp's own work for the session. tests/unit/test_ofmsg.py checks every kind of
message against Ryu's encoding, byte for byte. A batch goes out as one buffer, so the
switch gets a session's messages in one write.
"""
import socket
import struct
from typing import Callable, Iterable

from kp_app.pipeline import (CacheStatsRequest, FlowAdd, FlowDelete, FlowStatsRequest,
                             PacketOut, SetCacheBuckets)

KP_EXPERIMENTER = 0x004B5000
KP_SET_BUCKETS, KP_CACHE_STATS_REQUEST, KP_CACHE_STATS_REPLY = 1, 2, 3
# kp-switch's KP_CACHE_STATS_REPLY (switch/FASTPATH.md): the megaflow counters were
# appended after the first ten; a reply from an older switch just has fewer fields.
CACHE_STATS_FIELDS = ("hits", "misses", "inserts", "insert_failures", "evictions", "expired",
                      "invalidated", "entries", "buckets", "parse_errors",
                      "mf_hits", "mf_inserts", "mf_insert_failures", "mf_entries", "mf_subtables")

VERSION = 4
OFPT_EXPERIMENTER, OFPT_PACKET_OUT, OFPT_FLOW_MOD = 4, 13, 14
OFPT_MULTIPART_REQUEST, OFPT_BARRIER_REQUEST = 18, 20
OFPFC_ADD, OFPFC_DELETE = 0, 3
OFPFF_SEND_FLOW_REM = 1
OFPIT_GOTO_TABLE, OFPIT_APPLY_ACTIONS = 1, 4
OFPAT_OUTPUT, OFPAT_SET_FIELD = 0, 25
OFPMP_FLOW = 1
OFPTT_ALL = 0xFF
OFPP_CONTROLLER, OFPP_ANY = 0xFFFFFFFD, 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF
OFP_DEFAULT_PRIORITY = 0x8000
OFPMT_OXM = 1
OFPXMC_OPENFLOW_BASIC = 0x8000

HEADER = struct.Struct("!BBHI")
FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")
PACKET_OUT = struct.Struct("!BBHIIIH6x")
FLOW_STATS_REQUEST = struct.Struct("!BBHIHH4xB3xII4xQQ")
EXPERIMENTER = struct.Struct("!BBHIII")
ACTION_OUTPUT = struct.Struct("!HHIH6x")
GOTO_TABLE = struct.Struct("!HHB3x")

# OXM name -> (field number, value length): the fields kp's pipeline matches and sets.
OXM_FIELDS = {
    "in_port": (0, 4), "eth_dst": (3, 6), "eth_src": (4, 6), "eth_type": (5, 2),
    "ip_proto": (10, 1), "ipv4_src": (11, 4), "ipv4_dst": (12, 4),
    "tcp_src": (13, 2), "tcp_dst": (14, 2), "udp_src": (15, 2), "udp_dst": (16, 2),
    "icmpv4_type": (19, 1), "icmpv4_code": (20, 1), "arp_op": (21, 2),
    "arp_spa": (22, 4), "arp_tpa": (23, 4), "arp_sha": (24, 6), "arp_tha": (25, 6),
    "ipv6_src": (26, 16), "ipv6_dst": (27, 16), "icmpv6_type": (29, 1), "icmpv6_code": (30, 1),
}


_FAMILY = {4: socket.AF_INET, 16: socket.AF_INET6}


def _value(name: str, length: int, value) -> bytes:
    try:
        if isinstance(value, int):
            return value.to_bytes(length, "big")
        packed = (bytes.fromhex(value.replace(":", "")) if length == 6
                  else socket.inet_pton(_FAMILY[length], value))
    except (ValueError, OverflowError, OSError, KeyError, AttributeError, TypeError):
        packed = None
    if packed is None or len(packed) != length:
        raise ValueError(f"{name}: {value!r} is not a value of this field")
    return packed


def _field(name: str):
    try:
        return OXM_FIELDS[name]
    except KeyError:
        raise ValueError(f"unknown OXM field {name!r}") from None


def _oxm(name: str, value) -> bytes:
    number, length = _field(name)
    if isinstance(value, tuple):
        body = _value(name, length, value[0]) + _value(name, length, value[1])
        has_mask = 1
    else:
        body = _value(name, length, value)
        has_mask = 0
    header = (OFPXMC_OPENFLOW_BASIC << 16) | (number << 9) | (has_mask << 8) | len(body)
    return header.to_bytes(4, "big") + body


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def encode_match(items: Iterable) -> bytes:
    """An OXM ofp_match, fields in OXM order (prerequisites first), as Ryu orders them."""
    fields = sorted(items, key=lambda item: _field(item[0])[0])
    oxms = b"".join(_oxm(name, value) for name, value in fields)
    return _pad8(struct.pack("!HH", OFPMT_OXM, 4 + len(oxms)) + oxms)


def encode_actions(items: Iterable) -> bytes:
    out = []
    for action in items:
        if action[0] == "output":
            port = action[1]
            # The controller must see whole packets: it forwards them itself.
            max_len = OFPCML_NO_BUFFER if port == OFPP_CONTROLLER else 0
            out.append(ACTION_OUTPUT.pack(OFPAT_OUTPUT, ACTION_OUTPUT.size, port, max_len))
        elif action[0] == "set_field":
            oxm = _oxm(action[1], action[2])
            length = 4 + len(oxm)
            out.append(_pad8(struct.pack("!HH", OFPAT_SET_FIELD, length + -length % 8) + oxm))
        else:
            raise ValueError(f"unknown action {action!r}")
    return b"".join(out)


def _flow_mod(xid: int, body: bytes, cookie: int, cookie_mask: int, table: int, command: int,
              idle_timeout: int, priority: int, out_port: int, out_group: int,
              flags: int) -> bytes:
    return FLOW_MOD.pack(VERSION, OFPT_FLOW_MOD, FLOW_MOD.size + len(body), xid, cookie,
                         cookie_mask, table, command, idle_timeout, 0, priority,
                         OFP_NO_BUFFER, out_port, out_group, flags) + body


def encode(msg, xid: int, kp_switch: bool) -> bytes:
    """One pipeline message as one OpenFlow message (b"" for what this switch ignores)."""
    if isinstance(msg, FlowAdd):
        body = encode_match(msg.match)
        if msg.actions:
            acts = encode_actions(msg.actions)
            body += struct.pack("!HH4x", OFPIT_APPLY_ACTIONS, 8 + len(acts)) + acts
        if msg.goto is not None:
            body += GOTO_TABLE.pack(OFPIT_GOTO_TABLE, GOTO_TABLE.size, msg.goto)
        return _flow_mod(xid, body, msg.cookie, 0, msg.table, OFPFC_ADD, msg.idle_timeout,
                         msg.priority, 0, 0, OFPFF_SEND_FLOW_REM if msg.notify_removed else 0)
    if isinstance(msg, FlowDelete):
        return _flow_mod(xid, encode_match(msg.match), msg.cookie, msg.cookie_mask,
                         OFPTT_ALL if msg.table is None else msg.table, OFPFC_DELETE, 0,
                         OFP_DEFAULT_PRIORITY, OFPP_ANY if msg.out_port is None else msg.out_port,
                         OFPG_ANY, 0)
    if isinstance(msg, PacketOut):
        acts = encode_actions(msg.actions)
        in_port = OFPP_CONTROLLER if msg.in_port is None else msg.in_port
        return PACKET_OUT.pack(VERSION, OFPT_PACKET_OUT,
                               PACKET_OUT.size + len(acts) + len(msg.data), xid,
                               OFP_NO_BUFFER, in_port, len(acts)) + acts + msg.data
    if isinstance(msg, FlowStatsRequest):
        empty = encode_match(())
        return FLOW_STATS_REQUEST.pack(
            VERSION, OFPT_MULTIPART_REQUEST, FLOW_STATS_REQUEST.size + len(empty), xid,
            OFPMP_FLOW, 0, OFPTT_ALL if msg.table is None else msg.table, OFPP_ANY, OFPG_ANY,
            msg.cookie, msg.cookie_mask) + empty
    if isinstance(msg, SetCacheBuckets):
        return _experimenter(xid, KP_SET_BUCKETS, struct.pack("!I", msg.buckets), kp_switch)
    if isinstance(msg, CacheStatsRequest):
        return _experimenter(xid, KP_CACHE_STATS_REQUEST, b"", kp_switch)
    raise TypeError(f"not a pipeline message: {msg!r}")


def _experimenter(xid: int, exp_type: int, data: bytes, kp_switch: bool) -> bytes:
    if not kp_switch:
        return b""
    return EXPERIMENTER.pack(VERSION, OFPT_EXPERIMENTER, EXPERIMENTER.size + len(data), xid,
                             KP_EXPERIMENTER, exp_type) + data


def barrier_request(xid: int) -> bytes:
    return HEADER.pack(VERSION, OFPT_BARRIER_REQUEST, HEADER.size, xid)


def encode_batch(messages: Iterable, next_xid: Callable[[], int], kp_switch: bool) -> bytes:
    """A batch of pipeline messages as one buffer. A delete is followed by a barrier: it
    must be done before the adds that come after it."""
    out = []
    for msg in messages:
        data = encode(msg, next_xid(), kp_switch)
        if data:
            out.append(data)
        if isinstance(msg, FlowDelete):
            out.append(barrier_request(next_xid()))
    return b"".join(out)


def decode_cache_stats(data: bytes) -> dict:
    count = min(len(data) // 8, len(CACHE_STATS_FIELDS))
    values = struct.unpack_from(f"!{count}Q", data)
    return dict(zip(CACHE_STATS_FIELDS, values))


def match_dict(match) -> dict:
    """A Ryu OFPMatch (from a flow-removed or a flow-stats reply) as the pipeline's dict."""
    return dict(match.items())
