"""kp_app's refusals (frames.tcp_reset, frames.port_unreachable) of a frame with
Ethernet padding: a short frame is padded to 60 bytes on the wire, and the padding is
no part of the IP datagram.  A RST acknowledging padding bytes as TCP data would be
ignored by the sender (its ACK is beyond anything sent), and a quote of padding is not
the offending datagram."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from kp_app import frames

MAC_C, MAC_N = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _csum(b: bytes) -> int:
    b += b"\0" * (len(b) & 1)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def _frame(v6: bool, proto: int, l4: bytes, pad: int) -> bytes:
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + s + d + l4
        et = 0x86DD
    else:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, s, d)
        ip = h[:10] + struct.pack("!H", _csum(h)) + h[12:] + l4
        et = 0x0800
    return frames.mac_bytes(MAC_N) + frames.mac_bytes(MAC_C) + struct.pack("!H", et) + ip + \
        b"\xee" * pad


def _tcp(flags: int, payload: bytes = b"", seq: int = 1000) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 80, seq, 0, 5 << 4, flags, 8192, 0, 0) + payload


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("flags,payload,acked", [(0x02, b"", 1),         # SYN
                                                 (0x08, b"abcd", 4),     # PSH, no ACK
                                                 (0x01, b"", 1)])        # FIN
def test_reset_acknowledges_the_segment_not_the_padding(v6, flags, payload, acked):
    raw = _frame(v6, frames.TCP, _tcp(flags, payload), pad=6 if not v6 else 10)
    to = frames.parse(raw)
    assert to.l4_payload_len() == len(payload)
    rst = frames.parse(frames.tcp_reset(to, MAC_N))
    assert rst.tcp_flags == frames.TCP_RST | frames.TCP_ACK
    assert rst.tcp_ack == 1000 + acked
    assert rst.tcp_seq == 0


def test_reset_without_padding_is_unchanged():
    to = frames.parse(_frame(False, frames.TCP, _tcp(0x02), pad=0))
    assert frames.parse(frames.tcp_reset(to, MAC_N)).tcp_ack == 1001


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_port_unreachable_quotes_the_datagram_not_the_padding(v6):
    udp = struct.pack("!HHHH", 40000, 53, 10, 0) + b"hi"
    raw = _frame(v6, frames.UDP, udp, pad=8)
    to = frames.parse(raw)
    err = frames.port_unreachable(to, MAC_N)
    datagram = raw[14:len(raw) - 8]
    hdr = 14 + (40 if v6 else 20) + 8
    assert err[hdr:] == datagram
