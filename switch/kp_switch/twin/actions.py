"""Actions on a packet (set_field, output, dec_ttl, kp_lb's rewrite and the ICMP errors
it translates back): the twin of csrc/actions.c, lb.c's rewrite and lb_icmp.c.

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, List, Optional, Sequence, Tuple

from kp_proto import sctp
from kp_proto.lb import MAX_VIPS as LB_MAX_VIPS
from ..lb_ref import LoadBalancer

from .flow_key import (Action, ETH_P_8021AD, ETH_P_8021Q, F_ARP, F_ICMPV4, F_ICMPV6, F_IPV4,
                       F_IPV6, F_ND_SLL, F_ND_TARGET, F_ND_TLL, F_SCTP, F_TCP, F_UDP, F_VLAN,
                       IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP)
from .csum import _csum_replace, _fold, _l4_csum_off, _sum16
from .parse import _Parsed, _parse, _u16


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
