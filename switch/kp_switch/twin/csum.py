"""Checksums: the Internet checksum's incremental update (RFC 1624 eqn. 3), a partial
checksum finished, SCTP's CRC32c: the twin of csrc/csum.h and crc32c.c.

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

import struct
from typing import List, Optional, Tuple

from kp_proto import sctp

from .flow_key import F_ICMPV6, F_SCTP, F_TCP, F_UDP
from .parse import _Parsed, _parse, _u16


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


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32c (SCTP's checksum), as the C extension's."""
    return sctp.crc32c(bytes(data), crc)


def crc32c_impls(data: bytes) -> List[int]:
    """The CRC32c of data by each implementation (the C one has tables and SSE4.2)."""
    return [crc32c(data)]
