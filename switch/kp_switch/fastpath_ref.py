"""Pure-Python twin of ``kp_switch._fastpath`` (see switch/FASTPATH.md).

Same API and the same answers as the C extension, written to be read: it is the
specification the differential tests hold the C code to, and a working (slow) datapath
the OpenFlow agent can run on when the extension is not built.

Shared with the C code byte for byte:
  - the cache key layout (``key_blob``, ``_KEY`` below, ``struct flow_key`` in
    csrc/flow_key.h), so a blob from one implementation is valid in the other;
  - the cache's compact key (``_CKEY``, ``struct cache_key`` in csrc/flow_cache.h:
    which blobs are cacheable at all) and its hash (SipHash-1-3 of its 64-bit words
    under the process secret, see ``key_hash`` and keyed_hash), so both put a key in the same bucket and evict the same way;
  - the cache's slot discipline (first free way, else the least recently used way);
  - the incremental checksum arithmetic (RFC 1624 eqn. 3), so rewritten packets are
    identical, including the 0x0000/0xffff choice; and SCTP's CRC32c, computed again
    on a port rewrite (kp_proto.sctp).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kp_proto import sctp
from kp_proto.lb import MAX_VIPS as LB_MAX_VIPS
from kp_proto.session_hash import session_hash as _session_hash

from .keyed_hash import secret_hash
from .lb_ref import LoadBalancer

WAYS = 4
MAX_FLOW_IDS = 1 << 18
CACHE_IDLE_MS = 10_000
MAX_IDS_PER_ENTRY = 3   # flow ids a cache entry holds; an insert with more fails
MAX_IDS_PER_INSERT = 8  # flow ids cache_insert accepts (more: ValueError)
MAX_OPS = 16            # actions per cached program; longer lists are not cached
PROG_POOL = 4096        # distinct cached action programs (shared between entries)
ADDR_POOL = 65536       # distinct IPv6 addresses in cached keys (shared between entries)
RECLAIM_BUCKETS = 64    # buckets swept for dead slots when a pool is full
BYTES_PER_FLOW = 64     # 64-byte bucket line / WAYS + 48-byte entry (key 40, ids 8)
MF_SUBTABLES = 32       # distinct megaflow masks (one subtable each)
MF_BUCKETS = 4096       # megaflow hash buckets (a power of 2), shared by the subtables
MF_WAYS = 4             # megaflow slots per bucket
MF_SWEEP_BUCKETS = 4    # megaflow buckets reaped per megaflow insert
MF_BYTES_PER_FLOW = 96  # 64-byte bucket line / MF_WAYS + 80-byte entry (key 64, epoch, ids)
AGE_LIMIT = 1 << 31     # an exact slot this many invalidations old is dropped (wrap-safe)
MISS_QUEUE_LEN = 1024
MAX_BUCKETS = 1 << 20
KEY_SIZE = 100

# Bits of flow_key.present: which groups of fields the packet had.
F_ETH = 1 << 1
F_VLAN = 1 << 2
F_IP = 1 << 3
F_IPV4 = 1 << 4
F_IPV6 = 1 << 5
F_TCP = 1 << 6
F_UDP = 1 << 7
F_ICMPV4 = 1 << 8
F_ICMPV6 = 1 << 9
F_ARP = 1 << 10
F_ND_TARGET = 1 << 11
F_ND_SLL = 1 << 12
F_ND_TLL = 1 << 13
F_SCTP = 1 << 14
# Not a header: kp_lb translated the packet as a hairpin (csrc/flow_key.h), so the tables
# may send it back out of its in_port; in key dicts, LB_LOOPBACK: True.
F_LB_LOOPBACK = 1 << 15
LB_LOOPBACK = "lb_loopback"

# struct flow_key: in_port, present, eth_dst, eth_src, eth_type, vlan_vid, vlan_pcp,
# ip_proto, ip_dscp, ip_ecn, tcp_flags, pad, ipv6_flabel, tp_src, tp_dst, nw_src,
# nw_dst, nd_target, arp_sha (= nd_sll), arp_tha (= nd_tll).  tp_src/tp_dst hold the
# L4 ports, the ICMP type/code or the ARP opcode; nw_src/nw_dst the IPv4 (first four
# bytes), IPv6 or ARP protocol addresses.
_KEY = struct.Struct("<II6s6sHHBBBBHHIHH16s16s16s6s6s")
assert _KEY.size == KEY_SIZE

# struct cache_key, the cache's compact form of a key: in_port (16 bits), present (16),
# eth_dst, eth_src, eth_type, vlan (vid | pcp << 13), ip_proto, tos (dscp << 2 | ecn),
# tcp_flags, tp_src, tp_dst, ipv6_flabel, nw_src, nw_dst (IPv4 address; for IPv6 the
# cache's pool index of the address, 0 in a looked-up key).
_CKEY = struct.Struct("<HH6s6sHHBBHHHIII")
assert _CKEY.size == 40
_CACHEABLE = (F_ETH | F_VLAN | F_IP | F_IPV4 | F_IPV6 | F_TCP | F_UDP | F_ICMPV4 | F_ICMPV6
              | F_SCTP)

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 = 6, 17, 1, 58
_IPV6_EXT = (0, 43, 60)   # hop-by-hop, routing, destination options
_IPV6_FRAG = 44
IPV6_MAX_EXT_HDRS = 8      # csrc/parse.h: extension headers walked, at most
IPV6_MAX_EXT_BYTES = 1024  # ... and the upper-layer header within this many bytes
FRAG, FRAG_LATER = 1, 2    # csrc/parse.h PKT_FRAG_*
SEG_MIN_SIZE = 88          # csrc/segment.h: the smallest segment size cut to (why: there)

Action = Tuple[Any, ...]
Miss = Tuple[int, bytes, Optional[Dict[str, Any]], bytes, int]   # ..., the thread
# The twin has one datapath thread (the C datapath: 1..its MAX_THREADS, datapath.h).
MAX_THREADS = 1


# --------------------------------------------------------------------------- parsing

class _Parsed:
    """A packet's key fields plus the offsets the action executor needs."""

    __slots__ = ("in_port", "present", "eth_dst", "eth_src", "eth_type", "vlan_vid",
                 "vlan_pcp", "ip_proto", "ip_dscp", "ip_ecn", "tcp_flags", "flabel",
                 "tp_src", "tp_dst", "nw_src", "nw_dst", "nd_target", "sha", "tha",
                 "error", "refused", "l3", "l4", "l3_end", "sll_off", "tll_off", "frag",
                 "frag_hdr")

    def __init__(self, in_port: int) -> None:
        self.in_port = in_port
        self.present = 0
        self.eth_dst = self.eth_src = b"\0" * 6
        self.eth_type = self.vlan_vid = self.vlan_pcp = 0
        self.ip_proto = self.ip_dscp = self.ip_ecn = self.tcp_flags = self.flabel = 0
        self.tp_src = self.tp_dst = 0
        self.nw_src = self.nw_dst = self.nd_target = b"\0" * 16
        self.sha = self.tha = b"\0" * 6
        self.error = False
        self.refused = False    # parse.h PARSE_REFUSED: dropped, counted (error too)
        self.l3 = self.l4 = self.l3_end = -1
        self.sll_off = self.tll_off = self.frag_hdr = -1
        self.frag = 0

    def blob(self) -> bytes:
        return _KEY.pack(self.in_port & 0xFFFFFFFF, self.present, self.eth_dst,
                         self.eth_src, self.eth_type, self.vlan_vid, self.vlan_pcp,
                         self.ip_proto, self.ip_dscp, self.ip_ecn, self.tcp_flags, 0,
                         self.flabel, self.tp_src, self.tp_dst, self.nw_src,
                         self.nw_dst, self.nd_target, self.sha, self.tha)


def _u16(b: bytes, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


def _parse(pkt: bytes, in_port: int) -> Optional[_Parsed]:
    n = len(pkt)
    if n < 14:
        return None
    p = _Parsed(in_port)
    p.present = F_ETH
    p.eth_dst, p.eth_src = bytes(pkt[0:6]), bytes(pkt[6:12])
    p.eth_type = _u16(pkt, 12)
    off = 14
    if p.eth_type in (ETH_P_8021Q, ETH_P_8021AD):
        if n < 18:
            p.error = True
            return p
        tci = _u16(pkt, 14)
        p.present |= F_VLAN
        p.vlan_vid = (tci & 0x0FFF) | 0x1000
        p.vlan_pcp = tci >> 13
        p.eth_type = _u16(pkt, 16)
        off = 18
    p.l3 = off
    if p.eth_type == ETH_P_ARP:
        _parse_arp(pkt, off, p)
    elif p.eth_type == ETH_P_IP:
        _parse_ipv4(pkt, off, p)
    elif p.eth_type == ETH_P_IPV6:
        _parse_ipv6(pkt, off, p)
    return p


def _parse_arp(pkt: bytes, off: int, p: _Parsed) -> None:
    if len(pkt) - off < 28:
        p.error = True
        return
    if _u16(pkt, off) != 1 or _u16(pkt, off + 2) != ETH_P_IP or pkt[off + 4] != 6 \
            or pkt[off + 5] != 4:
        return
    p.present |= F_ARP
    p.tp_src = _u16(pkt, off + 6)
    p.sha = bytes(pkt[off + 8:off + 14])
    p.nw_src = bytes(pkt[off + 14:off + 18]) + b"\0" * 12
    p.tha = bytes(pkt[off + 18:off + 24])
    p.nw_dst = bytes(pkt[off + 24:off + 28]) + b"\0" * 12


def _parse_ipv4(pkt: bytes, off: int, p: _Parsed) -> None:
    avail = len(pkt) - off
    if avail < 20 or pkt[off] >> 4 != 4:
        p.error = True
        return
    ihl = (pkt[off] & 0x0F) * 4
    tot = _u16(pkt, off + 2)
    if ihl < 20 or ihl > avail or tot < ihl or tot > avail:
        p.error = True
        return
    p.present |= F_IP | F_IPV4
    p.ip_dscp, p.ip_ecn = pkt[off + 1] >> 2, pkt[off + 1] & 3
    p.ip_proto = pkt[off + 9]
    p.nw_src = bytes(pkt[off + 12:off + 16]) + b"\0" * 12
    p.nw_dst = bytes(pkt[off + 16:off + 20]) + b"\0" * 12
    p.l3_end = off + tot
    if _u16(pkt, off + 6) & 0x3FFF:
        p.frag = FRAG
    if _u16(pkt, off + 6) & 0x1FFF:
        p.frag |= FRAG_LATER
        return      # a later fragment: no L4 header in it
    _parse_l4(pkt, off + ihl, p, v6=False)


def _parse_ipv6(pkt: bytes, off: int, p: _Parsed) -> None:
    avail = len(pkt) - off
    if avail < 40 or pkt[off] >> 4 != 6:
        p.error = True
        return
    plen = _u16(pkt, off + 4)
    if plen + 40 > avail:
        p.error = True
        return
    tc = ((pkt[off] & 0x0F) << 4) | (pkt[off + 1] >> 4)
    p.present |= F_IP | F_IPV6
    p.ip_dscp, p.ip_ecn = tc >> 2, tc & 3
    p.flabel = ((pkt[off + 1] & 0x0F) << 16) | _u16(pkt, off + 2)
    p.nw_src = bytes(pkt[off + 8:off + 24])
    p.nw_dst = bytes(pkt[off + 24:off + 40])
    end = off + 40 + plen
    p.l3_end = end
    nh = pkt[off + 6]
    cur = off + 40
    for i in range(IPV6_MAX_EXT_HDRS + 1):
        p.ip_proto = nh
        if cur - (off + 40) > IPV6_MAX_EXT_BYTES:
            p.error = p.refused = True      # too long a chain
            return
        if nh not in _IPV6_EXT and nh != _IPV6_FRAG:
            _parse_l4(pkt, cur, p, v6=True)
            return
        if i == IPV6_MAX_EXT_HDRS or (nh == 0 and i > 0):
            p.error = p.refused = True      # too many; hop-by-hop only first
            return
        if end - cur < 8:
            p.error = True
            return
        if nh == _IPV6_FRAG:
            fo = _u16(pkt, cur + 2)
            nh = pkt[cur]
            if fo & 0xFFF9:                 # not an atomic fragment (RFC 6946)
                p.frag, p.frag_hdr = FRAG, cur
            cur += 8
            if fo >> 3:
                p.frag |= FRAG_LATER
                p.ip_proto = nh
                return
        else:
            hlen = (pkt[cur + 1] + 1) * 8
            if hlen > end - cur:
                p.error = True
                return
            nh = pkt[cur]
            cur += hlen


def _parse_l4(pkt: bytes, off: int, p: _Parsed, v6: bool) -> None:
    avail = p.l3_end - off
    proto = p.ip_proto
    if proto == IPPROTO_TCP:
        if avail < 20:
            p.error = True
            return
        doff = (pkt[off + 12] >> 4) * 4
        if doff < 20 or doff > avail:
            p.error = True
            return
        p.present |= F_TCP
        p.tp_src, p.tp_dst = _u16(pkt, off), _u16(pkt, off + 2)
        p.tcp_flags = _u16(pkt, off + 12) & 0x0FFF
    elif proto == IPPROTO_UDP:
        if avail < 8:
            p.error = True
            return
        p.present |= F_UDP
        p.tp_src, p.tp_dst = _u16(pkt, off), _u16(pkt, off + 2)
    elif proto == sctp.PROTO:
        if avail < sctp.COMMON_HEADER:
            p.error = True
            return
        p.present |= F_SCTP
        p.tp_src, p.tp_dst = _u16(pkt, off), _u16(pkt, off + 2)
    elif proto == IPPROTO_ICMP and not v6:
        if avail < 4:
            p.error = True
            return
        p.present |= F_ICMPV4
        p.tp_src, p.tp_dst = pkt[off], pkt[off + 1]
    elif proto == IPPROTO_ICMPV6 and v6:
        if avail < 4:
            p.error = True
            return
        p.present |= F_ICMPV6
        p.tp_src, p.tp_dst = pkt[off], pkt[off + 1]
        p.l4 = off
        if p.tp_src in (135, 136) and p.tp_dst == 0:
            _parse_nd(pkt, off, p)
        return
    else:
        return
    p.l4 = off


def _parse_nd(pkt: bytes, off: int, p: _Parsed) -> None:
    end = p.l3_end
    if end - off < 24:
        p.error = True
        return
    p.present |= F_ND_TARGET
    p.nd_target = bytes(pkt[off + 8:off + 24])
    cur = off + 24
    while cur < end:
        if end - cur < 8 or pkt[cur + 1] == 0 or pkt[cur + 1] * 8 > end - cur:
            p.error = True
            return
        otype, olen = pkt[cur], pkt[cur + 1]
        if olen == 1:
            if otype == 1 and p.tp_src == 135 and not p.present & F_ND_SLL:
                p.present |= F_ND_SLL
                p.sha = bytes(pkt[cur + 2:cur + 8])
                p.sll_off = cur + 2
            elif otype == 2 and p.tp_src == 136 and not p.present & F_ND_TLL:
                p.present |= F_ND_TLL
                p.tha = bytes(pkt[cur + 2:cur + 8])
                p.tll_off = cur + 2
        cur += olen * 8


def _mac(b: bytes) -> str:
    return ":".join("%02x" % x for x in b)


def _ipv4(b: bytes) -> str:
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


def _ipv6(b: bytes) -> str:
    """RFC 5952 text, as Python 3.11's ipaddress.IPv6Address prints it."""
    words = [(b[i] << 8) | b[i + 1] for i in range(0, 16, 2)]
    best_start, best_len, start = -1, 0, -1
    for i, w in enumerate(words + [1]):
        if w == 0 and i < 8:
            if start < 0:
                start = i
        elif start >= 0:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = -1
    hexs = ["%x" % w for w in words]
    if best_len < 2:
        return ":".join(hexs)
    left = ":".join(hexs[:best_start])
    right = ":".join(hexs[best_start + best_len:])
    return left + "::" + right


def _key_dict(p: _Parsed) -> Dict[str, Any]:
    d: Dict[str, Any] = {"in_port": p.in_port}
    pr = p.present
    d["eth_dst"], d["eth_src"], d["eth_type"] = _mac(p.eth_dst), _mac(p.eth_src), p.eth_type
    if pr & F_VLAN:
        d["vlan_vid"], d["vlan_pcp"] = p.vlan_vid, p.vlan_pcp
    if pr & F_IP:
        d["ip_dscp"], d["ip_ecn"], d["ip_proto"] = p.ip_dscp, p.ip_ecn, p.ip_proto
    if pr & F_IPV4:
        d["ipv4_src"], d["ipv4_dst"] = _ipv4(p.nw_src), _ipv4(p.nw_dst)
    if pr & F_IPV6:
        d["ipv6_src"], d["ipv6_dst"] = _ipv6(p.nw_src), _ipv6(p.nw_dst)
        d["ipv6_flabel"] = p.flabel
    if pr & F_TCP:
        d["tcp_src"], d["tcp_dst"], d["tcp_flags"] = p.tp_src, p.tp_dst, p.tcp_flags
    if pr & F_UDP:
        d["udp_src"], d["udp_dst"] = p.tp_src, p.tp_dst
    if pr & F_SCTP:
        d["sctp_src"], d["sctp_dst"] = p.tp_src, p.tp_dst
    if pr & F_ICMPV4:
        d["icmpv4_type"], d["icmpv4_code"] = p.tp_src, p.tp_dst
    if pr & F_ICMPV6:
        d["icmpv6_type"], d["icmpv6_code"] = p.tp_src, p.tp_dst
    if pr & F_ARP:
        d["arp_op"] = p.tp_src
        d["arp_spa"], d["arp_tpa"] = _ipv4(p.nw_src), _ipv4(p.nw_dst)
        d["arp_sha"], d["arp_tha"] = _mac(p.sha), _mac(p.tha)
    if pr & F_ND_TARGET:
        d["ipv6_nd_target"] = _ipv6(p.nd_target)
    if pr & F_ND_SLL:
        d["ipv6_nd_sll"] = _mac(p.sha)
    if pr & F_ND_TLL:
        d["ipv6_nd_tll"] = _mac(p.tha)
    if pr & F_LB_LOOPBACK:
        d[LB_LOOPBACK] = True
    return d


def parse(packet: bytes, in_port: int) -> Optional[Dict[str, Any]]:
    """The packet's flow key as OXM-named fields (FASTPATH.md), or None if < 14 bytes."""
    p = _parse(packet, in_port)
    return None if p is None else _key_dict(p)


def parse_blob(packet: bytes, in_port: int) -> Optional[Tuple[Dict[str, Any], bytes, bool]]:
    """Test helper: (key dict, key blob, malformed) or None when too short."""
    p = _parse(packet, in_port)
    return None if p is None else (_key_dict(p), p.blob(), p.error)


# --------------------------------------------------------------------------- checksums

def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(b: bytes) -> int:
    if len(b) & 1:
        b = bytes(b) + b"\0"
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


def _csum_replace(buf: bytearray, csum_off: int, old: bytes, new: bytes,
                  udp: bool = False) -> None:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') over the changed 16-bit words."""
    hc = _u16(buf, csum_off)
    if udp and hc == 0:
        return      # UDP over IPv4 without a checksum stays without one
    s = (~hc) & 0xFFFF
    for i in range(0, len(old), 2):
        s += ((~_u16(old, i)) & 0xFFFF) + _u16(new, i)
    res = (~_fold(s)) & 0xFFFF
    if udp and res == 0:
        res = 0xFFFF
    buf[csum_off:csum_off + 2] = res.to_bytes(2, "big")


def _l4_csum_off(p: _Parsed) -> Tuple[int, bool]:
    """Offset of the L4 checksum covering a pseudo-header, and whether it is UDP's."""
    if p.l4 < 0:
        return -1, False
    if p.present & F_TCP:
        return p.l4 + 16, False
    if p.present & F_UDP:
        return p.l4 + 6, True
    if p.present & F_ICMPV6:
        return p.l4 + 2, False
    return -1, False


def complete_partial_checksum(packet: bytes, csum_start: int = -1,
                              csum_offset: int = -1) -> Optional[bytes]:
    """Finish a CHECKSUM_PARTIAL packet: the field holds the pseudo-header sum.  Where
    the sender's virtio-net header says (csum_start, csum_offset, frame-relative), else
    (-1) the parsed TCP/UDP checksum.  None when the sender's field or start lies outside
    the IP datagram (csrc/actions.h csum_finish_partial: dropped)."""
    p = _parse(packet, 0)
    if p is None:
        return bytes(packet)
    buf = bytearray(packet)
    if p.present & F_SCTP:      # a CRC32c, not a ones' complement sum
        if p.l4 < 0 or (csum_start >= 0 and (csum_start != p.l4
                                             or csum_offset != sctp.CHECKSUM_OFFSET)):
            return None
        crc = sctp.packet_crc(bytes(buf[p.l4:p.l3_end]))
        off = p.l4 + sctp.CHECKSUM_OFFSET
        buf[off:off + 4] = crc.to_bytes(4, "little")
        return bytes(buf)
    udp = bool(p.present & F_UDP)
    if csum_start < 0:
        if not p.present & (F_TCP | F_UDP) or p.l4 < 0:
            return bytes(packet)
        start, off = p.l4, p.l4 + (6 if udp else 16)
    else:
        if p.l3 < 0 or p.l3_end < 0 or csum_start < p.l3 + 20 or csum_offset < 0 \
                or csum_start + csum_offset + 2 > p.l3_end:
            return None
        start, off = csum_start, csum_start + csum_offset
        udp = udp and csum_start == p.l4 and csum_offset == 6
    res = (~_fold(_sum16(bytes(buf[start:p.l3_end])))) & 0xFFFF
    if res == 0 and udp:
        res = 0xFFFF
    buf[off:off + 2] = res.to_bytes(2, "big")
    return bytes(buf)


# --------------------------------------------------------------------------- actions

_SETTABLE = {
    "eth_dst", "eth_src", "vlan_vid", "vlan_pcp", "ip_dscp", "ip_ecn", "ipv4_src",
    "ipv4_dst", "ipv6_src", "ipv6_dst", "ipv6_flabel", "tcp_src", "tcp_dst", "udp_src",
    "udp_dst", "icmpv4_type", "icmpv4_code", "icmpv6_type", "icmpv6_code", "arp_op",
    "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "ipv6_nd_target", "ipv6_nd_sll",
    "ipv6_nd_tll", "sctp_src", "sctp_dst",
}
_HEX = set("0123456789abcdefABCDEF")
_MAC_FIELDS = {"eth_dst", "eth_src", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"}
_IPV4_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
_IPV6_FIELDS = {"ipv6_src", "ipv6_dst", "ipv6_nd_target"}
_INT_BITS = {"vlan_vid": 13, "vlan_pcp": 3, "ip_dscp": 6, "ip_ecn": 2, "ipv6_flabel": 20,
             "tcp_src": 16, "tcp_dst": 16, "udp_src": 16, "udp_dst": 16,
             "icmpv4_type": 8, "icmpv4_code": 8, "icmpv6_type": 8, "icmpv6_code": 8,
             "arp_op": 16, "sctp_src": 16, "sctp_dst": 16}


def _field_bytes(name: str, value: Any) -> Any:
    """Check and normalise a set_field value (what the C compiler does)."""
    if name in _MAC_FIELDS:
        parts = value.split(":") if isinstance(value, str) else []
        if len(parts) != 6 or not all(1 <= len(x) <= 2 and all(c in _HEX for c in x)
                                      for x in parts):
            raise ValueError("bad value for %s: %r" % (name, value))
        return bytes(int(x, 16) for x in parts)
    if name in _IPV4_FIELDS or name in _IPV6_FIELDS:
        fam = socket.AF_INET if name in _IPV4_FIELDS else socket.AF_INET6
        try:
            if not isinstance(value, str):
                raise TypeError
            return socket.inet_pton(fam, value)
        except (OSError, TypeError, ValueError):
            raise ValueError("bad value for %s: %r" % (name, value)) from None
    bits = _INT_BITS[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 \
            or value >= (1 << bits):
        raise ValueError("bad value for %s: %r" % (name, value))
    return value


def compile_actions(actions: Sequence[Action]) -> List[Action]:
    """Validate an action list; raise ValueError on anything the fast path cannot run."""
    out: List[Action] = []
    for a in actions:
        if not isinstance(a, tuple) or not a:
            raise ValueError("action must be a non-empty tuple: %r" % (a,))
        kind = a[0]
        if kind == "output" and len(a) == 2 and isinstance(a[1], int) \
                and not isinstance(a[1], bool) and 0 <= a[1] < (1 << 32):
            out.append(("output", a[1]))
        elif kind == "set_field" and len(a) == 3:
            if a[1] not in _SETTABLE:
                raise ValueError("cannot set field %r" % (a[1],))
            out.append(("set_field", a[1], _field_bytes(a[1], a[2])))
        elif kind == "push_vlan" and len(a) == 2 and isinstance(a[1], int) \
                and a[1] in (ETH_P_8021Q, ETH_P_8021AD):
            out.append(("push_vlan", a[1]))
        elif kind in ("pop_vlan", "dec_ttl") and len(a) == 1:
            out.append((kind,))
        elif kind == "kp_lb" and len(a) == 2 and isinstance(a[1], int) \
                and not isinstance(a[1], bool) and 0 < a[1] < LB_MAX_VIPS:
            out.append(("kp_lb", a[1]))
        else:
            raise ValueError("bad action %r" % (a,))
    return out


def _set_bytes(buf: bytearray, off: int, new: bytes, p: _Parsed, l3_sum: bool,
               l4_sum: bool, in_l4: bool) -> None:
    """Write new bytes at off, adjusting the IPv4 header and/or L4 checksums."""
    old = bytes(buf[off:off + len(new)])
    buf[off:off + len(new)] = new
    if l3_sum and p.present & F_IPV4:
        _csum_replace(buf, p.l3 + 10, old, new)
    if l4_sum or in_l4:
        coff, udp = _l4_csum_off(p)
        if coff >= 0:
            _csum_replace(buf, coff, old, new, udp=udp)


def _set_sctp_port(buf: bytearray, p: _Parsed, off: int, v: int) -> None:
    """An SCTP port and the CRC32c again, a wrong one kept wrong (kp_proto.sctp)."""
    l4, end = p.l4, p.l3_end
    before = sctp.packet_crc(bytes(buf[l4:end]))
    buf[l4 + off:l4 + off + 2] = v.to_bytes(2, "big")
    crc = sctp.stored_crc(bytes(buf[l4:end])) ^ before ^ sctp.packet_crc(bytes(buf[l4:end]))
    at = l4 + sctp.CHECKSUM_OFFSET
    buf[at:at + 4] = crc.to_bytes(4, "little")


def _set_field(buf: bytearray, p: _Parsed, name: str, v: Any) -> None:
    pr = p.present
    l3 = p.l3
    if name == "eth_dst":
        buf[0:6] = v
    elif name == "eth_src":
        buf[6:12] = v
    elif name in ("vlan_vid", "vlan_pcp"):
        if not pr & F_VLAN:
            return
        tci = _u16(buf, 14)
        tci = (tci & 0xF000) | (v & 0x0FFF) if name == "vlan_vid" else \
            (tci & 0x1FFF) | (v << 13)
        buf[14:16] = tci.to_bytes(2, "big")
    elif name in ("ip_dscp", "ip_ecn"):
        if pr & F_IPV4:
            tos = buf[l3 + 1]
            tos = (tos & 3) | (v << 2) if name == "ip_dscp" else (tos & 0xFC) | v
            _set_bytes(buf, l3, bytes([buf[l3], tos]), p, True, False, False)
        elif pr & F_IPV6:
            tc = ((buf[l3] & 0x0F) << 4) | (buf[l3 + 1] >> 4)
            tc = (tc & 3) | (v << 2) if name == "ip_dscp" else (tc & 0xFC) | v
            buf[l3] = (buf[l3] & 0xF0) | (tc >> 4)
            buf[l3 + 1] = ((tc & 0x0F) << 4) | (buf[l3 + 1] & 0x0F)
    elif name in ("ipv4_src", "ipv4_dst"):
        if pr & F_IPV4:
            _set_bytes(buf, l3 + (12 if name == "ipv4_src" else 16), v, p, True, True,
                       False)
    elif name in ("ipv6_src", "ipv6_dst"):
        if pr & F_IPV6:
            _set_bytes(buf, l3 + (8 if name == "ipv6_src" else 24), v, p, False, True,
                       False)
    elif name == "ipv6_flabel":
        if pr & F_IPV6:
            buf[l3 + 1] = (buf[l3 + 1] & 0xF0) | (v >> 16)
            buf[l3 + 2:l3 + 4] = (v & 0xFFFF).to_bytes(2, "big")
    elif name in ("tcp_src", "tcp_dst"):
        if pr & F_TCP:
            _set_bytes(buf, p.l4 + (0 if name == "tcp_src" else 2), v.to_bytes(2, "big"),
                       p, False, False, True)
    elif name in ("udp_src", "udp_dst"):
        if pr & F_UDP:
            _set_bytes(buf, p.l4 + (0 if name == "udp_src" else 2), v.to_bytes(2, "big"),
                       p, False, False, True)
    elif name in ("sctp_src", "sctp_dst"):
        if pr & F_SCTP and p.l4 >= 0:
            _set_sctp_port(buf, p, 0 if name == "sctp_src" else 2, v)
    elif name in ("icmpv4_type", "icmpv4_code"):
        if pr & F_ICMPV4:
            l4 = p.l4
            word = bytearray(buf[l4:l4 + 2])
            word[0 if name == "icmpv4_type" else 1] = v
            old = bytes(buf[l4:l4 + 2])
            buf[l4:l4 + 2] = word
            _csum_replace(buf, l4 + 2, old, bytes(word))
    elif name in ("icmpv6_type", "icmpv6_code"):
        if pr & F_ICMPV6:
            word = bytearray(buf[p.l4:p.l4 + 2])
            word[0 if name == "icmpv6_type" else 1] = v
            _set_bytes(buf, p.l4, bytes(word), p, False, False, True)
    elif name == "arp_op":
        if pr & F_ARP:
            buf[l3 + 6:l3 + 8] = v.to_bytes(2, "big")
    elif name in ("arp_sha", "arp_spa", "arp_tha", "arp_tpa"):
        if pr & F_ARP:
            off = {"arp_sha": 8, "arp_spa": 14, "arp_tha": 18, "arp_tpa": 24}[name]
            buf[l3 + off:l3 + off + len(v)] = v
    elif name == "ipv6_nd_target":
        if pr & F_ND_TARGET:
            _set_bytes(buf, p.l4 + 8, v, p, False, False, True)
    elif name == "ipv6_nd_sll":
        if pr & F_ND_SLL:
            _set_bytes(buf, p.sll_off, v, p, False, False, True)
    elif name == "ipv6_nd_tll":
        if pr & F_ND_TLL:
            _set_bytes(buf, p.tll_off, v, p, False, False, True)


def _dec_ttl(buf: bytearray, p: _Parsed) -> bool:
    """Decrement the TTL / hop limit; False means the packet must be dropped."""
    if p.present & F_IPV4:
        ttl = buf[p.l3 + 8]
        if ttl <= 1:
            return False
        _set_bytes(buf, p.l3 + 8, bytes([ttl - 1, buf[p.l3 + 9]]), p, True, False, False)
    elif p.present & F_IPV6:
        hl = buf[p.l3 + 7]
        if hl <= 1:
            return False
        buf[p.l3 + 7] = hl - 1
    return True


def _run(buf: bytearray, in_port: int, prog: Sequence[Action],
         lb_hook: Any = None) -> List[Tuple[int, bytes]]:
    """Apply a compiled program; return the (port, frame) outputs in order.  kp_lb ends
    the program: lb_hook(buf, vip_id) returns the outputs of the translated packet's
    second pass (no hook: dropped)."""
    outs: List[Tuple[int, bytes]] = []
    p = _parse(bytes(buf), in_port)
    if p is None:
        return outs
    for a in prog:
        kind = a[0]
        if kind == "output":
            outs.append((a[1], bytes(buf)))
        elif kind == "set_field":
            _set_field(buf, p, a[1], a[2])
        elif kind == "push_vlan":
            tci = _u16(buf, 14) if p.present & F_VLAN else 0
            buf[12:12] = a[1].to_bytes(2, "big") + tci.to_bytes(2, "big")
            p = _parse(bytes(buf), in_port)
        elif kind == "pop_vlan":
            if p.present & F_VLAN:
                del buf[12:16]
                p = _parse(bytes(buf), in_port)
        elif kind == "dec_ttl":
            if not _dec_ttl(buf, p):
                break
        elif kind == "kp_lb":
            if lb_hook is not None:
                outs.extend(lb_hook(buf, a[1]))
            break
        assert p is not None
    return outs


def _lb_key(p: Optional[_Parsed]):
    """The load balancer's session key of a parsed packet (lb_ref.Key), or None."""
    if p is None or not p.present & (F_IPV4 | F_IPV6) \
            or not p.present & (F_TCP | F_UDP | F_SCTP):
        return None
    n = 16 if p.present & F_IPV6 else 4
    return (p.ip_proto, 6 if n == 16 else 4, p.nw_src[:n], p.tp_src, p.nw_dst[:n], p.tp_dst)


def _lb_flags(p: _Parsed, frame: bytes) -> int:
    """What the load balancer's session states follow: the TCP flags, or for SCTP the
    chunks' kp_proto.sctp.chunk_summary."""
    if p.present & F_SCTP and p.l4 >= 0:
        return sctp.chunk_summary(bytes(frame[p.l4:p.l3_end]))
    return p.tcp_flags


def _lb_rewrite(buf: bytearray, p: _Parsed, dst, src) -> None:
    """Rewrite the destination and/or source (address bytes, port or None), with
    checksums, as csrc/lb.c does."""
    v6 = bool(p.present & F_IPV6)
    fam = "ipv6" if v6 else "ipv4"
    l4 = "tcp" if p.present & F_TCP else "udp" if p.present & F_UDP \
        else "sctp" if p.present & F_SCTP else None
    acts: List[Action] = []
    for which, new in (("dst", dst), ("src", src)):
        if new is None:
            continue
        addr, port = new
        acts.append(("set_field", "%s_%s" % (fam, which),
                     str(ipaddress.ip_address(bytes(addr[:16 if v6 else 4])))))
        if port is not None and l4:
            acts.append(("set_field", "%s_%s" % (l4, which), port))
    if acts:
        _run(buf, p.in_port, compile_actions(acts))


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32c (SCTP's checksum), as the C extension's."""
    return sctp.crc32c(bytes(data), crc)


def crc32c_impls(data: bytes) -> List[int]:
    """The CRC32c of data by each implementation (the C one has tables and SSE4.2)."""
    return [crc32c(data)]


def _frag_key(buf: bytes, p: _Parsed) -> tuple:
    """A fragment's key in the load balancer's fragment table (csrc/lb.c frag_slot)."""
    v6 = bool(p.present & F_IPV6)
    ident = int.from_bytes(buf[p.frag_hdr + 4:p.frag_hdr + 8], "big") if v6 \
        else _u16(buf, p.l3 + 4)
    return (6 if v6 else 4, p.nw_src, p.nw_dst, p.ip_proto, ident)


_ICMP_ERRORS = {F_ICMPV4: (3, 11, 12), F_ICMPV6: (1, 2, 3, 4)}


def _lb_icmp_translate(buf: bytearray, p: _Parsed, lb: LoadBalancer) -> bool:
    """An ICMP error about a session's packet, translated back in place (outer and
    quoted headers, checksums): csrc/lb_icmp.c, which says why and how."""
    v6 = bool(p.present & F_IPV6)
    kind = F_ICMPV6 if v6 else F_ICMPV4
    if not p.present & kind or p.tp_src not in _ICMP_ERRORS[kind] or p.l4 < 0 or p.frag:
        return False
    ic, end = p.l4 + 8, p.l3_end
    ihsum = None
    if not v6:
        if end - ic < 20 or buf[ic] >> 4 != 4:
            return False
        ihl = (buf[ic] & 15) * 4
        if ihl < 20 or ihl > end - ic or _u16(buf, ic + 6) & 0x1FFF:
            return False
        proto, asrc, adst, ihsum = buf[ic + 9], ic + 12, ic + 16, ic + 10
    else:
        if end - ic < 40 or buf[ic] >> 4 != 6:
            return False
        ihl, proto, asrc, adst = 40, buf[ic + 6], ic + 8, ic + 24
    ip4 = ic + ihl
    if proto not in (IPPROTO_TCP, IPPROTO_UDP) or end - ip4 < 4:
        return False
    udp = proto == IPPROTO_UDP
    n = 16 if v6 else 4
    isrc, idst = bytes(buf[asrc:asrc + n]), bytes(buf[adst:adst + n])
    r = lb.lookup((proto, 6 if v6 else 4, idst, _u16(buf, ip4 + 2), isrc, _u16(buf, ip4)))
    if r is None:
        return False
    l4sum = None
    if end - ip4 >= (8 if udp else 18) and not (udp and _u16(buf, ip4 + 6) == 0):
        l4sum = ip4 + (6 if udp else 16)

    def put(off: int, new: bytes, hsum: Optional[int], lsum: Optional[int]) -> None:
        old = bytes(buf[off:off + len(new)])
        buf[off:off + len(new)] = new
        if hsum is not None:
            _csum_replace(buf, hsum, old, new)
        if lsum is not None:
            _csum_replace(buf, lsum, old, new, udp)

    if r.new_dst is not None:
        put(asrc, r.new_dst[:n], ihsum, l4sum)
        put(ip4, r.new_dport.to_bytes(2, "big"), None, l4sum)
    if r.new_src is not None:
        put(adst, r.new_src[:n], ihsum, l4sum)
        put(ip4 + 2, r.new_sport.to_bytes(2, "big"), None, l4sum)
    os_, od = p.l3 + (8 if v6 else 12), p.l3 + (24 if v6 else 16)
    hsum = None if v6 else p.l3 + 10
    if r.new_src is not None and bytes(buf[os_:os_ + n]) == idst:
        put(os_, r.new_src[:n], hsum, None)
    if r.new_dst is not None and bytes(buf[od:od + n]) == isrc:
        put(od, r.new_dst[:n], hsum, None)
    buf[p.l4 + 2:p.l4 + 4] = b"\0\0"
    total = _sum16(bytes(buf[p.l4:end]))
    if v6:
        total += _sum16(bytes(buf[os_:os_ + 16]) + bytes(buf[od:od + 16]) +
                        struct.pack("!IxxxB", end - p.l4, IPPROTO_ICMPV6))
    buf[p.l4 + 2:p.l4 + 4] = ((~_fold(total)) & 0xFFFF).to_bytes(2, "big")
    lb.c["icmp_errors"] += 1
    return True


def apply_actions(packet: bytes, actions: Sequence[Action],
                  in_port: int = 0) -> List[Tuple[int, bytes]]:
    """Test helper: run actions on a copy of packet; the (port, frame) outputs."""
    return _run(bytearray(packet), in_port, compile_actions(actions))


# --------------------------------------------------------------------------- cache


def _cache_key(blob: bytes) -> Tuple[bytes, Optional[bytes], bool]:
    """(the compact key with IPv6 addresses 0, the 32 bytes of IPv6 source and
    destination or None, whether the blob is cacheable).  Cacheable: the compact key
    (plus the IPv6 addresses) says everything the blob says, and the packet is not ARP
    or neighbour discovery (the controller handles those; they take the slow path)."""
    (in_port, present, eth_dst, eth_src, eth_type, vid, pcp, proto, dscp, ecn, tcp_flags,
     pad, flabel, tp_src, tp_dst, nw_src, nw_dst, nd_target, sha, tha) = _KEY.unpack(blob)
    v6 = present & F_IPV6
    ck = _CKEY.pack(in_port & 0xFFFF, present & 0xFFFF, eth_dst, eth_src, eth_type,
                    (vid & 0x1FFF) | (pcp & 7) << 13, proto, (dscp & 63) << 2 | (ecn & 3),
                    tcp_flags, tp_src, tp_dst, flabel,
                    0 if v6 else int.from_bytes(nw_src[:4], "little"),
                    0 if v6 else int.from_bytes(nw_dst[:4], "little"))
    ok = (in_port <= 0xFFFF and not present & ~_CACHEABLE and vid <= 0x1FFF and pcp <= 7
          and dscp <= 63 and ecn <= 3 and not pad and not any(nd_target)
          and not any(sha) and not any(tha)
          and (bool(v6) or not any(nw_src[4:]) and not any(nw_dst[4:])))
    return ck, (nw_src + nw_dst) if v6 else None, ok


def _ckey_hash(ck: bytes, v6: Optional[bytes]) -> int:
    words = struct.unpack("<5Q", ck)
    tail = struct.unpack("<4Q", v6) if v6 is not None else words[4:]
    return secret_hash(words[:4] + tail)


def key_hash(blob: bytes) -> int:
    """The hash of the compact key's first four 64-bit little-endian words, then its
    fifth or, for IPv6, the four words of the source and destination addresses
    (SipHash-1-3 under the process secret, keyed_hash; low 32 bits)."""
    ck, v6, _ = _cache_key(blob)
    return _ckey_hash(ck, v6)


def session_hash(blob: bytes, basis: int) -> int:
    """Open vSwitch's symmetric_l3l4+udp hash of the key's 5-tuple: the C twin's
    definition is kp_proto.session_hash, which kp_app's model uses too."""
    (_, present, _, _, _, _, _, proto, _, _, _, _, _, tp_src, tp_dst, nw_src, nw_dst,
     *_rest) = _KEY.unpack(blob)
    if present & F_IPV4:
        src, dst = ipaddress.IPv4Address(nw_src[:4]), ipaddress.IPv4Address(nw_dst[:4])
    elif present & F_IPV6:
        src, dst = ipaddress.IPv6Address(nw_src), ipaddress.IPv6Address(nw_dst)
    else:
        raise ValueError("session_hash: not an IPv4 or IPv6 key")
    ported = bool(present & (F_TCP | F_UDP | F_SCTP))  # a later fragment's key has none
    return _session_hash(proto, src, tp_src, dst, tp_dst, basis, fragment=not ported)


def _is_pow2(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_BUCKETS \
        and n & (n - 1) == 0


def _check_ids(flow_ids: Sequence[int]) -> Tuple[int, ...]:
    ids = tuple(flow_ids)
    if len(ids) > MAX_IDS_PER_INSERT:
        raise ValueError("at most %d flow ids" % MAX_IDS_PER_INSERT)
    for i in ids:
        if not isinstance(i, int) or not 0 <= i < MAX_FLOW_IDS:
            raise ValueError("flow id out of range: %r" % (i,))
    return ids


class FlowCache:
    """The exact-match flow cache (see csrc/flow_cache.h for the rationale).

    Buckets of WAYS slots; a key has two candidate buckets (``buckets_of``): lookups
    probe the first then the second, inserts take the key's own slot, else the first
    free or dead way of the first bucket then of the second, else evict the least
    recently used of both buckets' slots.  A slot is (hash, last_used_ms, program, epoch) plus the
    full key and the flow ids.  Programs (action lists) are interned in a pool of
    PROG_POOL shared, reference-counted entries, and so are the IPv6 addresses of
    cached keys (ADDR_POOL).  Keys that are not cacheable (``_cache_key``) are never
    cached: a lookup is a miss, an insert a failure.  Invalidation is by epochs: a slot
    is live while its insert epoch is not older than the global invalidation epoch
    and the invalidation epoch of each of its flow ids.

    Epochs are 64-bit (never wrap); an exact slot keeps the low 32 bits of its insert
    epoch (the bucket line has no room for more) and its full epoch is the current
    one minus the 32-bit distance.  That is exact while a slot is younger than 2^32
    invalidations, which the age sweep guarantees: every invalidation looks at one
    bucket (``age_cursor``) and drops the slots AGE_LIMIT (2^31) or more
    invalidations old, so a full round of the table takes at most MAX_BUCKETS (2^20)
    invalidations.  Dropping a slot is always safe (counted as invalidated).

    Below the exact slots, the megaflow tier (``_mf_*``, csrc/megaflow.h): entries
    (mask, masked key) -> program and flow ids, one subtable per distinct mask
    (tuple-space search), in a shared table of MF_BUCKETS buckets of MF_WAYS slots.
    An exact miss probes the subtables in ``mf_order`` (ranked by hits: a hit moves
    its subtable one place up when it has more hits than the one before); a hit also
    inserts the exact key into the exact tier.  Megaflow entries keep their full
    64-bit insert epoch, and are live under the same rule as exact slots.
    """

    def __init__(self, buckets: int) -> None:
        if not _is_pow2(buckets):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (buckets,))
        self.buckets = buckets
        n = buckets * WAYS
        self.hash = [0] * n
        self.used = [0] * n
        self.prog = [0] * n          # 0: empty slot
        self.epoch = [0] * n
        self.key: List[bytes] = [b""] * n
        self.ids: List[Tuple[int, ...]] = [()] * n
        self.cur_epoch = 0           # 64-bit, never wraps
        self.all_inval = 0
        self.flow_inval: Dict[int, int] = {}
        self.age_cursor = 0
        # Megaflows: slots of MF_BUCKETS x MF_WAYS, subtables by index.
        m = MF_BUCKETS * MF_WAYS
        self.mf_hash = [0] * m
        self.mf_used = [0] * m
        self.mf_prog = [0] * m        # 0: empty slot
        self.mf_sub = [0] * m
        self.mf_key: List[Tuple[int, ...]] = [()] * m
        self.mf_epoch = [0] * m
        self.mf_ids: List[Tuple[int, ...]] = [()] * m
        self.sub_mask: List[Optional[Tuple[int, ...]]] = [None] * MF_SUBTABLES
        self.sub_hits = [0] * MF_SUBTABLES
        self.sub_n = [0] * MF_SUBTABLES
        self.mf_order: List[int] = []  # subtables in probe order
        self.mf_cursor = 0
        # Program pool: index 1..PROG_POOL; free list pops the lowest index first.
        self.progs: Dict[int, Tuple[Any, ...]] = {}
        self.prog_ref: Dict[int, int] = {}
        self.prog_index: Dict[Tuple[Any, ...], int] = {}
        self.free_progs = list(range(PROG_POOL, 0, -1))
        # Address pool: interned IPv6 address -> reference count (ADDR_POOL at most).
        self.addr_ref: Dict[bytes, int] = {}
        self.reclaim_cursor = 0
        self.st = dict(hits=0, misses=0, inserts=0, insert_failures=0, evictions=0,
                       expired=0, invalidated=0, entries=0, mf_hits=0, mf_inserts=0,
                       mf_insert_failures=0, mf_entries=0)

    # -- helpers
    def _slot_epoch(self, s: int) -> int:
        """Slot s's full insert epoch from its low 32 bits (exact below 2^32 old)."""
        return self.cur_epoch - ((self.cur_epoch - self.epoch[s]) & 0xFFFFFFFF)

    def _ids_live(self, epoch: int, ids: Tuple[int, ...]) -> bool:
        if epoch < self.all_inval:
            return False
        return all(epoch >= self.flow_inval.get(i, 0) for i in ids)

    def _live(self, s: int) -> bool:
        return self._ids_live(self._slot_epoch(s), self.ids[s])

    def _expired(self, s: int, now: int) -> bool:
        return _sdiff(now, self.used[s]) > CACHE_IDLE_MS

    def _unref_prog(self, pi: int) -> None:
        self.prog_ref[pi] -= 1
        if self.prog_ref[pi] == 0:
            del self.prog_index[self.progs.pop(pi)]
            del self.prog_ref[pi]
            self.free_progs.append(pi)

    def _unref_addr(self, a: bytes) -> None:
        self.addr_ref[a] -= 1
        if self.addr_ref[a] == 0:
            del self.addr_ref[a]

    def _intern_addr(self, a: bytes, now: int) -> bool:
        """Interns a (reference count 0 if new); False if the pool is full of live ones."""
        if a not in self.addr_ref:
            if len(self.addr_ref) == ADDR_POOL:
                self._reclaim(now)
            if len(self.addr_ref) == ADDR_POOL:
                return False
            self.addr_ref[a] = 0
        return True

    def _free(self, s: int) -> None:
        pi = self.prog[s]
        self.prog[s] = 0
        self.st["entries"] -= 1
        self._unref_prog(pi)
        _, v6, _ = _cache_key(self.key[s])
        if v6 is not None:
            self._unref_addr(v6[:16])
            self._unref_addr(v6[16:])

    def _reap(self, s: int, now: int) -> bool:
        """Free slot s if it is dead (expired or invalidated); True if now free."""
        if not self.prog[s]:
            return True
        if self._expired(s, now):
            self.st["expired"] += 1
        elif not self._live(s):
            self.st["invalidated"] += 1
        else:
            return False
        self._free(s)
        return True

    def _intern(self, prog: Tuple[Any, ...], now: int) -> int:
        pi = self.prog_index.get(prog)
        if pi is None:
            if not self.free_progs:
                self._reclaim(now)
            if not self.free_progs:
                return 0
            pi = self.free_progs.pop()
            self.progs[pi] = prog
            self.prog_index[prog] = pi
            self.prog_ref[pi] = 0
        return pi

    def _reclaim(self, now: int) -> None:
        for _ in range(min(RECLAIM_BUCKETS, self.buckets)):
            b = self.reclaim_cursor
            self.reclaim_cursor = (b + 1) & (self.buckets - 1)
            for w in range(WAYS):
                self._reap(b * WAYS + w, now)
        self._mf_sweep(RECLAIM_BUCKETS, now)

    def bucket_of(self, blob: bytes) -> int:
        return key_hash(blob) & (self.buckets - 1)

    def buckets_of(self, blob: bytes) -> Tuple[int, int]:
        h = key_hash(blob)
        return h & (self.buckets - 1), _alt_bucket(h, self.buckets - 1)

    def _bases(self, h: int) -> List[int]:
        """The first slot of each of the key's buckets: the first bucket, then the
        second unless it is the same (a one-bucket cache)."""
        mask = self.buckets - 1
        b1, b2 = h & mask, _alt_bucket(h, mask)
        return [b1 * WAYS] if b1 == b2 else [b1 * WAYS, b2 * WAYS]

    # -- the API the datapath uses
    def lookup(self, blob: bytes, now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        """The exact tier, then the megaflow tier; counts one of hits, mf_hits, misses."""
        ck, v6, ok = _cache_key(blob)
        if not ok:
            self.st["misses"] += 1
            return None
        h = _ckey_hash(ck, v6)
        found = self._exact_lookup(blob, h, now)
        if found is not None:
            self.st["hits"] += 1
            return found
        found = self._mf_lookup(blob, ck, h, now)
        if found is not None:
            self.st["mf_hits"] += 1
            return found
        self.st["misses"] += 1
        return None

    def _exact_lookup(self, blob: bytes, h: int,
                      now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        for base in self._bases(h):              # first bucket, then second
            for s in range(base, base + WAYS):
                if self.prog[s] and self.hash[s] == h and self.key[s] == blob:
                    # A key is in at most one slot: a dead one is a miss.
                    if self._reap(s, now):
                        return None
                    self.used[s] = now
                    return self.progs[self.prog[s]], self.ids[s]
        return None

    def insert(self, blob: bytes, prog: Tuple[Any, ...], flow_ids: Sequence[int],
               now: int, mask: Optional[Tuple[int, ...]] = None) -> bool:
        """The exact entry (True if it went in) and, with `mask` (from ``_mf_mask``),
        the megaflow entry (mf_inserts or mf_insert_failures)."""
        if len(blob) != KEY_SIZE:
            raise ValueError("key blob must be %d bytes" % KEY_SIZE)
        ids = _check_ids(flow_ids)
        ck, v6, ok = _cache_key(blob)
        if not ok or len(prog) > MAX_OPS or len(ids) > MAX_IDS_PER_ENTRY:
            self.st["insert_failures"] += 1
            if mask is not None:
                self.st["mf_insert_failures"] += 1
            return False
        h = _ckey_hash(ck, v6)
        pi = self._intern(prog, now)
        if not pi:
            self.st["insert_failures"] += 1
            if mask is not None:
                self.st["mf_insert_failures"] += 1
            return False
        self.prog_ref[pi] += 1                  # held until the inserts below are done
        done = self._exact_place(blob, v6, h, pi, ids, now)
        if mask is not None:
            self._mf_insert(blob, ck, mask, pi, ids, now)
        self._unref_prog(pi)
        return done

    def _exact_place(self, blob: bytes, v6: Optional[bytes], h: int, pi: int,
                     ids: Tuple[int, ...], now: int) -> bool:
        """Puts the cacheable key in a slot with program pi (which the caller holds)."""
        self.prog_ref[pi] += 1                  # the slot's reference
        if v6 is not None:
            src, dst = v6[:16], v6[16:]
            src_ok = self._intern_addr(src, now)
            if src_ok:
                self.addr_ref[src] += 1
            if not src_ok or not self._intern_addr(dst, now):
                if src_ok:
                    self._unref_addr(src)
                self._unref_prog(pi)
                self.st["insert_failures"] += 1
                return False
            self.addr_ref[dst] += 1
        slots = [s for base in self._bases(h) for s in range(base, base + WAYS)]
        slot = -1
        for s in slots:                          # the same key (either bucket): in place
            if self.prog[s] and self.hash[s] == h and self.key[s] == blob:
                self._free(s)
                slot = s
                break
        if slot < 0:
            for s in slots:                      # first free, expired or dead way, first
                if self._reap(s, now):           # bucket first
                    slot = s
                    break
        if slot < 0:                             # all live: evict the least recently used
            slot = slots[0]                      # of both buckets (ties: the earlier)
            for s in slots[1:]:
                if _sdiff(now, self.used[s]) > _sdiff(now, self.used[slot]):
                    slot = s
            self.st["evictions"] += 1
            self._free(slot)
        self.hash[slot], self.used[slot], self.prog[slot] = h, now, pi
        self.epoch[slot] = self.cur_epoch & 0xFFFFFFFF
        self.key[slot], self.ids[slot] = blob, ids
        self.st["inserts"] += 1
        self.st["entries"] += 1
        return True

    def invalidate_flow(self, flow_id: int) -> None:
        _check_ids([flow_id])
        self.cur_epoch += 1
        self.flow_inval[flow_id] = self.cur_epoch
        self._age_sweep(1)

    def invalidate_all(self) -> None:
        self.cur_epoch += 1
        self.all_inval = self.cur_epoch
        self._age_sweep(1)

    def _age_sweep(self, n: int) -> None:
        """Drop the slots of n buckets (from age_cursor) AGE_LIMIT or more epochs old."""
        for _ in range(n):
            b = self.age_cursor
            self.age_cursor = (b + 1) & (self.buckets - 1)
            for s in range(b * WAYS, b * WAYS + WAYS):
                if self.prog[s] and (self.cur_epoch - self.epoch[s]) & 0xFFFFFFFF >= AGE_LIMIT:
                    self.st["invalidated"] += 1
                    self._free(s)

    def advance_epoch(self, n: int) -> None:
        """Test hook: the epoch as after n more invalidations of no entry (the age sweep
        then covers the whole table, as n real ones would have by then)."""
        if not isinstance(n, int) or not 0 <= n < 1 << 62:
            raise ValueError("epoch step out of range: %r" % (n,))
        self.cur_epoch += n
        self._age_sweep(self.buckets)

    # -- megaflows
    def _mf_free(self, s: int) -> None:
        pi, sub = self.mf_prog[s], self.mf_sub[s]
        self.mf_prog[s] = 0
        self.st["mf_entries"] -= 1
        self._unref_prog(pi)
        self.sub_n[sub] -= 1
        if not self.sub_n[sub]:                  # the last entry: the subtable goes
            self.sub_mask[sub] = None
            self.mf_order.remove(sub)

    def _mf_reap(self, s: int, now: int) -> bool:
        if not self.mf_prog[s]:
            return True
        if _sdiff(now, self.mf_used[s]) > CACHE_IDLE_MS:
            self.st["expired"] += 1
        elif not self._ids_live(self.mf_epoch[s], self.mf_ids[s]):
            self.st["invalidated"] += 1
        else:
            return False
        self._mf_free(s)
        return True

    def _mf_sweep(self, n: int, now: int) -> None:
        for _ in range(n):
            b = self.mf_cursor
            self.mf_cursor = (b + 1) & (MF_BUCKETS - 1)
            for s in range(b * MF_WAYS, b * MF_WAYS + MF_WAYS):
                self._mf_reap(s, now)

    def _mf_lookup(self, blob: bytes, ck: bytes, h: int,
                   now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        """The first live megaflow entry matching the key, probing the subtables in
        mf_order; a hit also puts the exact key in the exact tier.  Dead entries are
        skipped, not reaped (the sweeps and inserts reap them), so the probe order never
        changes under the probe."""
        key = _mf_words(blob, ck)
        for pos, sub in enumerate(self.mf_order):
            mask = self.sub_mask[sub]
            mk = tuple(k & m for k, m in zip(key, mask))
            mh = _mf_hash(sub, mk)
            base = (mh & (MF_BUCKETS - 1)) * MF_WAYS
            for s in range(base, base + MF_WAYS):
                if not (self.mf_prog[s] and self.mf_hash[s] == mh and self.mf_sub[s] == sub
                        and self.mf_key[s] == mk):
                    continue
                if _sdiff(now, self.mf_used[s]) > CACHE_IDLE_MS or \
                        not self._ids_live(self.mf_epoch[s], self.mf_ids[s]):
                    break                        # dead: a later subtable may match
                self.mf_used[s] = now
                self.sub_hits[sub] += 1
                if pos and self.sub_hits[sub] > self.sub_hits[self.mf_order[pos - 1]]:
                    self.mf_order[pos - 1], self.mf_order[pos] = sub, self.mf_order[pos - 1]
                pi, ids = self.mf_prog[s], self.mf_ids[s]
                _, v6, _ = _cache_key(blob)
                prog = self.progs[pi]
                self.prog_ref[pi] += 1           # held while the exact copy goes in
                self._exact_place(blob, v6, h, pi, ids, now)
                self._unref_prog(pi)
                return prog, ids
        return None

    def _mf_insert(self, blob: bytes, ck: bytes, mask: Tuple[int, ...], pi: int,
                   ids: Tuple[int, ...], now: int) -> bool:
        """The megaflow entry (mask, key & mask) -> program pi (held by the caller)."""
        self._mf_sweep(MF_SWEEP_BUCKETS, now)
        sub = next((i for i in self.mf_order if self.sub_mask[i] == mask), -1)
        if sub < 0:
            free = [i for i in range(MF_SUBTABLES) if self.sub_mask[i] is None]
            if not free:
                self.st["mf_insert_failures"] += 1
                return False
            sub = free[0]
            self.sub_mask[sub], self.sub_hits[sub], self.sub_n[sub] = mask, 0, 0
            self.mf_order.append(sub)
        self.sub_n[sub] += 1                     # held: the frees below cannot drop it
        self.prog_ref[pi] += 1                   # the slot's reference
        mk = tuple(k & m for k, m in zip(_mf_words(blob, ck), mask))
        mh = _mf_hash(sub, mk)
        base = (mh & (MF_BUCKETS - 1)) * MF_WAYS
        slots = range(base, base + MF_WAYS)
        slot = -1
        for s in slots:                          # the same entry: replaced in place
            if self.mf_prog[s] and self.mf_hash[s] == mh and self.mf_sub[s] == sub \
                    and self.mf_key[s] == mk:
                self._mf_free(s)
                slot = s
                break
        if slot < 0:
            for s in slots:                      # the first free or dead way
                if self._mf_reap(s, now):
                    slot = s
                    break
        if slot < 0:                             # all live: evict the least recently used
            slot = base                          # (ties: the lower way)
            for s in slots[1:]:
                if _sdiff(now, self.mf_used[s]) > _sdiff(now, self.mf_used[slot]):
                    slot = s
            self.st["evictions"] += 1
            self._mf_free(slot)
        self.mf_hash[slot], self.mf_used[slot], self.mf_prog[slot] = mh, now, pi
        self.mf_sub[slot], self.mf_key[slot] = sub, mk
        self.mf_epoch[slot], self.mf_ids[slot] = self.cur_epoch, ids
        self.st["mf_inserts"] += 1
        self.st["mf_entries"] += 1
        return True

    def stats(self) -> Dict[str, int]:
        d = dict(self.st)
        d["buckets"], d["ways"] = self.buckets, WAYS
        d["mf_subtables"] = len(self.mf_order)
        return d


def _alt_bucket(h: int, mask: int) -> int:
    """A key's second bucket (csrc/flow_cache.h cache_alt_bucket): the first bucket XOR
    the hash's upper half rotated into place with bit 0 set (never the first bucket
    unless there is only one)."""
    return (h & mask) ^ (((h >> 16) | (h << 16) | 1) & 0xFFFFFFFF & mask)


def _sdiff(a: int, b: int) -> int:
    """a - b on a 32-bit wrapping clock, as a signed number."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


def _mf_words(blob: bytes, ck: bytes) -> Tuple[int, ...]:
    """The megaflow form of a cacheable key (struct mf_key): the compact key's first
    four words, then the 16 bytes of nw_src and of nw_dst as the blob has them (an
    IPv4 address in the first four, the rest 0), eight 64-bit little-endian words."""
    return struct.unpack("<4Q", ck[:32]) + struct.unpack("<4Q", blob[40:72])


def _mf_mask(mask_blob: bytes) -> Tuple[int, ...]:
    """A megaflow mask (``mask_blob``: a struct flow_key whose fields hold the bits the
    classification looked at) in megaflow form; `present` is always matched whole
    (which headers a packet has is part of every answer).  ValueError for a mask no
    cacheable key can use: wrong size, bits beyond a field's width, a non-zero pad,
    or neighbour discovery / ARP-only fields."""
    mask_blob = bytes(mask_blob)
    if len(mask_blob) != KEY_SIZE:
        raise ValueError("mask_blob must be %d bytes" % KEY_SIZE)
    (in_port, _present, eth_dst, eth_src, eth_type, vid, pcp, proto, dscp, ecn, tcp_flags,
     pad, flabel, tp_src, tp_dst, nw_src, nw_dst, nd_target, sha, tha) = _KEY.unpack(mask_blob)
    if vid > 0x1FFF or pcp > 7 or dscp > 63 or ecn > 3 or pad or any(nd_target) \
            or any(sha) or any(tha):
        raise ValueError("not a megaflow mask (a field's bits out of range or one that "
                         "no cacheable packet has)")
    ck = _CKEY.pack(in_port & 0xFFFF, 0xFFFF, eth_dst, eth_src, eth_type, vid | pcp << 13,
                    proto, dscp << 2 | ecn, tcp_flags, tp_src, tp_dst, flabel, 0, 0)
    return struct.unpack("<4Q", ck[:32]) + struct.unpack("<4Q", nw_src + nw_dst)


def _mf_hash(sub: int, words: Tuple[int, ...]) -> int:
    """A masked key's hash in subtable `sub` (csrc/megaflow.c mf_hash)."""
    return secret_hash((sub,) + tuple(words))


class CacheForTest:
    """Test-only view of FlowCache with explicit time (mirrors _fastpath._CacheForTest)."""

    def __init__(self, buckets: int) -> None:
        self._c = FlowCache(buckets)

    def insert(self, key_blob: bytes, actions: list, flow_ids: List[int],
               now_ms: int, mask_blob: Optional[bytes] = None) -> bool:
        """The exact entry (True if it went in) and, with mask_blob, the megaflow one."""
        mask = None if mask_blob is None else _mf_mask(mask_blob)
        return self._c.insert(bytes(key_blob), tuple(compile_actions(actions)), flow_ids,
                              now_ms & 0xFFFFFFFF, mask)

    def advance_epoch(self, n: int) -> None:
        """Test hook: as after n invalidations of no entry (see FlowCache.advance_epoch)."""
        self._c.advance_epoch(n)

    def lookup(self, key_blob: bytes, now_ms: int) -> Optional[Tuple[list, List[int]]]:
        r = self._c.lookup(bytes(key_blob), now_ms & 0xFFFFFFFF)
        if r is None:
            return None
        return [_uncompile(a) for a in r[0]], list(r[1])

    def invalidate_flow(self, flow_id: int) -> None:
        self._c.invalidate_flow(flow_id)

    def invalidate_all(self) -> None:
        self._c.invalidate_all()

    def bucket_of(self, key_blob: bytes) -> int:
        return self._c.bucket_of(bytes(key_blob))

    def buckets_of(self, key_blob: bytes) -> Tuple[int, int]:
        return self._c.buckets_of(bytes(key_blob))

    def stats(self) -> Dict[str, int]:
        return self._c.stats()


_CacheForTest = CacheForTest


def _uncompile(a: Action) -> Action:
    if a[0] != "set_field":
        return a
    name, v = a[1], a[2]
    if name in _MAC_FIELDS:
        return ("set_field", name, _mac(v))
    if name in _IPV4_FIELDS:
        return ("set_field", name, _ipv4(v))
    if name in _IPV6_FIELDS:
        return ("set_field", name, _ipv6(v))
    return a


# --------------------------------------------------------------------------- datapath

SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4 = 1, 4, 5
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
SEG_ANY_MTU = 65535      # segment_tcp's mtu when only the sender's segment size limits
_VNET = struct.Struct("=BBHHHH")     # flags, gso_type, hdr_len, gso_size, csum_start/offset
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_ALL = 3
_AUX = struct.Struct("=IIIHHHH")


def _now_ms() -> int:
    return (time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF


class _Port:
    def __init__(self, port_no: int, ifname: str) -> None:
        self.port_no, self.ifname = port_no, ifname
        self.up = True
        # As the C port: received frames come after a virtio-net header (a UDP GSO
        # frame's segment size), so sending takes a second socket, which needs none.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.vnet = True
            except OSError:
                self.vnet = False
            self.sock.bind((ifname, ETH_P_ALL))
            self.sock.setblocking(False)
            self.tx.bind((ifname, 0))
            self.tx.setblocking(False)
        except OSError:
            self.sock.close()
            self.tx.close()
            raise
        self.mtu = _mtu(ifname)
        self.st = dict(rx_packets=0, rx_bytes=0, rx_dropped=0, rx_errors=0, tx_packets=0,
                       tx_bytes=0, tx_dropped=0, tx_errors=0)


def _mtu(ifname: str) -> int:
    try:
        with open("/sys/class/net/%s/mtu" % ifname) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1500


def _finish_segment(seg: bytearray, l3: int, l4: int, v4: bool, ip_id: int, proto: int,
                    csum_at: int) -> bytes:
    """A segment's IP length and id (IPv4: and header checksum) and full L4 checksum."""
    l4len = len(seg) - l4
    if v4:
        seg[l3 + 2:l3 + 4] = (len(seg) - l3).to_bytes(2, "big")
        seg[l3 + 4:l3 + 6] = (ip_id & 0xFFFF).to_bytes(2, "big")
        seg[l3 + 10:l3 + 12] = b"\0\0"
        seg[l3 + 10:l3 + 12] = ((~_fold(_sum16(bytes(seg[l3:l4])))) & 0xFFFF) \
            .to_bytes(2, "big")
        pseudo = bytes(seg[l3 + 12:l3 + 20]) + struct.pack("!HH", proto, l4len)
    else:
        seg[l3 + 4:l3 + 6] = (len(seg) - l3 - 40).to_bytes(2, "big")
        pseudo = bytes(seg[l3 + 8:l3 + 40]) + struct.pack("!IxxxB", l4len, proto)
    seg[l4 + csum_at:l4 + csum_at + 2] = b"\0\0"
    csum = (~_fold(_sum16(pseudo) + _sum16(bytes(seg[l4:])))) & 0xFFFF
    if proto == 17 and csum == 0:
        csum = 0xFFFF                                    # 0 would mean "no checksum"
    seg[l4 + csum_at:l4 + csum_at + 2] = csum.to_bytes(2, "big")
    return bytes(seg)


def segment_tcp(frame: bytes, mtu: int, seg_size: int = 0) -> List[bytes]:
    """Software TSO: split a TCP frame (a GSO packet from a veth) into frames whose IP
    packets fit mtu and, unless seg_size is 0, carry at most seg_size payload bytes (the
    sender's GSO size), each with its IP length/id and TCP seq/flags/checksum fixed.
    Frames that are not TCP or already fit are returned as they are, and so are IP
    fragments (never cut as if whole); [] when the segment size would be below
    SEG_MIN_SIZE (refused: the frame is dropped)."""
    p = _parse(frame, 0)
    if p is None or p.l3 < 0 or not p.present & F_TCP or p.frag:
        return [frame]
    l3, l4 = p.l3, p.l4
    hdr_end = l4 + (frame[l4 + 12] >> 4) * 4
    mss = mtu - (hdr_end - l3)
    if seg_size and seg_size < mss:
        mss = seg_size
    payload = frame[hdr_end:p.l3_end]
    if len(payload) <= mss:
        return [frame]
    if mss < SEG_MIN_SIZE:
        return []
    seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
    flags = _u16(frame, l4 + 12)
    v4 = bool(p.present & F_IPV4)
    ip_id = _u16(frame, l3 + 4) if v4 else 0
    out = []
    for i, start in enumerate(range(0, len(payload), mss)):
        chunk = payload[start:start + mss]
        last = start + mss >= len(payload)
        seg = bytearray(frame[:hdr_end]) + chunk
        f = flags if last else flags & ~0x0009          # FIN and PSH only on the last
        if start:
            f &= ~0x0080                                 # CWR only on the first
        seg[l4 + 12:l4 + 14] = f.to_bytes(2, "big")
        seg[l4 + 4:l4 + 8] = ((seq + start) & 0xFFFFFFFF).to_bytes(4, "big")
        out.append(_finish_segment(seg, l3, l4, v4, ip_id + i, 6, 16))
    return out


def segment_udp(frame: bytes, gso_size: int) -> List[bytes]:
    """A UDP GSO frame (datagrams a sender wrote with UDP_SEGMENT, joined) cut back into
    its datagrams of gso_size payload bytes, each with its IP length/id, UDP length and
    checksums fixed.  Frames that are not UDP or hold one datagram are returned as
    they are (fragments too); [] for a gso_size below SEG_MIN_SIZE (refused)."""
    p = _parse(frame, 0)
    if not gso_size or p is None or p.l3 < 0 or not p.present & F_UDP or p.frag:
        return [frame]
    l3, l4 = p.l3, p.l4
    hdr_end = l4 + 8
    payload = frame[hdr_end:p.l3_end]
    if len(payload) <= gso_size:
        return [frame]
    if gso_size < SEG_MIN_SIZE:
        return []
    v4 = bool(p.present & F_IPV4)
    ip_id = _u16(frame, l3 + 4) if v4 else 0
    out = []
    for i, start in enumerate(range(0, len(payload), gso_size)):
        chunk = payload[start:start + gso_size]
        seg = bytearray(frame[:hdr_end]) + chunk
        seg[l4 + 4:l4 + 6] = (8 + len(chunk)).to_bytes(2, "big")
        out.append(_finish_segment(seg, l3, l4, v4, ip_id + i, 17, 6))
    return out


class Datapath:
    """The fast path's API (FASTPATH.md) on plain AF_PACKET sockets and a Python thread."""

    def __init__(self, ports: List[Tuple[int, str]], buckets: int = 1024,
                 port_io: str = "afpacket", threads: int = 1) -> None:
        if threads != 1:
            raise ValueError("%r datapath threads: the Python twin has 1" % (threads,))
        if port_io not in ("afpacket", "afxdp"):
            raise ValueError("port_io must be 'afpacket' or 'afxdp', not %r" % (port_io,))
        if port_io == "afxdp":
            raise OSError(errno.EOPNOTSUPP, "the Python twin has AF_PACKET ports only")
        if not _is_pow2(buckets):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (buckets,))
        self._ports: Dict[int, _Port] = {}
        try:
            for port_no, ifname in ports:
                if not isinstance(port_no, int) or not 0 < port_no < 0xFFFFFF00 \
                        or port_no in self._ports:
                    raise ValueError("bad or duplicate port number %r" % (port_no,))
                self._ports[port_no] = _Port(port_no, ifname)
        except BaseException:
            self._close()
            raise
        self._lock = threading.Lock()
        self._cache = FlowCache(buckets)
        self._lb = LoadBalancer()
        self._counters: Dict[int, List[int]] = {}
        self._misses: List[Miss] = []
        self._miss_cv = threading.Condition(threading.Lock())
        self._st = dict(parse_errors=0, malformed=0, refused=0, miss_queue_drops=0)
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

    def _close(self) -> None:
        for p in self._ports.values():
            p.sock.close()
            p.tx.close()

    def __del__(self) -> None:
        try:
            self.stop()
            self._close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        except Exception:
            pass

    # -- thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kp-datapath-ref",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        t = self._thread
        if t is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        t.join()
        self._thread = None
        while select.select([self._wake_r], [], [], 0)[0]:
            os.read(self._wake_r, 64)

    def _loop(self) -> None:
        poller = select.poll()
        by_fd = {}
        for p in self._ports.values():
            poller.register(p.sock.fileno(), select.POLLIN)
            by_fd[p.sock.fileno()] = p
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(100):
                port = by_fd.get(fd)
                if port is None:
                    continue
                for _ in range(64):
                    try:
                        data, anc, _flags, _addr = port.sock.recvmsg(
                            262144, socket.CMSG_SPACE(_AUX.size))
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        port.st["rx_errors"] += 1
                        break
                    self._receive(port, data, anc)

    def _receive(self, port: _Port, data: bytes, anc: list) -> None:
        status = gso_size = tcp_gso_size = 0
        cs_start = cs_off = -1
        if port.vnet:
            if len(data) < _VNET.size:
                port.st["rx_errors"] += 1
                return
            vflags, gso_type, _h, size, cs_s, cs_o = _VNET.unpack_from(data)
            if vflags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                cs_start, cs_off = cs_s, cs_o
            if gso_type & 0x7F == VIRTIO_NET_HDR_GSO_UDP_L4:
                gso_size = size
            elif gso_type & 0x7F in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
                tcp_gso_size = size
            data = data[_VNET.size:]
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                status, _l, _s, _m, _n, tci, tpid = _AUX.unpack_from(cdata)
                if status & TP_STATUS_VLAN_VALID and len(data) >= 12:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = ETH_P_8021Q
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                    if cs_start >= 0:
                        cs_start += 4       # the sender counted without the tag
        if not port.up:
            port.st["rx_dropped"] += 1
            return
        if 0 < (gso_size or tcp_gso_size) < SEG_MIN_SIZE:     # refused, not cut
            port.st["rx_errors"] += 1
            return
        datagrams = segment_udp(data, gso_size) if gso_size else [data]
        if len(datagrams) > 1:      # each one complete: its checksums are computed
            status &= ~TP_STATUS_CSUMNOTREADY
        for frame in datagrams:
            self._switch(port, frame, status, tcp_gso_size,
                         (cs_start, cs_off) if len(datagrams) == 1 else (-1, -1))

    def _switch(self, port: _Port, data: bytes, status: int, seg_size: int = 0,
                csum: Tuple[int, int] = (-1, -1)) -> None:
        port.st["rx_packets"] += 1
        port.st["rx_bytes"] += len(data)
        p = _parse(data, port.port_no)
        with self._lock:
            if p is None:
                self._st["parse_errors"] += 1
                return
            if p.error:
                self._st["malformed"] += 1
            if p.refused:       # never forwarded by its outer fields (csrc/parse.h)
                self._st["refused"] += 1
                return
        if status & TP_STATUS_CSUMNOTREADY:
            done = complete_partial_checksum(data, *csum)
            if done is None:
                port.st["rx_errors"] += 1
                return
            data = done
            p = _parse(data, port.port_no)
        with self._lock:
            # A session's packets are translated before the tables see them (lb_ref);
            # a later fragment as its first was, an ICMP error about one back.
            buf = bytearray(data)
            loop = False
            if p.frag & FRAG_LATER:
                fr = self._lb.fragment(_frag_key(data, p))
                if fr is not None:
                    self._lb.count(fr[2], len(data))
                    _lb_rewrite(buf, p, fr[0] and (fr[0][0], None),
                                fr[1] and (fr[1][0], None))
            elif p.present & (F_ICMPV4 | F_ICMPV6):
                _lb_icmp_translate(buf, p, self._lb)
            else:
                e = self._lb.translate(_lb_key(p), _lb_flags(p, data))
                if e is not None:
                    self._lb.count(e.vip_id, len(data))
                    dst = (e.new_dst, e.new_dport) if e.new_dst else None
                    src = (e.new_src, e.new_sport) if e.new_src else None
                    if p.frag:
                        self._lb.remember_fragment(_frag_key(data, p), dst, src, e.vip_id)
                    _lb_rewrite(buf, p, dst, src)
                    loop = bool(e.new_dst and e.new_src)
            if buf != data:
                data = bytes(buf)
                p = _parse(data, port.port_no)
                if p is not None and loop:
                    p.present |= F_LB_LOOPBACK
        self._lookup_and_run(port, data, p, seg_size, 0)

    def _lookup_and_run(self, port: _Port, data: bytes, p: "_Parsed", seg_size: int,
                        depth: int) -> None:
        with self._lock:
            blob = p.blob()
            hit = self._cache.lookup(blob, _now_ms())
            if hit is not None:
                now_ns = time.monotonic_ns()
                for i in hit[1]:
                    c = self._counters.setdefault(i, [0, 0, 0])
                    c[0] += 1
                    c[1] += len(data)
                    c[2] = now_ns
        if hit is not None:
            hook = self._lb_hook(port.port_no, seg_size, depth, port)
            self._transmit(_run(bytearray(data), port.port_no, hit[0], hook), seg_size)
            return
        # The slow path sends frames on cut only to fit the MTU: a TCP super-frame goes
        # to it as the sender's segments instead (the last may differ in flags).
        segments = segment_tcp(data, SEG_ANY_MTU, seg_size) if seg_size else [data]
        for frame in segments:
            self._push_miss(port.port_no, frame, p if len(segments) == 1 else None)

    def _push_miss(self, in_port: int, frame: bytes, p: Optional["_Parsed"]) -> None:
        if p is None:
            p = _parse(frame, in_port)
        with self._miss_cv:
            if len(self._misses) >= MISS_QUEUE_LEN:
                self._st["miss_queue_drops"] += 1
                return
            self._misses.append((in_port, frame, _key_dict(p), p.blob(), 0))
            self._miss_cv.notify()

    def _lb_hook(self, in_port: int, seg_size: int, depth: int, port: Optional[_Port]):
        """kp_lb: translate, then the tables again (once); from execute(), the second
        pass is the slow path's (a miss), as the C datapath does."""
        def hook(buf: bytearray, vip_id: int) -> List[Tuple[int, bytes]]:
            p = _parse(bytes(buf), in_port)
            with self._lock:
                if depth or p is None:
                    self._lb.c["dropped"] += 1
                    return []
                v6 = bool(p.present & F_IPV6)
                if not p.present & (F_IPV4 | F_IPV6):
                    self._lb.c["dropped"] += 1
                    return []
                tr = self._lb.select(vip_id, _lb_key(p), 6 if v6 else 4, p.ip_proto,
                                     _lb_flags(p, buf), p.blob(), len(buf))
                if tr is not None and p.frag == FRAG:
                    self._lb.remember_fragment(_frag_key(bytes(buf), p), tr[0], tr[1], vip_id)
            if tr is None:
                return []
            _lb_rewrite(buf, p, tr[0], tr[1])
            frame = bytes(buf)
            q = _parse(frame, in_port)
            if q is not None and tr[0] and tr[1]:
                q.present |= F_LB_LOOPBACK
            if port is None:
                self._push_miss(in_port, frame, q)
            else:
                self._lookup_and_run(port, frame, q, seg_size, depth + 1)
            return []
        return hook

    def _transmit(self, outs: List[Tuple[int, bytes]], seg_size: int = 0) -> None:
        for port_no, frame in outs:
            port = self._ports.get(port_no)
            if port is None:
                continue
            if not port.up:
                port.st["tx_dropped"] += 1
                continue
            for seg in segment_tcp(frame, port.mtu, seg_size):
                try:
                    port.tx.send(seg)
                    port.st["tx_packets"] += 1
                    port.st["tx_bytes"] += len(seg)
                except BlockingIOError:
                    port.st["tx_dropped"] += 1
                except OSError:
                    port.st["tx_errors"] += 1

    # -- the agent's API
    def next_misses(self, timeout_ms: int, max_count: int = 64) -> List[Miss]:
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        with self._miss_cv:
            while not self._misses:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._miss_cv.wait(left)
            out = self._misses[:max_count]
            del self._misses[:max_count]
            return out

    def execute(self, in_port: int, packet: bytes, actions: list, thread: int = 0) -> None:
        if thread != 0:
            raise ValueError("no datapath thread %r (of 1)" % (thread,))
        prog = compile_actions(actions)
        self._transmit(_run(bytearray(packet), in_port, prog,
                            self._lb_hook(in_port, 0, 0, None)))

    def cache_insert(self, key_blob: bytes, actions: list, flow_ids: List[int],
                     mask_blob: Optional[bytes] = None) -> None:
        prog = tuple(compile_actions(actions))
        if len(key_blob) != KEY_SIZE:
            raise ValueError("key_blob must be %d bytes" % KEY_SIZE)
        _check_ids(flow_ids)
        mask = None if mask_blob is None else _mf_mask(mask_blob)
        with self._lock:
            self._cache.insert(bytes(key_blob), prog, flow_ids, _now_ms(), mask)

    def invalidate_flow(self, flow_id: int) -> None:
        with self._lock:
            self._cache.invalidate_flow(flow_id)

    def invalidate_all(self) -> None:
        with self._lock:
            self._cache.invalidate_all()

    def flow_counters(self, flow_ids: List[int]) -> List[Tuple[int, int, int]]:
        out = []
        with self._lock:
            for i in flow_ids:
                if not isinstance(i, int) or not 0 <= i < MAX_FLOW_IDS:
                    raise ValueError("flow id out of range: %r" % (i,))
                c = self._counters.get(i, (0, 0, 0))
                out.append((c[0], c[1], c[2]))
        return out

    def set_buckets(self, n: int) -> None:
        if not _is_pow2(n):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (n,))
        with self._lock:
            old = self._cache.st
            self._cache = FlowCache(n)
            for k in ("hits", "misses", "inserts", "insert_failures", "evictions",
                      "expired", "invalidated", "mf_hits", "mf_inserts",
                      "mf_insert_failures"):
                self._cache.st[k] = old[k]      # counters stay monotonic across resizes

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            d: Dict[str, Any] = self._cache.stats()
            d.update(self._st)
            d["threads"] = 1
            d["ports"] = {n: dict(p.st) for n, p in self._ports.items()}
        return d

    # -- the load balancer (csrc/lb.h; the twin is lb_ref.LoadBalancer)
    def lb_configure(self, buckets: int, timeouts: Tuple[int, int, int, int],
                     hairpin4: Optional[bytes] = None, hairpin6: Optional[bytes] = None
                     ) -> None:
        with self._lock:
            self._lb.configure(buckets, tuple(timeouts), hairpin4, hairpin6)

    def lb_set_vip(self, vip_id: int, version: int, basis: int, table: bytes,
                   pods: bytes) -> None:
        with self._lock:
            self._lb.set_vip(vip_id, version, basis, bytes(table), bytes(pods))

    def lb_delete_vip(self, vip_id: int) -> None:
        with self._lock:
            self._lb.delete_vip(vip_id)

    def lb_flush(self, vip_id: int, pod: Optional[bytes] = None, version: int = 0,
                 port: int = 0) -> int:
        with self._lock:
            return self._lb.flush(vip_id, pod, version, port)

    def lb_set_hash_key(self, k0: int, k1: int) -> None:
        pass        # the twin's table is a dict: nothing to key

    def lb_stats(self, first_vip_id: int = 0, most: int = LB_MAX_VIPS) -> Dict[str, Any]:
        with self._lock:
            return self._lb.stats(first_vip_id, most)

    def lb_sessions(self, max_count: int = 1000) -> List[tuple]:
        with self._lock:
            return self._lb.sessions(max_count)

    def port_io(self) -> Dict[int, str]:
        return {no: "afpacket" for no in self._ports}

    def set_port_state(self, port_no: int, up: bool) -> None:
        port = self._ports.get(port_no)
        if port is None:
            raise ValueError("no port %r" % (port_no,))
        port.up = bool(up)
