"""OpenFlow 1.3 on the wire, from the switch's side.

Ryu's `ofproto_v1_3_parser` decodes what switches send and encodes what controllers
send; a switch needs the reverse.  This module reuses Ryu's pieces wherever they fit
(OFPFlowMod's parser, OFPMatch / OFPInstruction / OFPAction / OFPBucket parsers and
serializers, the ofproto constants and pack strings) and packs the rest with struct.

Decoding raises OFError with the code the spec prescribes for malformed requests, after
checking instruction and action lists itself (Ryu asserts on unknown types).
"""
import struct

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from .errors import OFError

VERSION = ofp.OFP_VERSION
HEADER = struct.Struct("!BBHI")
MAX_MSG = 0xFFFF
_KNOWN_INSTRUCTIONS = {ofp.OFPIT_GOTO_TABLE, ofp.OFPIT_WRITE_METADATA, ofp.OFPIT_WRITE_ACTIONS,
                       ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS, ofp.OFPIT_METER,
                       ofp.OFPIT_EXPERIMENTER}


class Raw:
    """A decoded request: type, xid, the raw bytes and whatever fields it has."""

    def __init__(self, type_, xid, data, **fields):
        self.type = type_
        self.xid = xid
        self.data = data
        self.__dict__.update(fields)


# -- decoding -------------------------------------------------------------------------

def _tlvs(buf, offset, end, min_left, err_type, bad_len, what):
    """(type, offset, length) of each type-length item in buf[offset:end], after the
    length checks both action and instruction lists need."""
    while offset < end:
        if end - offset < min_left:
            raise OFError(err_type, bad_len)
        type_, len_ = struct.unpack_from("!HH", buf, offset)
        if len_ < 8 or len_ % 8 or offset + len_ > end:
            raise OFError(err_type, bad_len, "%s len %d" % (what, len_))
        yield type_, offset, len_
        offset += len_


def check_actions(buf, offset, end):
    """Refuse unknown action types and bad lengths before Ryu parses the list."""
    for type_, _, _ in _tlvs(buf, offset, end, 8, ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_LEN,
                             "action"):
        if type_ == ofp.OFPAT_EXPERIMENTER:
            raise OFError(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_EXPERIMENTER)
        if type_ not in parser.OFPAction._ACTION_TYPES:
            raise OFError(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE, "action type %d" % type_)


def check_instructions(buf, offset, end):
    for type_, at, len_ in _tlvs(buf, offset, end, 4, ofp.OFPET_BAD_INSTRUCTION,
                                 ofp.OFPBIC_BAD_LEN, "instruction"):
        if type_ not in _KNOWN_INSTRUCTIONS:
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST, "instruction %d" % type_)
        if type_ in (ofp.OFPIT_METER, ofp.OFPIT_EXPERIMENTER):
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST, "instruction %d" % type_)
        if type_ in (ofp.OFPIT_WRITE_ACTIONS, ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS):
            check_actions(buf, at + 8, at + len_)


def check_match(buf, offset, end):
    """Returns the offset after the (padded) match."""
    if end - offset < 4:
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN)
    type_, len_ = struct.unpack_from("!HH", buf, offset)
    if type_ != ofp.OFPMT_OXM:
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_TYPE, "match type %d" % type_)
    padded = (len_ + 7) // 8 * 8
    if len_ < 4 or offset + padded > end:
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN)
    return offset + padded


def parse_match(buf, offset, end):
    after = check_match(buf, offset, end)
    try:
        return parser.OFPMatch.parser(buf, offset), after
    except Exception as e:  # unknown experimenter OXM classes, bad lengths
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, str(e))


def _bad_len(text=""):
    return OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, text)


def parse_actions(buf, offset, end):
    check_actions(buf, offset, end)
    return _decode_list(_parsed_actions, parser.OFPAction, buf, offset, end)


# -- the fast decoders ----------------------------------------------------------------
# Ryu's parsers turn every OXM value into its "user" form (dotted or colon strings via
# netaddr) that Match then turns back into ints, and build objects for every action of
# every flow-mod.  For a new-session workload that is most of a flow-mod's cost, so:
# - a match whose OXMs are all plain OpenFlow-basic fields of kp's (FIELDS), with the
#   exact value (and mask) length, is read straight into the (name, int | (int, int))
#   items Match.from_user takes, in wire order as Ryu gives them (anything else, e.g.
#   an unknown or experimenter field or an odd length, goes through Ryu as before, so
#   the errors are Ryu's path's);
# - instruction and action lists are parsed by Ryu once per distinct byte string (the
#   controller sends the same few lists again and again: a pod's DNAT, a client's SNAT)
#   and the parsed objects are shared.  Nothing changes them after parsing (serializing
#   them for flow stats writes the lengths they already have).

def _oxm_table():
    from .match import FIELDS
    table = {}
    for f in ofp.oxm_types:
        name = getattr(f, "name", None)
        num = getattr(f, "num", None)
        size = getattr(getattr(f, "type", None), "size", None)
        if name in FIELDS and isinstance(num, int) and num >> 7 == ofp.OFPXMC_OPENFLOW_BASIC and size:
            table[num & 0x7F] = (name, size)
    return table


_OXM_BASIC = _oxm_table()
_U32 = struct.Struct("!I")
_HH = struct.Struct("!HH")


class FastMatch:
    """What Match.from_ryu reads of a Ryu OFPMatch: `_fields2`, with int values."""

    __slots__ = ("_fields2",)

    def __init__(self, items):
        self._fields2 = items


def fast_match_items(buf, offset):
    """The OXM items of the ofp_match at `offset` as ints, or None when Ryu should parse
    it (the caller has checked the match header and that it fits in the message)."""
    (length,) = struct.unpack_from("!H", buf, offset + 2)
    off, end = offset + 4, offset + length
    items = []
    basic = _OXM_BASIC
    frm = int.from_bytes
    while off < end:
        if end - off < 4:
            return None
        (header,) = _U32.unpack_from(buf, off)
        if header >> 16 != ofp.OFPXMC_OPENFLOW_BASIC:
            return None
        f = basic.get((header >> 9) & 0x7F)
        if f is None:
            return None
        name, size = f
        hasmask = header & 0x100
        oxm_len = header & 0xFF
        if oxm_len != (2 * size if hasmask else size) or off + 4 + oxm_len > end:
            return None
        v = frm(buf[off + 4:off + 4 + size], "big")
        if hasmask:
            items.append((name, (v, frm(buf[off + 4 + size:off + 4 + oxm_len], "big"))))
        else:
            items.append((name, v))
        off += 4 + oxm_len
    return items


_PARSED_MAX = 4096
_parsed_instructions = {}
_parsed_actions = {}


def _remember(cache, key, value):
    if len(cache) >= _PARSED_MAX:
        cache.clear()
    cache[key] = value
    return value


def parse_instructions(buf, offset, end):
    """Ryu OFPInstruction objects for buf[offset:end] (checked by check_instructions)."""
    return _decode_list(_parsed_instructions, parser.OFPInstruction, buf, offset, end)


def _decode_list(cache, cls, buf, offset, end):
    """Ryu objects of `cls` (OFPAction, OFPInstruction) packed in buf[offset:end],
    decoded once per distinct byte string."""
    key = bytes(buf[offset:end])
    got = cache.get(key)
    if got is not None:
        return list(got)
    out = []
    off = 0
    while off < len(key):
        item = cls.parser(key, off)
        out.append(item)
        off += item.len
    _remember(cache, key, tuple(out))
    return out


class FlowMod:
    """A decoded flow-mod: OFPFlowMod's attributes (match: a FastMatch)."""

    __slots__ = ("cookie", "cookie_mask", "table_id", "command", "idle_timeout",
                 "hard_timeout", "priority", "buffer_id", "out_port", "out_group", "flags",
                 "match", "instructions")


_FLOW_MOD0 = struct.Struct(ofp.OFP_FLOW_MOD_PACK_STR0)


def _decode_flow_mod(data, after, n):
    """A FlowMod, or None for Ryu's parser to do it."""
    items = fast_match_items(data, 48)
    if items is None:
        return None
    fm = FlowMod()
    (fm.cookie, fm.cookie_mask, fm.table_id, fm.command, fm.idle_timeout, fm.hard_timeout,
     fm.priority, fm.buffer_id, fm.out_port, fm.out_group, fm.flags) = _FLOW_MOD0.unpack_from(data, 8)
    fm.match = FastMatch(items)
    fm.instructions = parse_instructions(data, after, n) if after < n else []
    return fm


def decode(data):
    """A whole message (bytes) -> Raw with per-type fields; OFError when malformed."""
    version, type_, length, xid = HEADER.unpack_from(data)
    m = Raw(type_, xid, data, version=version)
    n = len(data)
    try:
        if type_ == ofp.OFPT_FLOW_MOD:
            if n < ofp.OFP_FLOW_MOD_SIZE:
                raise _bad_len()
            after = check_match(data, 48, n)
            check_instructions(data, after, n)
            try:
                m.msg = (length == n and _decode_flow_mod(data, after, n)) or \
                    parser.OFPFlowMod.parser(None, version, type_, length, xid, data)
            except OFError:
                raise
            except Exception as e:
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, str(e))
        elif type_ == ofp.OFPT_PACKET_OUT:
            if n < ofp.OFP_PACKET_OUT_SIZE:
                raise _bad_len()
            m.buffer_id, m.in_port, alen = struct.unpack_from(ofp.OFP_PACKET_OUT_PACK_STR, data, 8)
            if 24 + alen > n:
                raise _bad_len()
            m.actions = parse_actions(data, 24, 24 + alen)
            m.packet = bytes(data[24 + alen:])
        elif type_ == ofp.OFPT_GROUP_MOD:
            if n < ofp.OFP_GROUP_MOD_SIZE:
                raise _bad_len()
            command, gtype, gid = struct.unpack_from(ofp.OFP_GROUP_MOD_PACK_STR, data, 8)
            buckets, off = [], 16
            while off < n:
                if n - off < ofp.OFP_BUCKET_SIZE:
                    raise OFError(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_BUCKET)
                (blen,) = struct.unpack_from("!H", data, off)
                if blen < ofp.OFP_BUCKET_SIZE or off + blen > n:
                    raise OFError(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_BUCKET)
                check_actions(data, off + ofp.OFP_BUCKET_SIZE, off + blen)
                b = parser.OFPBucket.parser(data, off)
                buckets.append(b)
                off += blen
            m.msg = parser.OFPGroupMod(None, command, gtype, gid, buckets)
        elif type_ == ofp.OFPT_SET_CONFIG:
            if n < ofp.OFP_SWITCH_CONFIG_SIZE:
                raise _bad_len()
            m.flags, m.miss_send_len = struct.unpack_from("!HH", data, 8)
        elif type_ == ofp.OFPT_PORT_MOD:
            if n < ofp.OFP_PORT_MOD_SIZE:
                raise _bad_len()
            m.port_no, hw, m.config, m.mask, m.advertise = struct.unpack_from(ofp.OFP_PORT_MOD_PACK_STR, data, 8)
            m.hw_addr = ":".join("%02x" % c for c in hw)
        elif type_ == ofp.OFPT_TABLE_MOD:
            if n < ofp.OFP_TABLE_MOD_SIZE:
                raise _bad_len()
            m.table_id, m.config = struct.unpack_from(ofp.OFP_TABLE_MOD_PACK_STR, data, 8)
        elif type_ == ofp.OFPT_MULTIPART_REQUEST:
            if n < ofp.OFP_MULTIPART_REQUEST_SIZE:
                raise _bad_len()
            m.mp_type, m.flags = struct.unpack_from("!HH", data, 8)
            m.body = bytes(data[16:])
            _decode_mp_body(m)
        elif type_ == ofp.OFPT_EXPERIMENTER:
            if n < 16:
                raise _bad_len()
            m.experimenter, m.exp_type = struct.unpack_from("!II", data, 8)
            m.body = bytes(data[16:])
        elif type_ == ofp.OFPT_ROLE_REQUEST:
            if n < ofp.OFP_ROLE_REQUEST_SIZE:
                raise _bad_len()
            m.role, m.generation_id = struct.unpack_from(ofp.OFP_ROLE_REQUEST_PACK_STR, data, 8)
        elif type_ == ofp.OFPT_SET_ASYNC:
            if n < ofp.OFP_ASYNC_CONFIG_SIZE:
                raise _bad_len()
            m.masks = struct.unpack_from(ofp.OFP_ASYNC_CONFIG_PACK_STR, data, 8)
        elif type_ == ofp.OFPT_QUEUE_GET_CONFIG_REQUEST:
            if n < 16:
                raise _bad_len()
            (m.port,) = struct.unpack_from("!I", data, 8)
        elif type_ in (ofp.OFPT_ECHO_REQUEST, ofp.OFPT_ECHO_REPLY, ofp.OFPT_HELLO, ofp.OFPT_ERROR):
            m.body = bytes(data[8:])
    except OFError:
        raise
    except Exception as e:  # struct errors, Ryu's truncated messages
        raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "%s: %s" % (type(e).__name__, e))
    return m


def _decode_mp_body(m):
    body, t = m.body, m.mp_type
    if t in (ofp.OFPMP_FLOW, ofp.OFPMP_AGGREGATE):
        if len(body) < 32 + 8:
            raise _bad_len()
        (m.table_id, m.out_port, m.out_group, m.cookie, m.cookie_mask) = struct.unpack_from(
            ofp.OFP_FLOW_STATS_REQUEST_0_PACK_STR, body, 0)
        m.match, _ = parse_match(body, 32, len(body))
    elif t in (ofp.OFPMP_PORT_STATS, ofp.OFPMP_GROUP):
        if len(body) < 8:
            raise _bad_len()
        (m.port_no,) = struct.unpack_from("!I", body, 0)
        m.group_id = m.port_no
    elif t == ofp.OFPMP_QUEUE:
        if len(body) < 8:
            raise _bad_len()
        m.port_no, m.queue_id = struct.unpack_from("!II", body, 0)
    elif t == ofp.OFPMP_EXPERIMENTER:
        if len(body) < 8:
            raise _bad_len()
        m.experimenter, m.exp_type = struct.unpack_from("!II", body, 0)


# -- encoding -------------------------------------------------------------------------

def message(type_, xid, body=b""):
    return HEADER.pack(VERSION, type_, 8 + len(body), xid & 0xFFFFFFFF) + body


def hello(xid=0, versions=(VERSION,)):
    bitmap = 0
    for v in versions:
        bitmap |= 1 << v
    elem = struct.pack("!HHI", ofp.OFPHET_VERSIONBITMAP, 8, bitmap)
    return message(ofp.OFPT_HELLO, xid, elem)


def error(xid, type_, code, data=b""):
    return message(ofp.OFPT_ERROR, xid, struct.pack("!HH", type_, code) + bytes(data[:64]))


def echo_reply(xid, body):
    return message(ofp.OFPT_ECHO_REPLY, xid, body)


def echo_request(xid, body=b""):
    return message(ofp.OFPT_ECHO_REQUEST, xid, body)


def features_reply(xid, dpid, n_buffers, n_tables, capabilities):
    return message(ofp.OFPT_FEATURES_REPLY, xid,
                   struct.pack(ofp.OFP_SWITCH_FEATURES_PACK_STR, dpid, n_buffers, n_tables, 0, capabilities, 0)[0:24])


def get_config_reply(xid, flags, miss_send_len):
    return message(ofp.OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", flags, miss_send_len))


def barrier_reply(xid):
    return message(ofp.OFPT_BARRIER_REPLY, xid)


def role_reply(xid, role, generation_id):
    return message(ofp.OFPT_ROLE_REPLY, xid, struct.pack(ofp.OFP_ROLE_REQUEST_PACK_STR, role, generation_id))


def get_async_reply(xid, masks):
    return message(ofp.OFPT_GET_ASYNC_REPLY, xid, struct.pack(ofp.OFP_ASYNC_CONFIG_PACK_STR, *masks))


def queue_get_config_reply(xid, port):
    return message(ofp.OFPT_QUEUE_GET_CONFIG_REPLY, xid, struct.pack("!I4x", port))


def experimenter(xid, experimenter_id, exp_type, data=b""):
    return message(ofp.OFPT_EXPERIMENTER, xid, struct.pack("!II", experimenter_id, exp_type) + data)


def match_bytes(ofpmatch):
    buf = bytearray()
    ofpmatch.serialize(buf, 0)
    return bytes(buf)


def instructions_bytes(instructions):
    buf = bytearray()
    for i in instructions:
        off = len(buf)
        i.serialize(buf, off)
    return bytes(buf)


_PACKET_IN = struct.Struct(ofp.OFP_PACKET_IN_PACK_STR)
_PI_MATCH_IN_PORT = struct.Struct("!HHII4x")           # type, len 12, OXM in_port, pad
_PI_MATCH_IN_PORT_METADATA = struct.Struct("!HHIIIQ")  # + OXM metadata (len 24, no pad)


def packet_in_match(in_port, metadata=0):
    """The ofp_match bytes of a packet-in: in_port, and metadata when not 0 (what
    match_bytes(OFPMatch(in_port=.., metadata=..)) gives, without building one)."""
    if metadata:
        return _PI_MATCH_IN_PORT_METADATA.pack(ofp.OFPMT_OXM, 24, ofp.OXM_OF_IN_PORT, in_port,
                                               ofp.OXM_OF_METADATA, metadata)
    return _PI_MATCH_IN_PORT.pack(ofp.OFPMT_OXM, 12, ofp.OXM_OF_IN_PORT, in_port)


def packet_in(buffer_id, total_len, reason, table_id, cookie, match, data):
    """`match`: a Ryu OFPMatch or its bytes (packet_in_match)."""
    body = _PACKET_IN.pack(buffer_id, total_len, reason, table_id, cookie)
    if not isinstance(match, (bytes, bytearray)):
        match = match_bytes(match)
    return message(ofp.OFPT_PACKET_IN, 0, body + match + b"\0\0" + data)


def flow_removed(entry, reason, now):
    dsec, dnsec = entry.duration(now)
    body = struct.pack(ofp.OFP_FLOW_REMOVED_PACK_STR0, entry.cookie, entry.priority, reason,
                       entry.table_id, dsec, dnsec, entry.idle_timeout, entry.hard_timeout,
                       entry.packet_count, entry.byte_count)
    return message(ofp.OFPT_FLOW_REMOVED, 0, body + match_bytes(entry.match.to_ryu()))


def port_bytes(port):
    hw = bytes(int(x, 16) for x in port.hw_addr.split(":"))
    feats = ofp.OFPPF_10GB_FD | ofp.OFPPF_COPPER
    return struct.pack(ofp.OFP_PORT_PACK_STR, port.port_no, hw, port.name.encode()[:15],
                       port.config, port.state, feats, 0, feats, feats,
                       port.speed_kbps, port.speed_kbps)


def port_status(reason, port):
    return message(ofp.OFPT_PORT_STATUS, 0, struct.pack("!B7x", reason) + port_bytes(port))


def multipart_replies(xid, mp_type, items, limit=0xFF00):
    """Multipart replies carrying `items` (bytes each), split with OFPMPF_REPLY_MORE."""
    msgs, cur, size = [], [], 0
    for item in items:
        if cur and size + len(item) > limit - 16:
            msgs.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += len(item)
    msgs.append(cur)
    out = []
    for i, chunk in enumerate(msgs):
        flags = ofp.OFPMPF_REPLY_MORE if i < len(msgs) - 1 else 0
        out.append(message(ofp.OFPT_MULTIPART_REPLY, xid,
                           struct.pack("!HH4x", mp_type, flags) + b"".join(chunk)))
    return out


def flow_stats_bytes(entry, now):
    dsec, dnsec = entry.duration(now)
    m = match_bytes(entry.match.to_ryu())
    ins = instructions_bytes(entry.instructions.raw)
    length = 48 + len(m) + len(ins)
    return struct.pack(ofp.OFP_FLOW_STATS_0_PACK_STR, length, entry.table_id, dsec, dnsec,
                       entry.priority, entry.idle_timeout, entry.hard_timeout, entry.flags,
                       entry.cookie, entry.packet_count, entry.byte_count) + m + ins


def aggregate_bytes(packets, nbytes, flows):
    return struct.pack(ofp.OFP_AGGREGATE_STATS_REPLY_PACK_STR, packets, nbytes, flows)


def table_stats_bytes(table_id, active, lookups, matched):
    return struct.pack(ofp.OFP_TABLE_STATS_PACK_STR, table_id, active, lookups, matched)


def port_stats_bytes(port_no, c, dsec, dnsec):
    return struct.pack(ofp.OFP_PORT_STATS_PACK_STR, port_no,
                       c.get("rx_packets", 0), c.get("tx_packets", 0),
                       c.get("rx_bytes", 0), c.get("tx_bytes", 0),
                       c.get("rx_dropped", 0), c.get("tx_dropped", 0),
                       c.get("rx_errors", 0), c.get("tx_errors", 0),
                       0, 0, 0, 0, dsec, dnsec)


def desc_bytes(mfr, hw, sw, serial, dp):
    return struct.pack(ofp.OFP_DESC_PACK_STR, mfr.encode(), hw.encode(), sw.encode(),
                       serial.encode(), dp.encode())


def group_desc_bytes(group):
    buf = bytearray()
    for b in group.buckets:
        b.raw.serialize(buf, len(buf))
    return struct.pack(ofp.OFP_GROUP_DESC_PACK_STR, 8 + len(buf), group.type, group.group_id) + bytes(buf)


def group_stats_bytes(group, ref_count, now):
    d = max(0.0, now - group.installed)
    counters = b"".join(struct.pack("!QQ", b.packet_count, b.byte_count) for b in group.buckets)
    return struct.pack(ofp.OFP_GROUP_STATS_PACK_STR, 40 + len(counters), group.group_id, ref_count,
                       group.packet_count, group.byte_count, int(d), int((d - int(d)) * 1e9)) + counters


def group_features_bytes(max_groups, actions_bitmap):
    types = (1 << ofp.OFPGT_ALL) | (1 << ofp.OFPGT_SELECT) | (1 << ofp.OFPGT_INDIRECT) | (1 << ofp.OFPGT_FF)
    caps = ofp.OFPGFC_SELECT_WEIGHT | ofp.OFPGFC_SELECT_LIVENESS | ofp.OFPGFC_CHAINING | ofp.OFPGFC_CHAINING_CHECKS
    return struct.pack(ofp.OFP_GROUP_FEATURES_PACK_STR, types, caps,
                       max_groups, max_groups, max_groups, max_groups,
                       actions_bitmap, actions_bitmap, actions_bitmap, actions_bitmap)


def _prop(type_, payload):
    length = 4 + len(payload)
    return struct.pack("!HH", type_, length) + payload + b"\0" * ((length + 7) // 8 * 8 - length)


def _oxm_header(name, hasmask):
    num, typ = ofp.oxm_get_field_info_by_name(name)
    size = typ.size * (2 if hasmask else 1)
    return struct.pack("!I", (num << 9) | (int(hasmask) << 8) | size)


def table_features_bytes(table_id, n_tables, max_entries, fields, settable, instructions, actions):
    """One ofp_table_features: what kp-switch supports, per table.

    `fields`: {name: maskable}; `settable`: names; `instructions`/`actions`: type codes.
    Experimenter OXMs (tcp_flags) are matched but not listed here."""
    basic = {n: m for n, m in fields.items() if n != "tcp_flags"}
    ins = [t for t in instructions if t != ofp.OFPIT_GOTO_TABLE or table_id < n_tables - 1]
    ins_ids = b"".join(struct.pack("!HH", t, 4) for t in ins)
    act_ids = b"".join(struct.pack("!HH", t, 4) for t in actions)
    nxt = bytes(range(table_id + 1, n_tables))
    match = b"".join(_oxm_header(n, m) for n, m in basic.items())
    wild = b"".join(_oxm_header(n, False) for n in basic)
    sets = b"".join(_oxm_header(n, False) for n in settable if n in basic)
    props = b"".join([
        _prop(ofp.OFPTFPT_INSTRUCTIONS, ins_ids), _prop(ofp.OFPTFPT_INSTRUCTIONS_MISS, ins_ids),
        _prop(ofp.OFPTFPT_NEXT_TABLES, nxt), _prop(ofp.OFPTFPT_NEXT_TABLES_MISS, nxt),
        _prop(ofp.OFPTFPT_WRITE_ACTIONS, act_ids), _prop(ofp.OFPTFPT_WRITE_ACTIONS_MISS, act_ids),
        _prop(ofp.OFPTFPT_APPLY_ACTIONS, act_ids), _prop(ofp.OFPTFPT_APPLY_ACTIONS_MISS, act_ids),
        _prop(ofp.OFPTFPT_MATCH, match), _prop(ofp.OFPTFPT_WILDCARDS, wild),
        _prop(ofp.OFPTFPT_WRITE_SETFIELD, sets), _prop(ofp.OFPTFPT_WRITE_SETFIELD_MISS, sets),
        _prop(ofp.OFPTFPT_APPLY_SETFIELD, sets), _prop(ofp.OFPTFPT_APPLY_SETFIELD_MISS, sets),
    ])
    head = struct.pack(ofp.OFP_TABLE_FEATURES_PACK_STR, 64 + len(props), table_id,
                       ("table%d" % table_id).encode(), 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
                       0, max_entries)
    return head + props
