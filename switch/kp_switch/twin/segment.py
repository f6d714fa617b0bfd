"""TCP and UDP segmentation of a GSO frame (a virtio-net header's, or one bigger than
the port's MTU): the twin of csrc/segment.c.

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

import struct
from typing import List

from .flow_key import F_IPV4, F_TCP, F_UDP, SEG_MIN_SIZE
from .csum import _fold, _sum16
from .parse import _parse, _u16


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
