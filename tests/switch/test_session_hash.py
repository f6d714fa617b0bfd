"""One hash for every switch: kp_app's model (kp_proto.session_hash), kp-switch's C
(switch/csrc/session_hash.c) and its Python twin, and Open vSwitch's own
`multipath(symmetric_l3l4+udp, BASIS, modulo_n, N, 0, reg0[0..15])` must give the
same table index for the same 5-tuple, or the same client would reach different pods
through different nodes."""
from __future__ import annotations

import ipaddress
import random
import re
import subprocess

import pytest

from conftest import IMPLS, eth, ipv4, ipv6, l4
from kp_proto.session_hash import session_hash, table_index

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58

# Indexes Open vSwitch 3.1 (Debian 12, generic build) wrote for these 5-tuples, read off
# `ovs-appctl ofproto/trace` once; they pin the function where no OVS runs.
OVS_VECTORS = [
    # (proto, src, sport, dst, dport, basis, n_links, index)
    (TCP, "10.0.0.11", 40000, "10.96.0.10", 80, 0, 1024, 0x287),
    (UDP, "45f::1", 34740, "6112::2", 23468, 0, 1024, 0x357),
    (ICMPV6, "45f:21da::1", 0, "6112::2", 0, 0, 1024, 0x33b),
]


def _tuples(rng: random.Random, count: int):
    for i in range(count):
        v6 = i % 2 == 1
        proto = (TCP, UDP, ICMP if not v6 else ICMPV6)[i % 3]
        if v6:
            src = ipaddress.IPv6Address(rng.getrandbits(128))
            dst = ipaddress.IPv6Address(rng.getrandbits(128))
        else:
            src = ipaddress.IPv4Address(rng.getrandbits(32))
            dst = ipaddress.IPv4Address(rng.getrandbits(32))
        ports = (rng.randrange(1, 65536), rng.randrange(1, 65536))
        if proto not in (TCP, UDP):
            ports = (0, 0)
        yield proto, src, ports[0], dst, ports[1]


def _frame(proto, src, sport, dst, dport) -> bytes:
    kind = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmpv6"}[proto]
    seg = l4(kind, str(src), str(dst), sport=sport, dport=dport)
    if src.version == 4:
        return eth(ipv4(seg, proto, str(src), str(dst)), 0x0800)
    return eth(ipv6(seg, proto, str(src), str(dst)), 0x86DD)


def test_symmetric_and_basis_matters():
    rng = random.Random(5)
    for proto, src, sport, dst, dport in _tuples(rng, 60):
        for basis in (0, 7, 0xFFFF):
            forward = session_hash(proto, src, sport, dst, dport, basis)
            assert session_hash(proto, dst, dport, src, sport, basis) == forward
    a = ipaddress.ip_address("10.0.0.11"), ipaddress.ip_address("10.96.0.10")
    assert session_hash(TCP, a[0], 1, a[1], 80, 0) != session_hash(TCP, a[0], 1, a[1], 80, 1)
    assert session_hash(TCP, a[0], 1, a[1], 80) != session_hash(UDP, a[0], 1, a[1], 80)


def test_bad_input_is_refused():
    a4, a6 = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")
    with pytest.raises(ValueError, match="basis"):
        session_hash(TCP, a4, 1, a4, 2, 0x10000)
    with pytest.raises(ValueError, match="families"):
        session_hash(TCP, a4, 1, a6, 2)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_switch_hashes_like_the_model(impl):
    """The C code (and its twin) hash the parsed key of a real frame exactly as the model
    hashes the 5-tuple."""
    fp = IMPLS[impl]
    rng = random.Random(11)
    for proto, src, sport, dst, dport in _tuples(rng, 300):
        _, blob, malformed = fp.parse_blob(_frame(proto, src, sport, dst, dport), 1)
        assert not malformed
        basis = rng.choice((0, 7, rng.randrange(0x10000)))
        assert fp.session_hash(blob, basis) == session_hash(proto, src, sport, dst, dport,
                                                            basis)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_switch_refuses_what_it_cannot_hash(impl):
    fp = IMPLS[impl]
    _, blob, _ = fp.parse_blob(eth(b"\0" * 28, 0x0806), 1)     # ARP
    with pytest.raises(ValueError):
        fp.session_hash(blob, 0)
    _, blob, _ = fp.parse_blob(_frame(TCP, ipaddress.ip_address("10.0.0.1"), 1,
                                      ipaddress.ip_address("10.0.0.2"), 2), 1)
    with pytest.raises((ValueError, OverflowError)):
        fp.session_hash(blob, 0x10000)


def test_later_fragment_hashes_without_ports():
    """A fragment after the first has no L4 header: the switch hashes its addresses and
    protocol only, as Open vSwitch does for every fragment."""
    src, dst = ipaddress.ip_address("10.0.0.11"), ipaddress.ip_address("10.96.0.10")
    seg = l4("udp", str(src), str(dst), sport=5000, dport=53)
    later = eth(ipv4(seg, UDP, str(src), str(dst), frag=0x0010), 0x0800)   # offset 128
    for fp in IMPLS.values():
        _, blob, _ = fp.parse_blob(later, 1)
        assert fp.session_hash(blob, 3) == session_hash(UDP, src, 0, dst, 0, 3, fragment=True)


def test_pinned_ovs_vectors():
    for proto, src, sport, dst, dport, basis, n_links, index in OVS_VECTORS:
        h = session_hash(proto, ipaddress.ip_address(src), sport, ipaddress.ip_address(dst),
                         dport, basis)
        assert table_index(h, n_links) == index


# --------------------------------------------------------------------------- Open vSwitch

@pytest.fixture(scope="module")
def ovs_bridge():
    """A netdev bridge of our own to trace packets through (deleted afterwards)."""
    import kp_lab

    kp_lab.ensure_ovs()
    held = kp_lab.reserve_prefix("kph")
    name = held.prefix + "br"
    try:
        subprocess.run(["ovs-vsctl", "--timeout=5", "add-br", name, "--", "set", "bridge", name,
                        "datapath_type=netdev", "fail_mode=secure",
                        "protocols=OpenFlow13"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", name],
                       capture_output=True)
        held.release()
        kp_lab.stop_ovs_if_started()


_NOW = re.compile(r"NXM_NX_REG0\[0\.\.15\] is now 0x([0-9a-f]+)")


def _ovs_index(bridge: str, proto, src, sport, dst, dport) -> int:
    v6 = src.version == 6
    fields = {TCP: "tcp6" if v6 else "tcp", UDP: "udp6" if v6 else "udp",
              ICMP: "icmp", ICMPV6: "icmp6"}[proto]
    addr = "ipv6_%s" if v6 else "nw_%s"
    flow = "in_port=LOCAL,%s,%s=%s,%s=%s" % (fields, addr % "src", src, addr % "dst", dst)
    if proto in (TCP, UDP):
        l4name = "tcp" if proto == TCP else "udp"
        flow += ",%s_src=%d,%s_dst=%d" % (l4name, sport, l4name, dport)
    out = subprocess.run(["ovs-appctl", "ofproto/trace", bridge, flow], check=True,
                         capture_output=True, text=True).stdout
    m = _NOW.search(out)
    if m is None:   # the register stays 0 and the trace says nothing about it
        assert "multipath" in out, out
        return 0
    return int(m.group(1), 16)


@pytest.mark.ovs
def test_open_vswitch_picks_the_same_index(ovs_bridge):
    """The probe the design asks for: a build of Open vSwitch whose hash differs (SSE4.2 or
    ARM CRC builds) fails here, and a mixed cluster would then split sessions."""
    rng = random.Random(23)
    cases = list(_tuples(rng, 24)) + [
        (TCP, ipaddress.ip_address("10.0.0.11"), 40000, ipaddress.ip_address("10.96.0.10"), 80)]
    for basis, n_links in ((0, 1024), (7, 4096), (rng.randrange(0x10000), 1000)):
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "replace-flows", ovs_bridge, "-"],
                       input="table=0,actions=multipath(symmetric_l3l4+udp,%d,modulo_n,%d,0,"
                             "NXM_NX_REG0[0..15])\n" % (basis, n_links),
                       text=True, check=True, capture_output=True)
        for proto, src, sport, dst, dport in cases:
            want = table_index(session_hash(proto, src, sport, dst, dport, basis), n_links)
            assert _ovs_index(ovs_bridge, proto, src, sport, dst, dport) == want, \
                (proto, src, sport, dst, dport, basis, n_links)
