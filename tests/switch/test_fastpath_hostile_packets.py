"""Crafted packets against the segmentation, checksum and IPv6 parsing paths (issue 13,
"Packets from hosts"), C and the Python twin alike:
- a sender's GSO size (or what an MTU leaves) below SEG_MIN_SIZE is refused, not cut
  into thousands of frames;
- an IP fragment, even the first (which holds the TCP/UDP header), is never cut as if
  it were the whole datagram;
- a partial checksum is finished where the sender's virtio-net header says
  (csum_start/csum_offset), and one pointing outside the datagram is refused;
- IPv6 extension headers are walked to the upper-layer protocol, so a TCP segment behind
  a destination-options header matches on its ports and is rewritten with right
  checksums; a chain past the bounds is refused (PARSE_REFUSED)."""
from __future__ import annotations

import struct

import pytest

from conftest import IMPLS, csum16, eth, ipv4, ipv6, l4, pseudo, verify_checksums
from kp_switch import fastpath_ref as ref

C = IMPLS.get("c")
S4, D4, S6, D6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"


def tcp4(payload: bytes, frag: int = 0) -> bytes:
    return eth(ipv4(l4("tcp", S4, D4, payload=payload), 6, S4, D4, frag=frag), 0x0800)


def udp4(payload: bytes, frag: int = 0) -> bytes:
    return eth(ipv4(l4("udp", S4, D4, payload=payload), 17, S4, D4, frag=frag), 0x0800)


def ext(nh: int, body_units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination-options header of (1 + body_units) * 8 bytes
    (Pad1 options filling it)."""
    return struct.pack("!BB", nh, body_units) + bytes(6 + 8 * body_units)


def frag6(nh: int, offset: int, more: bool, ident: int = 0x1234) -> bytes:
    return struct.pack("!BBHI", nh, 0, (offset << 3) | int(more), ident)


def v6_with(chain: bytes, first_nh: int, upper: bytes) -> bytes:
    return eth(ipv6(chain + upper, first_nh, S6, D6), 0x86DD)


# ------------------------------------------------------------------ GSO sizes

def test_tiny_gso_and_segment_sizes_are_refused(fp):
    frame = tcp4(bytes(3000))
    assert fp.segment_tcp(frame, ref.SEG_ANY_MTU, 1) == []        # 3000 frames, before
    assert fp.segment_tcp(frame, ref.SEG_ANY_MTU, ref.SEG_MIN_SIZE - 1) == []
    assert len(fp.segment_tcp(frame, ref.SEG_ANY_MTU, ref.SEG_MIN_SIZE)) == 35
    assert fp.segment_tcp(frame, 100) == []       # an MTU leaving 60 bytes a segment
    udp = udp4(bytes(3000))
    assert fp.segment_udp(udp, 1) == []
    assert fp.segment_udp(udp, ref.SEG_MIN_SIZE - 1) == []
    segs = fp.segment_udp(udp, ref.SEG_MIN_SIZE)
    assert len(segs) == 35
    for s in segs:
        verify_checksums(s)
    # a frame that needs no cut is left whole whatever the size said
    small = tcp4(b"x" * 10)
    assert fp.segment_tcp(small, ref.SEG_ANY_MTU, 1000) == [small]


def test_segment_min_size_is_the_c_one():
    if C is None:
        pytest.skip("extension not built")
    frame = tcp4(bytes(3000))
    assert C.segment_tcp(frame, ref.SEG_ANY_MTU, ref.SEG_MIN_SIZE) == \
        ref.segment_tcp(frame, ref.SEG_ANY_MTU, ref.SEG_MIN_SIZE)
    assert C.segment_tcp(frame, ref.SEG_ANY_MTU, ref.SEG_MIN_SIZE - 1) == []


# ------------------------------------------------------------------ fragments

def test_a_first_fragment_is_never_cut_as_if_whole(fp):
    first = tcp4(bytes(3000), frag=0x2000)                # MF set, offset 0
    assert fp.parse(first, 1)["tcp_dst"] == 80           # it does hold the TCP header
    assert fp.segment_tcp(first, 1500) == [first]
    assert fp.segment_tcp(first, ref.SEG_ANY_MTU, 1000) == [first]
    ufirst = udp4(bytes(3000), frag=0x2000)
    assert fp.segment_udp(ufirst, 1000) == [ufirst]
    seg = l4("tcp", S6, D6, payload=bytes(3000))
    v6first = v6_with(frag6(6, 0, True), 44, seg)
    assert fp.parse(v6first, 1)["tcp_dst"] == 80
    assert fp.segment_tcp(v6first, 1500) == [v6first]
    assert fp.segment_tcp(v6first, ref.SEG_ANY_MTU, 1000) == [v6first]
    # an atomic fragment (offset 0, no more fragments: RFC 6946) is a whole datagram
    atomic = v6_with(frag6(6, 0, False), 44, seg)
    assert len(fp.segment_tcp(atomic, 1500)) == 3


# ------------------------------------------------------------------ csum_start

def _partial(frame: bytes, start: int, offset: int, pseudo_hdr: bytes) -> bytes:
    """frame with its checksum at start + offset replaced by the pseudo-header sum, as
    a sender leaving CHECKSUM_PARTIAL writes it."""
    s = csum16(pseudo_hdr) ^ 0xFFFF        # the folded (not complemented) sum
    b = bytearray(frame)
    b[start + offset:start + offset + 2] = s.to_bytes(2, "big")
    return bytes(b)


def test_partial_checksum_is_finished_where_the_sender_said(fp):
    # ICMPv6 (no TCP/UDP to guess from): only csum_start/csum_offset say where
    body = l4("icmpv6", S6, D6, payload=b"echo" * 10)
    frame = v6_with(b"", 58, body)
    part = _partial(frame, 54, 2, pseudo(S6, D6, 58, len(body)))
    done = fp.complete_partial_checksum(part, 54, 2)
    verify_checksums(done)
    assert done == frame
    # TCP behind a destination-options header: the sender's start is the TCP header
    seg = l4("tcp", S6, D6, payload=b"y" * 100)
    frame = v6_with(ext(6), 60, seg)
    part = _partial(frame, 62, 16, pseudo(S6, D6, 6, len(seg)))
    assert fp.complete_partial_checksum(part, 62, 16) == frame
    assert fp.complete_partial_checksum(part) == frame     # and the parsed one agrees


@pytest.mark.parametrize("start,offset", [(0, 16), (14, 2), (33, 16), (54, 10_000),
                                          (1_000, 0)])
def test_partial_checksum_outside_the_datagram_is_refused(fp, start, offset):
    frame = tcp4(b"z" * 40)
    assert fp.complete_partial_checksum(frame, start, offset) is None


# ------------------------------------------------------------------ IPv6 extensions

def test_tcp_behind_destination_options_matches_and_is_rewritten(fp):
    seg = l4("tcp", S6, D6, payload=b"hello", dport=80)
    for chain, nh in ((ext(6), 60), (ext(60) + ext(6, 2), 0), (ext(43, 1) + ext(6), 60)):
        frame = v6_with(chain, nh, seg)
        key = fp.parse(frame, 1)
        assert key["ip_proto"] == 6 and key["tcp_dst"] == 80 and key["tcp_src"] == 1234
        outs = fp.apply_actions(frame, [("set_field", "ipv6_dst", "fd00::99"),
                                        ("set_field", "tcp_dst", 8080), ("output", 2)])
        assert len(outs) == 1
        out = outs[0][1]
        l4off = 54 + len(chain)
        assert out[l4off + 2:l4off + 4] == (8080).to_bytes(2, "big")
        upper = out[l4off:]
        assert csum16(pseudo(S6, "fd00::99", 6, len(upper)) + upper) == 0
        assert out[:l4off][-len(chain):] == chain


def test_extension_chain_past_the_bounds_is_refused(fp):
    seg = l4("tcp", S6, D6, payload=b"x")
    ok = v6_with(ext(60) * 7 + ext(6), 60, seg)                 # 8 headers: walked
    assert fp.parse(ok, 1)["tcp_dst"] == 80 and fp.parse_blob(ok, 1)[2] is False
    for frame in (v6_with(ext(60) * 8 + ext(6), 60, seg),          # 9 headers
                  v6_with(ext(60, 255) + ext(6, 255), 60, seg),    # 4 KiB of options
                  v6_with(ext(0) + ext(6), 60, seg)):              # hop-by-hop not first
        key, _blob, malformed = fp.parse_blob(frame, 1)
        assert malformed is True and "tcp_dst" not in key
