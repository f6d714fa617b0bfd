"""kp_app's OpenFlow 1.3 messages on the wire: kp_app.pipeline data -> bytes.

Packed with struct, not built as Ryu message objects: a new session sends two flow-mods
and a packet-out, and building and serializing them with Ryu cost about 270 µs, four
times kp's own work for the session. tests/unit/test_ofmsg.py checks every kind of
message against Ryu's encoding, byte for byte. A batch goes out as one buffer, so the
switch gets a session's messages in one write.
"""
import socket
import struct
from typing import Callable, Iterable, Optional

from kp_app.lb_pipeline import KP_LB
from kp_app.pipeline import (CacheStatsRequest, ConntrackFlush, FlowAdd, FlowDelete,
                             FlowStatsRequest, LbConf, LbFlush, LbSessionsRequest,
                             LbStatsRequest, LbVip, LbVipDelete, PacketOut, SetCacheBuckets)
from kp_proto import experimenter as kpexp
from kp_proto import lb as kplb

# kp's experimenter messages to kp-switch: defined once, in kp_proto.experimenter.
KP_EXPERIMENTER = kpexp.KP_EXPERIMENTER_ID
KP_SET_BUCKETS, KP_CACHE_STATS_REQUEST, KP_CACHE_STATS_REPLY = (
    kpexp.KP_SET_BUCKETS, kpexp.KP_CACHE_STATS_REQUEST, kpexp.KP_CACHE_STATS_REPLY)

VERSION = 4
OFPT_EXPERIMENTER, OFPT_PACKET_OUT, OFPT_FLOW_MOD = 4, 13, 14
OFPT_MULTIPART_REQUEST, OFPT_BARRIER_REQUEST = 18, 20
OFPFC_ADD, OFPFC_DELETE, OFPFC_DELETE_STRICT = 0, 3, 4
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
ACTION_EXPERIMENTER = struct.Struct("!HHI")
GOTO_TABLE = struct.Struct("!HHB3x")

# OXM name -> (field number, value length): the fields kp's pipeline matches and sets.
# Open vSwitch's own fields (registers, conntrack state) are of its NXM_1 class, in
# NXM_FIELDS; the pipeline uses them only on Open vSwitch (kp_app.ct_pipeline).
OXM_FIELDS = {
    "in_port": (0, 4), "eth_dst": (3, 6), "eth_src": (4, 6), "eth_type": (5, 2),
    "ip_proto": (10, 1), "ipv4_src": (11, 4), "ipv4_dst": (12, 4),
    "tcp_src": (13, 2), "tcp_dst": (14, 2), "udp_src": (15, 2), "udp_dst": (16, 2),
    "sctp_src": (17, 2), "sctp_dst": (18, 2),
    "icmpv4_type": (19, 1), "icmpv4_code": (20, 1), "arp_op": (21, 2),
    "arp_spa": (22, 4), "arp_tpa": (23, 4), "arp_sha": (24, 6), "arp_tha": (25, 6),
    "ipv6_src": (26, 16), "ipv6_dst": (27, 16), "icmpv6_type": (29, 1), "icmpv6_code": (30, 1),
    "ipv6_nd_target": (31, 16),
}
NXM_1 = 0x0001
NXM_FIELDS = {"reg0": (0, 4), "reg1": (1, 4), "ct_state": (105, 4)}

# Open vSwitch's action extensions (include/openflow/nicira-ext.h), for its conntrack.
NX_VENDOR_ID = 0x00002320
OFPAT_EXPERIMENTER = 0xFFFF
NXAST_RESUBMIT_TABLE, NXAST_MULTIPATH, NXAST_CT, NXAST_NAT = 14, 10, 35, 36
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3
NX_MP_ALG_MODULO_N = 0
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF
NX_NAT_F_DST = 2
NX_NAT_RANGE_IPV4_MIN, NX_NAT_RANGE_IPV6_MIN, NX_NAT_RANGE_PROTO_MIN = 1, 4, 16
OFPP_IN_PORT = 0xFFFFFFF8
NX_HEADER = struct.Struct("!HHIH")
NX_MULTIPATH = struct.Struct("!HH2xHHI2xHI")
NX_CT = struct.Struct("!HIHB3xH")
NX_NAT = struct.Struct("!2xHH")
NX_RESUBMIT_TABLE = struct.Struct("!HB3x")
NXT_CT_FLUSH = 32
NXT_CT_ORIG_TUPLE, NXT_CT_REPLY_TUPLE, NXT_CT_ZONE_ID = 0, 1, 2
NXT_CT_TUPLE_SRC, NXT_CT_TUPLE_DST, NXT_CT_TUPLE_SRC_PORT, NXT_CT_TUPLE_DST_PORT = 0, 1, 2, 3


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


def _header(oxm_class: int, number: int, length: int, has_mask: int) -> int:
    return (oxm_class << 16) | (number << 9) | (has_mask << 8) | (length << has_mask)


# name -> (value length, OXM header, OXM header with a mask, sort key), made once: a new
# session's two flow-mods look up some twenty fields.
_FIELDS = {name: (length, _header(oxm_class, number, length, 0),
                  _header(oxm_class, number, length, 1), oxm_class << 7 | number)
           for oxm_class, table in ((OFPXMC_OPENFLOW_BASIC, OXM_FIELDS), (NXM_1, NXM_FIELDS))
           for name, (number, length) in table.items()}


def _field(name: str):
    """(value length, OXM header, masked OXM header, sort key) of a field kp uses."""
    try:
        return _FIELDS[name]
    except KeyError:
        raise ValueError(f"unknown OXM field {name!r}") from None


def _oxm_header(name: str, has_mask: int = 0) -> int:
    return _field(name)[1 + has_mask]


def _oxm(name: str, value) -> bytes:
    length, header, masked_header, _ = _field(name)
    if isinstance(value, tuple):
        body = _value(name, length, value[0]) + _value(name, length, value[1])
        header = masked_header
    else:
        body = _value(name, length, value)
    return header.to_bytes(4, "big") + body


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def encode_match(items: Iterable) -> bytes:
    """An OXM ofp_match, fields in OXM order (prerequisites first), as Ryu orders them."""
    fields = sorted(items, key=lambda item: _field(item[0])[3])
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
        elif action[0] in _NX_ACTIONS:
            out.append(_NX_ACTIONS[action[0]](*action[1:]))
        elif action[0] == KP_LB:
            data = kplb.encode_lb_action(action[1])
            out.append(ACTION_EXPERIMENTER.pack(OFPAT_EXPERIMENTER, 8 + len(data),
                                                KP_EXPERIMENTER) + data)
        else:
            raise ValueError(f"unknown action {action!r}")
    return b"".join(out)


def _nx_action(subtype: int, body: bytes) -> bytes:
    length = NX_HEADER.size + len(body)
    return _pad8(NX_HEADER.pack(OFPAT_EXPERIMENTER, length + -length % 8, NX_VENDOR_ID,
                                subtype) + body)


def _multipath(basis: int, n_links: int) -> bytes:
    """multipath(symmetric_l3l4+udp, basis, modulo_n, n_links, 0, reg0[0..15])."""
    return _nx_action(NXAST_MULTIPATH, NX_MULTIPATH.pack(
        NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP, basis, NX_MP_ALG_MODULO_N, n_links - 1, 0,
        15, _oxm_header("reg0")))


def _resubmit(table: int) -> bytes:
    return _nx_action(NXAST_RESUBMIT_TABLE, NX_RESUBMIT_TABLE.pack(OFPP_IN_PORT & 0xFFFF,
                                                                   table))


def _nat(nat: tuple) -> bytes:
    """("nat",): apply a tracked connection's translation; ("dnat", address, port):
    translate a new one's destination (port 0: keep the port)."""
    if nat[0] == "nat":
        return _nx_action(NXAST_NAT, NX_NAT.pack(0, 0))
    _, address, port = nat
    packed = _value("nat", 4 if ":" not in address else 16, address)
    present = NX_NAT_RANGE_IPV4_MIN if len(packed) == 4 else NX_NAT_RANGE_IPV6_MIN
    if port:
        present |= NX_NAT_RANGE_PROTO_MIN
        packed += port.to_bytes(2, "big")
    return _nx_action(NXAST_NAT, NX_NAT.pack(NX_NAT_F_DST, present) + packed)


def _ct(commit: bool, zone: int, table, nat) -> bytes:
    """ct(commit?, zone=Z, table=T?, nat...?)."""
    body = NX_CT.pack(NX_CT_F_COMMIT if commit else 0, 0, zone,
                      NX_CT_RECIRC_NONE if table is None else table, 0)
    return _nx_action(NXAST_CT, body + (_nat(nat) if nat else b""))


_NX_ACTIONS = {"multipath": _multipath, "resubmit": _resubmit, "ct": _ct}


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
        strict = msg.priority is not None
        return _flow_mod(xid, encode_match(msg.match), msg.cookie, msg.cookie_mask,
                         OFPTT_ALL if msg.table is None else msg.table,
                         OFPFC_DELETE_STRICT if strict else OFPFC_DELETE, 0,
                         msg.priority if strict else OFP_DEFAULT_PRIORITY,
                         OFPP_ANY if msg.out_port is None else msg.out_port, OFPG_ANY, 0)
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
    if isinstance(msg, ConntrackFlush):
        return _ct_flush(xid, msg, kp_switch)
    if isinstance(msg, SetCacheBuckets):
        return _experimenter(xid, KP_SET_BUCKETS, kpexp.encode_set_buckets(msg.buckets),
                             kp_switch)
    if isinstance(msg, CacheStatsRequest):
        return _experimenter(xid, KP_CACHE_STATS_REQUEST, b"", kp_switch)
    if isinstance(msg, _LB_MESSAGES):
        return _lb(xid, msg) if kp_switch else b""
    raise TypeError(f"not a pipeline message: {msg!r}")


_LB_MESSAGES = (LbConf, LbVip, LbVipDelete, LbFlush, LbStatsRequest, LbSessionsRequest)


def _lb(xid: int, msg) -> bytes:
    """kp-switch's load balancer messages (kp_proto.lb). A VIP is several messages, its
    table and pod chunks then the commit, all with the one xid: an error names the VIP."""
    if isinstance(msg, LbVip):
        parts = kplb.encode_vip(msg.vip_id, msg.version, msg.table, msg.pods, msg.basis)
    elif isinstance(msg, LbConf):
        parts = [(kplb.KP_LB_CONF, kplb.encode_conf(msg.buckets, msg.tcp_established,
                                                   msg.tcp_closing, msg.tcp_opening,
                                                   msg.udp, msg.hairpin4, msg.hairpin6))]
    elif isinstance(msg, LbVipDelete):
        parts = [(kplb.KP_LB_VIP_DELETE, kplb.encode_vip_delete(msg.vip_id))]
    elif isinstance(msg, LbFlush):
        parts = [(kplb.KP_LB_FLUSH, kplb.encode_flush(msg.vip_id, msg.pod))]
    elif isinstance(msg, LbSessionsRequest):
        parts = [(kplb.KP_LB_SESSIONS_REQUEST, kplb.encode_sessions_request(msg.most))]
    else:
        parts = [(kplb.KP_LB_STATS_REQUEST, kplb.encode_stats_request(msg.first_vip_id))]
    return b"".join(_experimenter(xid, exp_type, data, True) for exp_type, data in parts)


def _experimenter(xid: int, exp_type: int, data: bytes, kp_switch: bool) -> bytes:
    if not kp_switch:
        return b""
    return EXPERIMENTER.pack(VERSION, OFPT_EXPERIMENTER, EXPERIMENTER.size + len(data), xid,
                             KP_EXPERIMENTER, exp_type) + data


def _prop(kind: int, value: bytes) -> bytes:
    """An OpenFlow property (type, length, value, padded to 8 bytes)."""
    return _pad8(struct.pack("!HH", kind, 4 + len(value)) + value)


def _ct_address(address: str) -> bytes:
    """NXT_CT_FLUSH's addresses are IPv6, IPv4 mapped into it."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address)
    return bytes(10) + b"\xff\xff" + socket.inet_pton(socket.AF_INET, address)


def _ct_tuple(kind: int, address: Optional[str], port: int, address_type: int,
              port_type: int) -> bytes:
    if address is None and not port:
        return b""
    inner = b"" if address is None else _prop(address_type, _ct_address(address))
    if port:
        inner += _prop(port_type, port.to_bytes(2, "big"))
    return _prop(kind, bytes(4) + inner)     # nested properties start 8-byte aligned


def _ct_flush(xid: int, msg: ConntrackFlush, kp_switch: bool) -> bytes:
    if kp_switch:
        return b""
    body = struct.pack("!II", NX_VENDOR_ID, NXT_CT_FLUSH) + struct.pack("!B7x", msg.proto)
    body += _ct_tuple(NXT_CT_ORIG_TUPLE, msg.orig_dst, msg.orig_dst_port,
                      NXT_CT_TUPLE_DST, NXT_CT_TUPLE_DST_PORT)
    body += _ct_tuple(NXT_CT_REPLY_TUPLE, msg.reply_src, msg.reply_src_port,
                      NXT_CT_TUPLE_SRC, NXT_CT_TUPLE_SRC_PORT)
    body += _prop(NXT_CT_ZONE_ID, msg.zone.to_bytes(2, "big"))
    return HEADER.pack(VERSION, OFPT_EXPERIMENTER, HEADER.size + len(body), xid) + body


def barrier_request(xid: int) -> bytes:
    return HEADER.pack(VERSION, OFPT_BARRIER_REQUEST, HEADER.size, xid)


def encode_batch(messages: Iterable, next_xid: Callable[[], int], kp_switch: bool,
                 sent: Optional[list] = None, barrier: bool = False) -> bytes:
    """A batch of pipeline messages as one buffer. A delete is followed by a barrier: it
    must be done before the adds that come after it. `barrier`: one more at the end (a
    switch answers it once every message of the batch is done, refused or not).
    `sent`: gets (xid, message) of each message that went out, in order, a barrier as
    (xid, None), so that an OFPT_ERROR's xid names what it refuses (kp_app.refusals)."""
    out = []
    record = sent.append if sent is not None else (lambda pair: None)
    fenced = True       # nothing since the last barrier
    for msg in messages:
        xid = next_xid()
        data = encode(msg, xid, kp_switch)
        if data:
            out.append(data)
            record((xid, msg))
            fenced = False
        if isinstance(msg, FlowDelete):
            xid = next_xid()
            out.append(barrier_request(xid))
            record((xid, None))
            fenced = True
    if barrier and not fenced:
        xid = next_xid()
        out.append(barrier_request(xid))
        record((xid, None))
    return b"".join(out)


def decode_cache_stats(data: bytes) -> dict:
    """A KP_CACHE_STATS_REPLY's figures ({} for a reply too short to hold them)."""
    try:
        return kpexp.decode_cache_stats(data)
    except ValueError:
        return {}


def decode_lb_stats(data: bytes):
    """A KP_LB_STATS_REPLY's (totals, VIP records, next VIP id to ask for), or None
    for a reply that does not decode (kp_proto.lb.decode_stats_reply)."""
    try:
        return kplb.decode_stats_reply(data)
    except ValueError:
        return None


def flow_from_stats(stats) -> FlowAdd:
    """A flow as a switch reports it (a Ryu OFPFlowStats) in the pipeline's terms, so that
    it compares equal to the FlowAdd that made it. An action kp never sends decodes to
    something no FlowAdd holds: such a flow is never taken for one of kp's."""
    actions, goto = [], None
    for instruction in stats.instructions:
        if hasattr(instruction, "actions"):
            actions += [_action_from_ryu(a) for a in instruction.actions]
        elif hasattr(instruction, "table_id"):
            goto = instruction.table_id
    return FlowAdd(stats.table_id, stats.priority, tuple(sorted(match_dict(stats.match).items())),
                   tuple(actions), goto, stats.cookie, stats.idle_timeout,
                   bool(stats.flags & OFPFF_SEND_FLOW_REM))


def _action_from_ryu(action) -> tuple:
    name = type(action).__name__
    if name == "OFPActionOutput":
        return ("output", action.port)
    if name == "OFPActionSetField":
        return ("set_field", action.key, action.value)
    if name == "NXActionMultipath":
        return ("multipath", action.basis, action.max_link + 1)
    if name == "NXActionResubmitTable":
        return ("resubmit", action.table_id)
    if name == "OFPActionExperimenterUnknown" and action.experimenter == KP_EXPERIMENTER:
        try:
            return (KP_LB, kplb.decode_lb_action(bytes(action.data or b"")))
        except ValueError:
            return ("unknown", name)
    if name == "NXActionCT":
        table = None if action.recirc_table == NX_CT_RECIRC_NONE else action.recirc_table
        nat = None
        if len(action.actions) == 1 and type(action.actions[0]).__name__ == "NXActionNAT":
            n = action.actions[0]
            if not n.flags and not n.range_ipv4_min and not n.range_ipv6_min:
                nat = ("nat",)
            elif n.flags & NX_NAT_F_DST:
                nat = ("dnat", n.range_ipv4_min or n.range_ipv6_min, n.range_proto_min or 0)
        return ("ct", bool(action.flags & NX_CT_F_COMMIT), action.zone_ofs_nbits, table, nat)
    return ("unknown", name)


def match_dict(match) -> dict:
    """A Ryu OFPMatch (from a flow-removed or a flow-stats reply) as the pipeline's dict."""
    return dict(match.items())
