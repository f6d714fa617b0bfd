"""parse(): hand-made packets of every kind with known answers, then the C parser and
the Python twin held to the same answers on random bytes, truncations and mutations."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import IMPLS, sample_packets
from kp_switch import fastpath_ref as ref

C = IMPLS.get("c")
PKTS = sample_packets()


def test_extension_is_built():
    """The C fast path must exist: the differential tests below would be vacuous."""
    assert C is not None, "kp_switch._fastpath is not built (./scripts/setup-env)"
    assert C.WAYS == ref.WAYS and C.WAYS & (C.WAYS - 1) == 0
    assert C.MAX_FLOW_IDS == ref.MAX_FLOW_IDS >= 262144
    assert C.CACHE_IDLE_MS == ref.CACHE_IDLE_MS
    assert C.KEY_SIZE == ref.KEY_SIZE


EXPECTED = {
    "tcp4": dict(in_port=3, eth_dst="02:00:00:00:00:02", eth_src="02:00:00:00:00:01",
                 eth_type=0x0800, ip_dscp=0, ip_ecn=0, ip_proto=6, ipv4_src="10.0.0.1",
                 ipv4_dst="10.0.0.2", tcp_src=1234, tcp_dst=80, tcp_flags=0x18),
    "icmp4": dict(ip_dscp=0xB9 >> 2, ip_ecn=1, icmpv4_type=8, icmpv4_code=0),
    "frag4_later": dict(ip_proto=17),
    "frag4_first": dict(udp_src=1234, udp_dst=80),
    "vlan_tcp4": dict(vlan_vid=0x1005, vlan_pcp=3, eth_type=0x0800, tcp_dst=80),
    "qinq_udp4": dict(vlan_vid=0x1064, vlan_pcp=0, eth_type=0x8100),
    "arp_reply": dict(arp_op=2, arp_spa="10.0.0.2", arp_tpa="10.0.0.1",
                      arp_sha="02:aa:bb:cc:dd:ee", arp_tha="02:00:00:00:00:01"),
    "tcp6": dict(ipv6_src="fd00::1", ipv6_dst="fd00::2", ipv6_flabel=0xABCDE,
                 ip_dscp=0x2D >> 2, ip_ecn=1, ip_proto=6, tcp_flags=2),
    "icmp6_echo": dict(icmpv6_type=128, icmpv6_code=0),
    "ns": dict(icmpv6_type=135, ipv6_nd_target="fe80::2", ipv6_nd_sll="02:00:00:00:00:01",
               ipv6_dst="ff02::1:ff00:2"),
    "na": dict(icmpv6_type=136, ipv6_nd_target="fe80::2", ipv6_nd_tll="02:00:00:00:00:02"),
    "ns_no_opt": dict(ipv6_src="::", ipv6_nd_target="fe80::2"),
    "tcp6_hbh": dict(ip_proto=6, tcp_src=1234, tcp_dst=80),
    "udp6_frag_first": dict(ip_proto=17, udp_src=1234),
    "udp6_frag_later": dict(ip_proto=17),
    "mapped6": dict(ipv6_src="::ffff:102:304", ipv6_dst="::102:304"),
    "sctp4": dict(ip_proto=132, sctp_src=5000, sctp_dst=36412),
    "sctp4_padded": dict(ip_proto=132, sctp_src=1234, sctp_dst=80),
    "sctp6": dict(ip_proto=132, ipv6_src="fd00::1", sctp_src=1234, sctp_dst=80),
    "lldp": dict(eth_type=0x88CC),
    "llc": dict(eth_type=46),
}
ABSENT = {
    "frag4_later": ["udp_src", "tcp_src"],
    "udp6_frag_later": ["udp_src"],
    "tcp4": ["vlan_vid", "udp_src", "ipv6_src", "arp_op"],
    "ns_no_opt": ["ipv6_nd_sll", "ipv6_nd_tll"],
    "ns": ["ipv6_nd_tll"],
    "lldp": ["ip_proto"],
    "sctp4": ["tcp_src", "udp_src", "tcp_flags"],
    "arp_reply": ["ip_proto", "ipv4_src"],
}


@pytest.mark.parametrize("name", sorted(PKTS))
def test_known_packets(fp, name):
    key = fp.parse(PKTS[name], 3)
    assert key is not None
    for field, value in EXPECTED.get(name, {}).items():
        assert key[field] == value, (name, field)
    for field in ABSENT.get(name, []):
        assert field not in key, (name, field)
    assert key["in_port"] == 3
    blob = fp.parse_blob(PKTS[name], 3)
    assert blob[0] == key and len(blob[1]) == 100 and blob[2] is False


def test_key_fields_match_ryu_oxm_names():
    """Every field parse() can return is an OXM field name Ryu's OFPMatch knows."""
    from ryu.ofproto import ofproto_v1_3 as o
    seen = set()
    for pkt in PKTS.values():
        seen |= set(ref.parse(pkt, 1))
    names = {f.name for f in o.oxm_types}
    assert seen <= names, seen - names


MALFORMED = {
    "runt": (PKTS["tcp4"][:13], None),
    "vlan_cut": (PKTS["vlan_tcp4"][:16], {"eth_type"}),
    "ihl_short": (PKTS["tcp4"][:14] + bytes([0x44]) + PKTS["tcp4"][15:], {"eth_type"}),
    "tot_len_beyond": (PKTS["tcp4"][:-1], {"eth_type"}),
    "tcp_cut": (PKTS["tcp4"][:14] + b"\x45" + PKTS["tcp4"][15:16] + b"\x00\x24" +
                PKTS["tcp4"][18:14 + 36], {"ipv4_src", "ip_proto"}),
    "ipv6_payload_beyond": (PKTS["tcp6"][:-1], {"eth_type"}),
    "ipv6_ext_cut": (PKTS["tcp6_hbh"][:14 + 40] , {"eth_type"}),
    "arp_cut": (PKTS["arp_req"][:14 + 27], {"eth_type"}),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_stops_at_last_good_layer(fp, name):
    pkt, must_have = MALFORMED[name]
    key = fp.parse(pkt, 1)
    if must_have is None:
        assert key is None
        return
    assert key is not None and must_have <= set(key)
    assert not {"tcp_src", "udp_src", "arp_op"} & set(key)
    assert fp.parse_blob(pkt, 1)[2] is True


def test_sctp_common_header_cut_short_is_malformed(fp):
    """An IP datagram ending inside SCTP's 12-byte common header gives no ports."""
    sctp4 = bytearray(PKTS["sctp4"])
    sctp4[16:18] = (20 + 11).to_bytes(2, "big")
    key, _, malformed = fp.parse_blob(bytes(sctp4[:14 + 31]), 1)
    assert key["ip_proto"] == 132 and "sctp_src" not in key and malformed is True
    sctp4[16:18] = (20 + 12).to_bytes(2, "big")     # a bare common header is whole
    key, _, malformed = fp.parse_blob(bytes(sctp4[:14 + 32]), 1)
    assert key["sctp_dst"] == 36412 and malformed is False


def test_tcp_header_cut_short_keeps_ip_fields(fp):
    tcp4 = bytearray(PKTS["tcp4"])
    ip_len = 20 + 12                        # IP says the datagram ends inside TCP
    tcp4[16:18] = ip_len.to_bytes(2, "big")
    key = fp.parse(bytes(tcp4), 1)
    assert key["ipv4_dst"] == "10.0.0.2" and key["ip_proto"] == 6
    assert "tcp_src" not in key


def _same(pkt: bytes, in_port: int = 7) -> None:
    a, b = C.parse_blob(pkt, in_port), ref.parse_blob(pkt, in_port)
    assert a == b, pkt.hex()
    assert C.parse(pkt, in_port) == ref.parse(pkt, in_port)


@pytest.mark.skipif(C is None, reason="extension not built")
@pytest.mark.parametrize("name", sorted(PKTS))
def test_every_truncation_agrees(name):
    pkt = PKTS[name]
    for n in range(len(pkt) + 1):
        _same(pkt[:n])


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_random_bytes_agree(data, in_port):
    _same(data, in_port)


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(PKTS)), st.lists(st.tuples(st.integers(0, 200),
                                                         st.integers(0, 255)), max_size=4),
       st.integers(0, 200))
def test_mutations_agree(name, flips, cut):
    """Valid packets with a few bytes changed (headers become every kind of wrong)."""
    pkt = bytearray(PKTS[name])
    for pos, val in flips:
        if pos < len(pkt):
            pkt[pos] = val
    _same(bytes(pkt[:len(pkt) - cut if cut < len(pkt) else len(pkt)]))


@pytest.mark.skipif(C is None, reason="extension not built")
@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_ipv6_text_matches_ipaddress(addr):
    import ipaddress
    pkt = bytearray(PKTS["udp6"])
    pkt[14 + 8:14 + 24] = addr
    assert C.parse(bytes(pkt), 1)["ipv6_src"] == str(ipaddress.IPv6Address(addr))
