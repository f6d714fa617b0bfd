"""The action executor: rewrites, checksums verified from scratch, VLAN push/pop,
dec_ttl, CHECKSUM_PARTIAL completion, software TSO; C and Python must agree byte for
byte on the same inputs."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (IMPLS, crc32c_bitwise, csum16, eth, ipv4, ipv6, l4, pseudo,
                      sample_packets, sctp, sctp_chunk, sctp_crc_ok, sctp_data, sctp_init,
                      verify_checksums)
from kp_switch import fastpath_ref as ref

C = IMPLS.get("c")
PKTS = sample_packets()

REWRITES = {
    "ipv4_src": "192.168.7.9", "ipv4_dst": "172.16.0.200", "ipv6_src": "2001:db8::77",
    "ipv6_dst": "fd00:aaaa::1", "tcp_src": 40000, "tcp_dst": 8080, "udp_src": 1,
    "udp_dst": 65535, "ip_dscp": 46, "ip_ecn": 3, "ipv6_flabel": 0x12345,
    "eth_src": "0a:0b:0c:0d:0e:0f", "eth_dst": "ff:ee:dd:cc:bb:aa", "vlan_vid": 0x1123,
    "vlan_pcp": 5, "icmpv4_type": 0, "icmpv4_code": 3, "icmpv6_type": 129,
    "icmpv6_code": 1, "arp_op": 2, "arp_spa": "1.2.3.4", "arp_tpa": "5.6.7.8",
    "arp_sha": "02:11:22:33:44:55", "arp_tha": "02:66:77:88:99:aa",
    "ipv6_nd_target": "fe80::abcd", "ipv6_nd_sll": "02:de:ad:be:ef:01",
    "ipv6_nd_tll": "02:de:ad:be:ef:02", "sctp_src": 2905, "sctp_dst": 38412,
}


@pytest.mark.parametrize("name", sorted(PKTS))
@pytest.mark.parametrize("field", sorted(REWRITES))
def test_set_field_rewrites_and_keeps_checksums_valid(fp, name, field):
    pkt = PKTS[name]
    value = REWRITES[field]
    outs = fp.apply_actions(pkt, [("set_field", field, value), ("output", 9)])
    assert len(outs) == 1 and outs[0][0] == 9
    out = outs[0][1]
    verify_checksums(out)
    before, after = fp.parse(pkt, 0), fp.parse(out, 0)
    if field in before:
        want = value & 0x0FFF | 0x1000 if field == "vlan_vid" else value
        assert after[field] == want
        assert {k: v for k, v in after.items() if k != field} == \
            {k: v for k, v in before.items() if k != field} or field.startswith("icmpv6")
    else:
        assert out == pkt, "setting a field the packet lacks changes nothing"


def test_nat44_known_bytes(fp):
    pkt = PKTS["tcp4"]
    out = fp.apply_actions(pkt, [("set_field", "ipv4_dst", "10.9.9.9"),
                                 ("set_field", "tcp_dst", 8080), ("output", 1)])[0][1]
    assert out[14 + 12:14 + 20] == bytes([10, 0, 0, 1, 10, 9, 9, 9])
    assert out[14 + 20 + 2:14 + 20 + 4] == (8080).to_bytes(2, "big")
    verify_checksums(out)
    # Unchanged payload, length.
    assert out[-4:] == b"data" and len(out) == len(pkt)


def test_udp_zero_checksum_stays_zero(fp):
    pkt = PKTS["udp4_nocsum"]
    out = fp.apply_actions(pkt, [("set_field", "ipv4_src", "9.9.9.9"),
                                 ("set_field", "udp_dst", 99), ("output", 1)])[0][1]
    assert out[14 + 20 + 6:14 + 20 + 8] == b"\0\0"
    verify_checksums(out)


def test_outputs_snapshot_the_packet_at_each_output(fp):
    pkt = PKTS["udp4"]
    outs = fp.apply_actions(pkt, [("output", 1), ("set_field", "udp_dst", 7),
                                  ("output", 2), ("set_field", "udp_dst", 8), ("output", 3)])
    assert [p for p, _ in outs] == [1, 2, 3]
    assert [fp.parse(f, 0)["udp_dst"] for _, f in outs] == [53, 7, 8]


def test_push_and_pop_vlan(fp):
    pkt = PKTS["tcp4"]
    out = fp.apply_actions(pkt, [("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1064),
                                 ("set_field", "vlan_pcp", 6), ("output", 1)])[0][1]
    assert out[12:16] == bytes([0x81, 0x00, 0xC0, 0x64]) and out[16:] == pkt[12:]
    key = fp.parse(out, 0)
    assert key["vlan_vid"] == 0x1064 and key["eth_type"] == 0x0800 and key["tcp_dst"] == 80
    # push on a tagged frame copies the outer tag (OpenFlow 1.3); pop twice gets back.
    twice = fp.apply_actions(out, [("push_vlan", 0x88A8), ("output", 1), ("pop_vlan",),
                                   ("pop_vlan",), ("pop_vlan",), ("output", 2)])
    assert twice[0][1][12:20] == bytes([0x88, 0xA8, 0xC0, 0x64, 0x81, 0x00, 0xC0, 0x64])
    assert twice[1][1] == pkt


@pytest.mark.parametrize("name,ttl_off", [("tcp4", 14 + 8), ("tcp6", 14 + 7)])
def test_dec_ttl(fp, name, ttl_off):
    pkt = bytearray(PKTS[name])
    outs = fp.apply_actions(bytes(pkt), [("dec_ttl",), ("output", 1)])
    assert outs[0][1][ttl_off] == pkt[ttl_off] - 1
    verify_checksums(outs[0][1])
    for ttl in (0, 1):
        pkt[ttl_off] = ttl
        if name == "tcp4":      # keep the header checksum right for the new TTL
            pkt[14 + 10:14 + 12] = b"\0\0"
            pkt[14 + 10:14 + 12] = csum16(bytes(pkt[14:34])).to_bytes(2, "big")
        outs = fp.apply_actions(bytes(pkt), [("output", 5), ("dec_ttl",), ("output", 1)])
        assert [p for p, _ in outs] == [5], "TTL 0/1: dropped at dec_ttl"


BAD_ACTIONS = [
    [("output",)], [("output", -1)], [("output", 2**32)], [("output", True)],
    [("output", "1")], [("set_field", "ip_proto", 6)], [("set_field", "eth_type", 1)],
    [("set_field", "tcp_dst", 70000)], [("set_field", "tcp_dst", -1)],
    [("set_field", "ipv4_dst", "10.0.0")], [("set_field", "ipv4_dst", 167772161)],
    [("set_field", "ipv6_dst", "fd00::g")], [("set_field", "eth_dst", "00:11:22:33:44")],
    [("set_field", "eth_dst", "00:11:22:33:44:+5")], [("set_field", "vlan_pcp", 8)],
    [("push_vlan", 0x0800)], [("pop_vlan", 1)], [("goto_table", 1)], ["output"], [()],
    [["output", 1]], [("set_field", "tcp_dst", True)],
]


@pytest.mark.parametrize("actions", BAD_ACTIONS, ids=[repr(a) for a in BAD_ACTIONS])
def test_bad_actions_are_value_errors(fp, actions):
    with pytest.raises(ValueError):
        fp.apply_actions(PKTS["tcp4"], actions)


def test_crc32c_against_a_bitwise_reference(fp):
    """RFC 3720's check value, and lengths around the 8-byte steps, by every
    implementation the extension has (tables, SSE4.2)."""
    assert fp.crc32c(b"123456789") == 0xE3069283 == crc32c_bitwise(b"123456789")
    assert fp.crc32c(b"") == 0
    data = bytes((i * 37 + 11) & 0xFF for i in range(300))
    for n in (1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 299, 300):
        want = crc32c_bitwise(data[:n])
        impls = fp.crc32c_impls(data[:n])
        assert impls and all(c == want for c in impls), n
        assert fp.crc32c(data[n:], fp.crc32c(data[:n])) == crc32c_bitwise(data)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("field,off", [("sctp_src", 0), ("sctp_dst", 2)])
def test_sctp_port_rewrite_recomputes_crc32c(fp, v6, field, off):
    """A port rewrite puts the port in and a CRC32c that a bitwise reference computes
    over the new SCTP packet; an address rewrite leaves the CRC as it was (no
    pseudo-header)."""
    seg = sctp(sctp_data(b"y" * 97) + sctp_chunk(6), sport=1111, dport=2222, vtag=9)
    frame = eth(ipv6(seg, 132), 0x86DD) if v6 else eth(ipv4(seg, 132), 0x0800)
    l4 = 14 + (40 if v6 else 20)
    out = fp.apply_actions(frame, [("set_field", field, 4242), ("output", 1)])[0][1]
    new = out[l4:]
    assert int.from_bytes(new[off:off + 2], "big") == 4242
    assert sctp_crc_ok(new) and new[8:12] != seg[8:12]
    assert new[:off] + new[off + 2:8] + new[12:] == seg[:off] + seg[off + 2:8] + seg[12:]
    verify_checksums(out)
    addr = ("ipv6_dst", "fd00::99") if v6 else ("ipv4_dst", "10.9.9.9")
    out = fp.apply_actions(frame, [("set_field",) + addr, ("output", 1)])[0][1]
    assert out[l4:] == seg
    verify_checksums(out)


def test_sctp_rewrite_keeps_a_wrong_crc32c_wrong(fp):
    """As for the sums: a packet corrupt on arrival stays corrupt, by the same error."""
    seg = sctp(sctp_init(), crc_ok=False)
    out = fp.apply_actions(eth(ipv4(seg, 132), 0x0800),
                           [("set_field", "sctp_dst", 9), ("output", 1)])[0][1][34:]
    good = crc32c_bitwise(out[:8] + b"\0" * 4 + out[12:])
    assert int.from_bytes(out[8:12], "little") == good ^ 0x5A5A


def test_complete_partial_sctp(fp):
    """A sender that left the CRC32c to the NIC (CHECKSUM_PARTIAL, zero in the field)."""
    seg = bytearray(sctp(sctp_data(b"z" * 50)))
    seg[8:12] = b"\0" * 4
    frame = eth(ipv4(bytes(seg), 132), 0x0800)
    done = fp.complete_partial_checksum(frame)
    verify_checksums(done)
    assert done[:-len(seg)] == frame[:-len(seg)] and done[-len(seg) + 12:] == seg[12:]


@pytest.mark.parametrize("kind", ["tcp4", "udp4", "tcp6", "udp6"])
def test_complete_partial_checksum(fp, kind):
    """The sender's stack put only the pseudo-header sum in the field (the NIC was to
    finish it): completion must give the checksum a full computation gives."""
    v6 = kind.endswith("6")
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    proto = 6 if kind.startswith("tcp") else 17
    seg = bytearray(l4(kind[:3], src, dst, payload=b"x" * 333, csum=False))
    coff = 16 if proto == 6 else 6
    ps = (~csum16(pseudo(src, dst, proto, len(seg)))) & 0xFFFF   # the folded sum, as Linux
    seg[coff:coff + 2] = ps.to_bytes(2, "big")
    frame = eth(ipv6(bytes(seg), proto, src, dst), 0x86DD) if v6 else \
        eth(ipv4(bytes(seg), proto, src, dst), 0x0800)
    done = fp.complete_partial_checksum(frame)
    verify_checksums(done)
    assert done[:-len(seg)] == frame[:-len(seg)]
    if C is not None:
        assert C.complete_partial_checksum(frame) == ref.complete_partial_checksum(frame)


@pytest.mark.parametrize("v6", [False, True])
def test_segment_tcp(fp, v6):
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    payload = bytes(range(256)) * 40                         # 10240 bytes
    seg = l4("tcp", src, dst, payload=payload, flags=0x19)  # FIN|PSH|ACK
    frame = eth(ipv6(seg, 6, src, dst), 0x86DD) if v6 else eth(ipv4(seg, 6, src, dst),
                                                               0x0800)
    segs = fp.segment_tcp(frame, 1500)
    hdr = 14 + (40 if v6 else 20) + 20
    assert len(segs) == -(-len(payload) // (1500 - hdr + 14))
    got = b""
    for i, s in enumerate(segs):
        verify_checksums(s)
        assert len(s) - 14 <= 1500
        seq = struct.unpack_from("!I", s, hdr - 20 + 4)[0]
        assert seq == 1000 + len(got)
        flags = s[hdr - 20 + 13]
        assert flags == (0x19 if i == len(segs) - 1 else 0x10)
        got += s[hdr:]
    assert got == payload
    assert fp.segment_tcp(PKTS["tcp4"], 1500) == [PKTS["tcp4"]]
    # The sender's GSO size, when smaller than what fits the MTU, sets the segments'.
    small = fp.segment_tcp(frame, 1500, 536)
    assert [len(s) - hdr for s in small] == [536] * 19 + [56]
    assert b"".join(s[hdr:] for s in small) == payload
    assert fp.segment_tcp(frame, 1500, 9000) == segs        # larger: the MTU decides
    one = eth(ipv6(l4("tcp", src, dst, payload=payload[:1000]), 6, src, dst), 0x86DD) if v6 \
        else eth(ipv4(l4("tcp", src, dst, payload=payload[:1000]), 6, src, dst), 0x0800)
    assert [len(s) - hdr for s in fp.segment_tcp(one, 1500, 400)] == [400, 400, 200]
    if C is not None:
        assert C.segment_tcp(frame, 1500) == ref.segment_tcp(frame, 1500)
        assert C.segment_tcp(frame, 1500, 536) == ref.segment_tcp(frame, 1500, 536)


# ------------------------------------------------------------------ differential

INT_FIELDS = {"vlan_vid": 13, "vlan_pcp": 3, "ip_dscp": 6, "ip_ecn": 2, "ipv6_flabel": 20,
              "tcp_src": 16, "tcp_dst": 16, "udp_src": 16, "udp_dst": 16,
              "icmpv4_type": 8, "icmpv4_code": 8, "icmpv6_type": 8, "icmpv6_code": 8,
              "arp_op": 16, "sctp_src": 16, "sctp_dst": 16}
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join("%02x" % x for x in b))
v4s = st.binary(min_size=4, max_size=4).map(lambda b: ".".join(str(x) for x in b))
v6s = st.binary(min_size=16, max_size=16).map(
    lambda b: __import__("ipaddress").IPv6Address(b).compressed)


def _set_field():
    opts = [st.tuples(st.just("set_field"), st.just(f), st.integers(0, (1 << b) - 1))
            for f, b in INT_FIELDS.items()]
    opts += [st.tuples(st.just("set_field"), st.sampled_from(
        ["eth_dst", "eth_src", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"]), macs)]
    opts += [st.tuples(st.just("set_field"), st.sampled_from(
        ["ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"]), v4s)]
    opts += [st.tuples(st.just("set_field"), st.sampled_from(
        ["ipv6_src", "ipv6_dst", "ipv6_nd_target"]), v6s)]
    return st.one_of(opts)


action = st.one_of(
    _set_field(), st.tuples(st.just("output"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("push_vlan"), st.sampled_from([0x8100, 0x88A8])),
    st.just(("pop_vlan",)), st.just(("dec_ttl",)))


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(PKTS)), st.lists(action, max_size=12),
       st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=2),
       st.integers(0, 2**32 - 1))
def test_actions_agree(name, actions, flips, in_port):
    pkt = bytearray(PKTS[name])
    for pos, val in flips:              # sometimes damage the packet too
        if pos < len(pkt):
            pkt[pos] = val
    actions = actions + [("output", 1)]
    a = C.apply_actions(bytes(pkt), actions, in_port)
    b = ref.apply_actions(bytes(pkt), actions, in_port)
    assert a == b
    if not flips:
        for _, f in a:
            verify_checksums(f)
