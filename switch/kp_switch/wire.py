"""OpenFlow 1.3 on the wire, from the switch's side.

Ryu's `ofproto_v1_3_parser` decodes what switches send and encodes what controllers
send; a switch needs the reverse.  This module reuses Ryu's pieces wherever they fit
(OFPFlowMod's parser, OFPMatch / OFPInstruction / OFPAction / OFPBucket parsers and
serializers, the ofproto constants and pack strings) and packs the rest with struct.

Decoding raises OFError with the code the spec prescribes for malformed requests.  It
walks every list itself and checks each length before using it (see "decoding" below):
Ryu's list parsers trust the lengths they read, assert on unknown types and loop forever
on some lengths, so they are never handed a list, only single items already checked.

(Over 500 lines: one codec of one protocol, each message's decoder beside its encoder,
so that every length check is in one place.)
"""
import struct

from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from .errors import OFError

VERSION = ofp.OFP_VERSION
HEADER = struct.Struct("!BBHI")
_U32 = struct.Struct("!I")
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
# Every list on the wire (actions, instructions, OXM fields, buckets, hello elements) is
# walked here, and each item's declared length is checked before it is used to advance
# or handed to Ryu.  Ryu's own list parsers advance by the length of the object they
# built (an OUTPUT is always 16 bytes to them, a SET_FIELD whatever the wire says, 0
# included) and read past the item into whatever follows, so an action list with an
# OUTPUT that declares 32 bytes and hides a SET_FIELD of length 0 made them loop forever,
# allocating until memory ran out.  So Ryu parses only single items here, each from a
# copy of exactly its own bytes, after its length was checked against its type.

def _tlvs(buf, offset, end, min_left, err_type, bad_len, what):
    """(type, offset, length) of each type-length item in buf[offset:end]: each length at
    least 8, a multiple of 8 and within `end` (what action and instruction lists need)."""
    while offset < end:
        if end - offset < min_left:
            raise OFError(err_type, bad_len, "%d bytes left after the last %s" % (end - offset, what))
        type_, len_ = struct.unpack_from("!HH", buf, offset)
        if len_ < 8 or len_ % 8 or offset + len_ > end:
            raise OFError(err_type, bad_len, "%s type %d len %d" % (what, type_, len_))
        yield type_, offset, len_
        offset += len_


def _oxm_sizes():
    """{OXM class<<7 | field: value size} of every non-experimenter OXM Ryu knows."""
    return {f.num: f.type.size for f in ofp.oxm_types
            if isinstance(getattr(f, "num", None), int) and getattr(f.type, "size", None)}


_OXM_SIZE = _oxm_sizes()
_OXM_EXPERIMENTER_CLASS = 0xFFFF


def _bad_action(code, text=""):
    return OFError(ofp.OFPET_BAD_ACTION, code, text)


def _check_set_field(item):
    """A SET_FIELD action's bytes (length >= 8 already checked): one unmasked OXM of a
    known field with its exact value size, padded to the action's length."""
    (header,) = _U32.unpack_from(item, 4)
    oxm_len = header & 0xFF
    if oxm_len == 0 or (8 + oxm_len + 7) // 8 * 8 != len(item):
        raise _bad_action(ofp.OFPBAC_BAD_SET_LEN, "set_field len %d, OXM len %d" % (len(item), oxm_len))
    if header >> 16 == _OXM_EXPERIMENTER_CLASS:
        raise _bad_action(ofp.OFPBAC_BAD_SET_TYPE, "experimenter OXM %#x" % header)
    if header & 0x100:
        raise _bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, "masked set_field")
    size = _OXM_SIZE.get(header >> 9)
    if size is None:
        raise _bad_action(ofp.OFPBAC_BAD_SET_TYPE, "OXM %#x" % header)
    if oxm_len != size:
        raise _bad_action(ofp.OFPBAC_BAD_SET_LEN, "OXM %#x len %d, want %d" % (header, oxm_len, size))


def _kp_action(item):
    """kp's experimenter action (kp_proto.lb: kp_lb), as Ryu's OFPActionExperimenterUnknown;
    OFError for any other experimenter or a wrong length or subtype."""
    if len(item) < 8:
        raise _bad_action(ofp.OFPBAC_BAD_LEN, "experimenter action len %d" % len(item))
    (experimenter,) = struct.unpack_from("!I", item, 4)
    if experimenter != KP_EXPERIMENTER_ID:
        raise _bad_action(ofp.OFPBAC_BAD_EXPERIMENTER, "experimenter %#x" % experimenter)
    if len(item) != 8 + kplb.ACTION.size:
        raise _bad_action(ofp.OFPBAC_BAD_LEN, "kp action len %d, want %d"
                          % (len(item), 8 + kplb.ACTION.size))
    try:
        kplb.decode_lb_action(item[8:])
    except ValueError as e:
        raise _bad_action(ofp.OFPBAC_BAD_EXP_TYPE, str(e))
    action = parser.OFPActionExperimenterUnknown(experimenter, data=item[8:])
    action.len = len(item)
    return action


def decode_actions(buf, offset, end):
    """The Ryu OFPAction objects of the action list buf[offset:end]; OFError
    (OFPET_BAD_ACTION) for an unknown type or any length that is wrong for its type."""
    out = []
    for type_, at, len_ in _tlvs(buf, offset, end, 8, ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_LEN,
                                 "action"):
        if type_ == ofp.OFPAT_EXPERIMENTER:
            out.append(_kp_action(bytes(buf[at:at + len_])))
            continue
        cls = parser.OFPAction._ACTION_TYPES.get(type_)
        if cls is None:
            raise _bad_action(ofp.OFPBAC_BAD_TYPE, "action type %d" % type_)
        item = bytes(buf[at:at + len_])
        if type_ == ofp.OFPAT_SET_FIELD:
            _check_set_field(item)
        elif len_ != cls.cls_action_len:
            raise _bad_action(ofp.OFPBAC_BAD_LEN, "action type %d len %d, want %d"
                              % (type_, len_, cls.cls_action_len))
        try:
            action = cls.parser(item, 0)
        except Exception as e:  # a value Ryu cannot turn into its user form
            raise _bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT if type_ == ofp.OFPAT_SET_FIELD
                              else ofp.OFPBAC_BAD_ARGUMENT, "%s: %s" % (type(e).__name__, e))
        action.len = len_
        out.append(action)
    return out


# Instruction lengths (OpenFlow 1.3 section 7.2.4): exact for the fixed ones, a minimum
# for the action lists.
_INSTRUCTION_LEN = {ofp.OFPIT_GOTO_TABLE: ofp.OFP_INSTRUCTION_GOTO_TABLE_SIZE,
                    ofp.OFPIT_WRITE_METADATA: ofp.OFP_INSTRUCTION_WRITE_METADATA_SIZE}
_ACTION_INSTRUCTIONS = (ofp.OFPIT_WRITE_ACTIONS, ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS)


def _decode_instructions(buf, offset, end):
    out = []
    for type_, at, len_ in _tlvs(buf, offset, end, 4, ofp.OFPET_BAD_INSTRUCTION,
                                 ofp.OFPBIC_BAD_LEN, "instruction"):
        if type_ not in _KNOWN_INSTRUCTIONS:
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST, "instruction %d" % type_)
        if type_ in (ofp.OFPIT_METER, ofp.OFPIT_EXPERIMENTER):
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST, "instruction %d" % type_)
        if type_ in _ACTION_INSTRUCTIONS:
            ins = parser.OFPInstructionActions(
                type_, decode_actions(buf, at + ofp.OFP_INSTRUCTION_ACTIONS_SIZE, at + len_))
        else:
            if len_ != _INSTRUCTION_LEN[type_]:
                raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN,
                              "instruction %d len %d, want %d" % (type_, len_, _INSTRUCTION_LEN[type_]))
            ins = parser.OFPInstruction._INSTRUCTION_TYPES[type_].parser(bytes(buf[at:at + len_]), 0)
        ins.len = len_
        out.append(ins)
    return out


def _bad_match_len(text):
    return OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, text)


def _match_extent(buf, offset, end):
    """The offset after the (padded) ofp_match at `offset`, its header checked."""
    if end - offset < 4:
        raise _bad_match_len("%d bytes for a match" % (end - offset))
    type_, len_ = struct.unpack_from("!HH", buf, offset)
    if type_ != ofp.OFPMT_OXM:
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_TYPE, "match type %d" % type_)
    padded = (len_ + 7) // 8 * 8
    if len_ < 4 or offset + padded > end:
        raise _bad_match_len("match len %d in %d bytes" % (len_, end - offset))
    return offset + padded


def _check_oxms(buf, offset):
    """Every OXM of the ofp_match at `offset` (header checked) fits, and has its field's
    length (experimenter OXMs: room for the experimenter id and a value)."""
    (len_,) = struct.unpack_from("!H", buf, offset + 2)
    off, stop = offset + 4, offset + len_
    while off < stop:
        if stop - off < 4:
            raise _bad_match_len("%d bytes left after the last OXM" % (stop - off))
        (header,) = _U32.unpack_from(buf, off)
        oxm_len = header & 0xFF
        if oxm_len == 0 or off + 4 + oxm_len > stop:
            raise _bad_match_len("OXM %#x len %d" % (header, oxm_len))
        if header >> 16 == _OXM_EXPERIMENTER_CLASS:
            if oxm_len <= 4:
                raise _bad_match_len("experimenter OXM %#x len %d" % (header, oxm_len))
        else:
            size = _OXM_SIZE.get(header >> 9)
            if size is None:
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, "OXM %#x" % header)
            if oxm_len != (2 * size if header & 0x100 else size):
                raise _bad_match_len("OXM %#x len %d" % (header, oxm_len))
        off += 4 + oxm_len


def check_match(buf, offset, end):
    """Check the ofp_match at `offset` (header, padding, every OXM's length against its
    field); returns the offset after the (padded) match."""
    after = _match_extent(buf, offset, end)
    _check_oxms(buf, offset)
    return after


def parse_match(buf, offset, end):
    """(Ryu OFPMatch, offset after it) of the ofp_match at `offset`."""
    after = check_match(buf, offset, end)
    return _ryu_match(buf, offset, after), after


def _ryu_match(buf, offset, after):
    """Ryu's parse of the match checked by check_match, from a copy of its bytes only."""
    try:
        return parser.OFPMatch.parser(bytes(buf[offset:after]), 0)
    except Exception as e:  # an experimenter OXM Ryu does not know, a value it refuses
        raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, "%s: %s" % (type(e).__name__, e))


def _bad_len(text=""):
    return OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, text)


def hello_version_bitmap(data):
    """The first version bitmap word of a hello's elements, or None when it has none.
    Elements are read leniently (a hello is not refused for its padding): the walk stops
    at an element shorter than its header or running past the message."""
    off, n = 8, len(data)
    while off + 4 <= n:
        etype, elen = struct.unpack_from("!HH", data, off)
        if elen < 4 or off + elen > n:
            return None
        if etype == ofp.OFPHET_VERSIONBITMAP and elen >= 8:
            return _U32.unpack_from(data, off + 4)[0]
        off += (elen + 7) // 8 * 8
    return None


# -- the fast decoders ----------------------------------------------------------------
# Ryu's parsers turn every OXM value into its "user" form (dotted or colon strings via
# netaddr) that Match then turns back into ints, and build objects for every action of
# every flow-mod.  For a new-session workload that is most of a flow-mod's cost, so:
# - a match whose OXMs are all plain OpenFlow-basic fields of kp's (FIELDS), with the
#   exact value (and mask) length, is read straight into the (name, int | (int, int))
#   items Match.from_user takes, in wire order as Ryu gives them (anything else, e.g.
#   an unknown or experimenter field or an odd length, is checked by _check_oxms and
#   then parsed by Ryu);
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


_PARSED_MAX = 4096       # lists remembered, per kind
_PARSED_KEY_MAX = 1024   # bytes: a longer list is decoded each time, not remembered, so
#                          that the caches stay small whatever a controller sends
_parsed_instructions = {}
_parsed_actions = {}


def _remember(cache, key, value):
    if len(cache) >= _PARSED_MAX:
        cache.clear()
    cache[key] = value
    return value


def _cached(cache, decoder, buf, offset, end):
    """decoder(buf, offset, end) (a checked list of Ryu objects), once per distinct byte
    string: a list seen before was checked when it was first decoded."""
    key = bytes(buf[offset:end])
    if len(key) > _PARSED_KEY_MAX:
        return decoder(key, 0, len(key))
    got = cache.get(key)
    if got is None:
        got = _remember(cache, key, tuple(decoder(key, 0, len(key))))
    return list(got)


def parse_actions(buf, offset, end):
    """Ryu OFPAction objects of the action list buf[offset:end]; OFError when malformed."""
    return _cached(_parsed_actions, decode_actions, buf, offset, end)


def parse_instructions(buf, offset, end):
    """Ryu OFPInstruction objects of buf[offset:end]; OFError when malformed."""
    return _cached(_parsed_instructions, _decode_instructions, buf, offset, end)


class FlowMod:
    """A decoded flow-mod: OFPFlowMod's attributes (match: a FastMatch or Ryu's OFPMatch)."""

    __slots__ = ("cookie", "cookie_mask", "table_id", "command", "idle_timeout",
                 "hard_timeout", "priority", "buffer_id", "out_port", "out_group", "flags",
                 "match", "instructions")


_FLOW_MOD0 = struct.Struct(ofp.OFP_FLOW_MOD_PACK_STR0)
_FLOW_MOD_MATCH = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE  # 48: where the match starts


def _decode_flow_mod(data, n):
    if n < ofp.OFP_FLOW_MOD_SIZE:
        raise _bad_len("flow-mod of %d bytes" % n)
    after = _match_extent(data, _FLOW_MOD_MATCH, n)
    items = fast_match_items(data, _FLOW_MOD_MATCH)
    if items is None:
        _check_oxms(data, _FLOW_MOD_MATCH)
        match = _ryu_match(data, _FLOW_MOD_MATCH, after)
    else:
        match = FastMatch(items)
    fm = FlowMod()
    (fm.cookie, fm.cookie_mask, fm.table_id, fm.command, fm.idle_timeout, fm.hard_timeout,
     fm.priority, fm.buffer_id, fm.out_port, fm.out_group, fm.flags) = _FLOW_MOD0.unpack_from(data, 8)
    fm.match = match
    fm.instructions = parse_instructions(data, after, n) if after < n else []
    return fm


def _decode_group_mod(data, n):
    """A Ryu OFPGroupMod; each bucket's length checked before its actions are read."""
    if n < ofp.OFP_GROUP_MOD_SIZE:
        raise _bad_len("group-mod of %d bytes" % n)
    command, gtype, gid = struct.unpack_from(ofp.OFP_GROUP_MOD_PACK_STR, data, 8)
    buckets, off = [], ofp.OFP_GROUP_MOD_SIZE
    while off < n:
        if n - off < ofp.OFP_BUCKET_SIZE:
            raise OFError(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_BUCKET,
                          "%d bytes left after the last bucket" % (n - off))
        blen, weight, watch_port, watch_group = struct.unpack_from(ofp.OFP_BUCKET_PACK_STR, data, off)
        if blen < ofp.OFP_BUCKET_SIZE or blen % 8 or off + blen > n:
            raise OFError(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_BAD_BUCKET, "bucket len %d" % blen)
        b = parser.OFPBucket(weight, watch_port, watch_group,
                             parse_actions(data, off + ofp.OFP_BUCKET_SIZE, off + blen))
        b.len = blen
        buckets.append(b)
        off += blen
    return parser.OFPGroupMod(None, command, gtype, gid, buckets)


DECODER_BUG = "decoder bug:"  # starts the text of an error only the catch-all raises


def decode(data):
    """A whole message (bytes) -> Raw with per-type fields; OFError when malformed."""
    n = len(data)
    if n < HEADER.size:
        raise _bad_len("%d bytes for a header" % n)
    version, type_, length, xid = HEADER.unpack_from(data)
    if length != n:
        raise _bad_len("header says %d bytes, message has %d" % (length, n))
    m = Raw(type_, xid, data, version=version)
    try:
        if type_ == ofp.OFPT_FLOW_MOD:
            m.msg = _decode_flow_mod(data, n)
        elif type_ == ofp.OFPT_PACKET_OUT:
            if n < ofp.OFP_PACKET_OUT_SIZE:
                raise _bad_len()
            m.buffer_id, m.in_port, alen = struct.unpack_from(ofp.OFP_PACKET_OUT_PACK_STR, data, 8)
            if ofp.OFP_PACKET_OUT_SIZE + alen > n:
                raise _bad_len("actions_len %d in a packet-out of %d bytes" % (alen, n))
            m.actions = parse_actions(data, ofp.OFP_PACKET_OUT_SIZE, ofp.OFP_PACKET_OUT_SIZE + alen)
            m.packet = bytes(data[ofp.OFP_PACKET_OUT_SIZE + alen:])
        elif type_ == ofp.OFPT_GROUP_MOD:
            m.msg = _decode_group_mod(data, n)
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
    except Exception as e:  # a bug: the checks above should have caught it (the fuzz test looks)
        raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN,
                      "%s %s: %s" % (DECODER_BUG, type(e).__name__, e))
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
