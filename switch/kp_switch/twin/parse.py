"""Packet parsing into the flow key: the twin of csrc/parse.c.

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from kp_proto import sctp

from .flow_key import (ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FRAG,
                       FRAG_LATER, F_ARP, F_ETH, F_ICMPV4, F_ICMPV6, F_IP, F_IPV4, F_IPV6,
                       F_LB_LOOPBACK, F_ND_SLL, F_ND_TARGET, F_ND_TLL, F_SCTP, F_TCP, F_UDP,
                       F_VLAN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
                       IPV6_MAX_EXT_BYTES, IPV6_MAX_EXT_HDRS, LB_LOOPBACK, _IPV6_EXT, _IPV6_FRAG,
                       _KEY)


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
