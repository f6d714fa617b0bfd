"""OpenFlow 1.3 matches: the supported OXM fields, their masks and prerequisites.

A `Match` holds canonical integers: `fields = {name: (value, mask)}` with
`value & mask == value` and a field whose mask is all zero left out.  Packet keys
come from the fast path's `parse()` (strings for MAC and IP addresses); `key_ints()`
turns one into the integers a `Match` compares with.  Nothing here does I/O.
"""
import ipaddress

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from .errors import OFError

OFPVID_PRESENT = ofp.OFPVID_PRESENT

# name: (kind, bits, maskable).  Exactly the fields parse() gives, plus metadata.
FIELDS = {
    "in_port": ("int", 32, False),
    "metadata": ("int", 64, True),
    "eth_dst": ("mac", 48, True),
    "eth_src": ("mac", 48, True),
    "eth_type": ("int", 16, False),
    "vlan_vid": ("int", 13, True),
    "vlan_pcp": ("int", 3, False),
    "ip_dscp": ("int", 6, False),
    "ip_ecn": ("int", 2, False),
    "ip_proto": ("int", 8, False),
    "ipv4_src": ("ipv4", 32, True),
    "ipv4_dst": ("ipv4", 32, True),
    "tcp_src": ("int", 16, False),
    "tcp_dst": ("int", 16, False),
    "tcp_flags": ("int", 12, True),
    "udp_src": ("int", 16, False),
    "udp_dst": ("int", 16, False),
    "sctp_src": ("int", 16, False),
    "sctp_dst": ("int", 16, False),
    "icmpv4_type": ("int", 8, False),
    "icmpv4_code": ("int", 8, False),
    "arp_op": ("int", 16, False),
    "arp_spa": ("ipv4", 32, True),
    "arp_tpa": ("ipv4", 32, True),
    "arp_sha": ("mac", 48, True),
    "arp_tha": ("mac", 48, True),
    "ipv6_src": ("ipv6", 128, True),
    "ipv6_dst": ("ipv6", 128, True),
    "ipv6_flabel": ("int", 20, True),
    "icmpv6_type": ("int", 8, False),
    "icmpv6_code": ("int", 8, False),
    "ipv6_nd_target": ("ipv6", 128, False),
    "ipv6_nd_sll": ("mac", 48, False),
    "ipv6_nd_tll": ("mac", 48, False),
}

# Fields that set_field may rewrite (the fast path's set_field list).
SETTABLE = frozenset(FIELDS) - {"in_port", "metadata", "eth_type", "ip_proto", "tcp_flags"}

_IP = {0x0800, 0x86DD}
# field: [(required field, allowed exact values)], OpenFlow 1.3 table 12.  A required
# field's own prerequisites are checked when it is checked.
PREREQS = {
    "ip_dscp": [("eth_type", _IP)], "ip_ecn": [("eth_type", _IP)],
    "ip_proto": [("eth_type", _IP)],
    "ipv4_src": [("eth_type", {0x0800})], "ipv4_dst": [("eth_type", {0x0800})],
    "tcp_src": [("ip_proto", {6})], "tcp_dst": [("ip_proto", {6})],
    "tcp_flags": [("ip_proto", {6})],
    "udp_src": [("ip_proto", {17})], "udp_dst": [("ip_proto", {17})],
    "sctp_src": [("ip_proto", {132})], "sctp_dst": [("ip_proto", {132})],
    "icmpv4_type": [("ip_proto", {1}), ("eth_type", {0x0800})],
    "icmpv4_code": [("ip_proto", {1}), ("eth_type", {0x0800})],
    "arp_op": [("eth_type", {0x0806})], "arp_spa": [("eth_type", {0x0806})],
    "arp_tpa": [("eth_type", {0x0806})], "arp_sha": [("eth_type", {0x0806})],
    "arp_tha": [("eth_type", {0x0806})],
    "ipv6_src": [("eth_type", {0x86DD})], "ipv6_dst": [("eth_type", {0x86DD})],
    "ipv6_flabel": [("eth_type", {0x86DD})],
    "icmpv6_type": [("ip_proto", {58}), ("eth_type", {0x86DD})],
    "icmpv6_code": [("ip_proto", {58}), ("eth_type", {0x86DD})],
    "ipv6_nd_target": [("icmpv6_type", {135, 136})],
    "ipv6_nd_sll": [("icmpv6_type", {135})],
    "ipv6_nd_tll": [("icmpv6_type", {136})],
}


def full_mask(name):
    return (1 << FIELDS[name][1]) - 1


def _mac_int(s):
    return int(s.replace(":", "").replace("-", ""), 16)


def _mac_str(v):
    h = "%012x" % v
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def to_int(name, value):
    """A field value as parse()/Ryu print it (str for addresses) -> int."""
    kind = FIELDS[name][0]
    if kind == "int":
        return int(value)
    if isinstance(value, int):
        return value
    if kind == "mac":
        return _mac_int(value)
    if kind == "ipv4":
        return int(ipaddress.IPv4Address(value))
    return int(ipaddress.IPv6Address(value))


def to_user(name, value):
    """An int -> the form parse() and Ryu use (str for addresses, canonical)."""
    kind = FIELDS[name][0]
    if kind == "int":
        return value
    if kind == "mac":
        return _mac_str(value)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def key_ints(key, metadata=0):
    """A parse() key -> {field: int}, with vlan_vid 0 (OFPVID_NONE) when untagged."""
    out = {}
    for name, value in key.items():
        if name in FIELDS:
            out[name] = to_int(name, value)
    out.setdefault("vlan_vid", 0)
    out["metadata"] = metadata
    return out


class Match:
    """Canonical match: {name: (value, mask)}; hashable and comparable."""

    __slots__ = ("fields", "_sig", "_prereqs_ok")

    def __init__(self, fields=None):
        self.fields = dict(fields or {})
        self._sig = None
        self._prereqs_ok = False  # check_prereqs() passed for the fields

    @classmethod
    def from_user(cls, items):
        """From (name, value | (value, mask)) pairs as Ryu's OFPMatch._fields2 holds them.

        Raises OFError(OFPET_BAD_MATCH, ...) for unknown/duplicated fields, bad masks,
        bad values and unmet prerequisites.
        """
        fields = {}
        for name, uv in items:
            if name not in FIELDS:
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, "field %s" % name)
            if name in fields:
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_DUP_FIELD, "field %s" % name)
            kind, bits, maskable = FIELDS[name]
            if isinstance(uv, (tuple, list)):
                value, mask = uv
                if not maskable:
                    raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_MASK, "field %s" % name)
                try:
                    mask = to_int(name, mask)
                except ValueError:
                    raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_MASK, "field %s" % name)
            else:
                value, mask = uv, (1 << bits) - 1
            try:
                value = to_int(name, value)
            except (ValueError, TypeError):
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_VALUE, "field %s" % name)
            if value >> bits or mask >> bits:
                raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_VALUE, "field %s" % name)
            if mask == 0:
                continue  # a fully wildcarded field matches everything
            fields[name] = (value & mask, mask)
        m = cls(fields)
        m.check_prereqs()
        return m

    @classmethod
    def from_ryu(cls, ofpmatch):
        return cls.from_user(getattr(ofpmatch, "_fields2", []))

    def check_prereqs(self, extra=()):
        """OFPBMC_BAD_PREREQ unless every field's prerequisites are matched exactly.

        `extra` names fields that are not matched but must be allowed (set-field targets).
        """
        names = list(extra) if self._prereqs_ok else list(self.fields) + list(extra)
        for name in names:
            if name == "vlan_pcp":
                vid = self.fields.get("vlan_vid")
                if vid is None or not (vid[0] & vid[1] & OFPVID_PRESENT):
                    raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ, name)
            for req, allowed in PREREQS.get(name, ()):
                got = self.fields.get(req)
                if got is None or got[1] != full_mask(req) or got[0] not in allowed:
                    raise OFError(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ,
                                  "%s needs %s" % (name, req))
        if not extra:
            self._prereqs_ok = True

    def signature(self):
        """The (field, mask) tuple that picks this match's subtable."""
        if self._sig is None:
            self._sig = tuple(sorted((n, m) for n, (v, m) in self.fields.items()))
        return self._sig

    def values(self):
        return tuple(self.fields[n][0] for n, _ in self.signature())

    def matches(self, kv):
        """Does a key (from key_ints) match?"""
        for name, (value, mask) in self.fields.items():
            got = kv.get(name)
            if got is None or got & mask != value:
                return False
        return True

    def covered_by(self, other):
        """True when every packet this match matches is matched by `other` (non-strict
        modify/delete: `other` is the request, self a flow entry)."""
        for name, (ov, om) in other.fields.items():
            mine = self.fields.get(name)
            if mine is None:
                return False
            v, m = mine
            if m & om != om or v & om != ov:
                return False
        return True

    def overlaps(self, other):
        """Could one packet match both?"""
        for name, (v, m) in self.fields.items():
            o = other.fields.get(name)
            if o is not None:
                common = m & o[1]
                if v & common != o[0] & common:
                    return False
        return True

    def to_user_items(self):
        out = []
        for name in FIELDS:  # stable, spec-like order
            if name in self.fields:
                v, m = self.fields[name]
                if m == full_mask(name):
                    out.append((name, to_user(name, v)))
                else:
                    out.append((name, (to_user(name, v), to_user(name, m))))
        return out

    def to_ryu(self):
        return parser.OFPMatch(**dict(self.to_user_items()))

    def __eq__(self, other):
        return isinstance(other, Match) and self.fields == other.fields

    def __hash__(self):
        return hash(self.signature() + self.values())

    def __repr__(self):
        return "Match(%s)" % ", ".join("%s=%s" % (n, v if not isinstance(v, tuple) else "%s/%s" % v)
                                        for n, v in self.to_user_items())
