"""Fixtures for the fast path tests: both implementations, and veth pairs in private
network namespaces (only namespaces these fixtures create are touched, and they are
deleted at teardown even when the test fails)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import socket
import sys
from typing import Iterator

import pytest

from kp_switch import fastpath_ref, keyed_hash
from of_harness import Hosts, sctp_agent


def _load_fastpath():
    """The extension: normally the in-place build; KP_FASTPATH_SO names another build
    (switch/csrc/sanitize.sh points it at the ASan/UBSan one)."""
    so = os.environ.get("KP_FASTPATH_SO")
    if not so:
        try:
            from kp_switch import _fastpath as mod
        except ImportError:     # test_extension_is_built then fails loudly
            return None
        return mod
    loader = importlib.machinery.ExtensionFileLoader("kp_switch._fastpath", so)
    spec = importlib.util.spec_from_file_location("kp_switch._fastpath", so, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    sys.modules["kp_switch._fastpath"] = mod
    return mod


_fastpath = _load_fastpath()


IMPLS = {"ref": fastpath_ref}
if _fastpath is not None:
    IMPLS["c"] = _fastpath
    # The twin places entries as the C tables do only under the same process secret.
    keyed_hash.set_secret(*_fastpath.hash_secret())


@pytest.fixture(params=sorted(IMPLS))
def fp(request):
    """Each test that takes `fp` runs against the C extension and the Python twin."""
    return IMPLS[request.param]


def af_xdp_refusal() -> str:
    """Why this kernel has no AF_XDP sockets, or "" when it has them."""
    try:
        socket.socket(AF_XDP, socket.SOCK_RAW, 0).close()
    except OSError as e:
        return "the kernel refuses AF_XDP sockets: %s" % (e.strerror or e)
    return ""


AF_XDP = 44


class OnPorts:
    """An implementation whose Datapath opens its ports on one port I/O backend."""

    def __init__(self, impl, port_io: str) -> None:
        self.impl, self.port_io = impl, port_io

    def __getattr__(self, name):
        return getattr(self.impl, name)

    def Datapath(self, ports, buckets=1024):
        return self.impl.Datapath(ports, buckets, self.port_io)


DP_IMPLS = ["ref"] + (["c-afpacket", "c-afxdp"] if _fastpath is not None else [])


@pytest.fixture(params=DP_IMPLS)
def fpio(request):
    """For the tests that move packets through a Datapath: the Python twin (AF_PACKET),
    and the C extension on each port backend.  Where the kernel has no AF_XDP, the
    AF_XDP runs are skipped with its reason."""
    if request.param == "ref":
        return OnPorts(fastpath_ref, "afpacket")
    if request.param == "c-afxdp":
        why = af_xdp_refusal()
        if why:
            pytest.skip(why)
        return OnPorts(_fastpath, "afxdp")
    return OnPorts(_fastpath, "afpacket")


@pytest.fixture
def hosts3() -> Iterator[Hosts]:
    """Three namespaces, each with eth0 (10.77.0.N/24, fd00:77::N/64) whose veth peer
    (`port_if`) is in the root namespace, up and unaddressed, for a Datapath to own."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(3, net=77)
    try:
        yield hosts
    finally:
        hosts.close()


# --------------------------------------------------------------------------- packets
# Independent builders and checksum verifiers (they share no code with either
# implementation, so a bug common to both still fails the tests).

import ipaddress as _ip
import struct as _st


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(_st.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac_b(m: str) -> bytes:
    return bytes(int(x, 16) for x in m.split(":"))


def eth(payload: bytes, etype: int, dst: str = "02:00:00:00:00:02",
        src: str = "02:00:00:00:00:01", vlans: tuple = ()) -> bytes:
    tags = b"".join(_st.pack("!HH", tpid, tci) for tpid, tci in vlans)
    return mac_b(dst) + mac_b(src) + tags + _st.pack("!H", etype) + payload


def ipv4(payload: bytes, proto: int, src: str = "10.0.0.1", dst: str = "10.0.0.2",
         ttl: int = 64, tos: int = 0, frag: int = 0, options: bytes = b"",
         ident: int = 7) -> bytes:
    ihl = 5 + len(options) // 4
    hdr = _st.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident, frag,
                   ttl, proto, 0, _ip.IPv4Address(src).packed, _ip.IPv4Address(dst).packed)
    hdr += options
    hdr = hdr[:10] + _st.pack("!H", csum16(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(payload: bytes, nh: int, src: str = "fd00::1", dst: str = "fd00::2",
         hlim: int = 64, tc: int = 0, flabel: int = 0) -> bytes:
    first = (6 << 28) | (tc << 20) | flabel
    return _st.pack("!IHBB", first, len(payload), nh, hlim) + \
        _ip.IPv6Address(src).packed + _ip.IPv6Address(dst).packed + payload


def pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    a, b = _ip.ip_address(src), _ip.ip_address(dst)
    if a.version == 4:
        return a.packed + b.packed + _st.pack("!BBH", 0, proto, length)
    return a.packed + b.packed + _st.pack("!IxxxB", length, proto)


def l4(kind: str, src: str, dst: str, payload: bytes = b"data", sport: int = 1234,
       dport: int = 80, flags: int = 0x18, csum: bool = True, icmp_type: int = 8,
       icmp_code: int = 0) -> bytes:
    """A TCP/UDP/ICMP/ICMPv6 header + payload with a correct checksum."""
    if kind == "tcp":
        h = _st.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 8192, 0, 0)
        proto, coff = 6, 16
    elif kind == "udp":
        h = _st.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        proto, coff = 17, 6
    elif kind == "icmp":
        h = _st.pack("!BBHHH", icmp_type, icmp_code, 0, 1, 2)
        seg = h + payload
        c = csum16(seg)
        return seg[:2] + _st.pack("!H", c) + seg[4:]
    else:   # icmpv6
        h = _st.pack("!BBHHH", icmp_type, icmp_code, 0, 1, 2)
        proto, coff = 58, 2
    seg = h + payload
    if not csum:
        return seg
    c = csum16(pseudo(src, dst, proto, len(seg)) + seg)
    if kind == "udp" and c == 0:
        c = 0xFFFF
    return seg[:coff] + _st.pack("!H", c) + seg[coff + 2:]


# CRC32c one bit at a time (the agent's, written apart from both implementations' tables
# and SSE4.2 code, and from kp_proto.sctp).
crc32c_bitwise = sctp_agent().crc32c


def sctp_chunk(ctype: int, value: bytes = b"", flags: int = 0) -> bytes:
    """One SCTP chunk, padded to 4 bytes (the length field does not count the padding)."""
    body = _st.pack("!BBH", ctype, flags, 4 + len(value)) + value
    return body + b"\0" * (-len(body) % 4)


def sctp_init(tag: int = 0x1234ABCD) -> bytes:
    """An INIT chunk: initiate tag, a_rwnd, out/in streams, initial TSN."""
    return sctp_chunk(1, _st.pack("!IIHHI", tag, 65536, 10, 10, 1))


def sctp_data(payload: bytes = b"hello", tsn: int = 1) -> bytes:
    return sctp_chunk(0, _st.pack("!IHHI", tsn, 0, 0, 0) + payload, flags=3)


def sctp(chunks: bytes, sport: int = 1234, dport: int = 80, vtag: int = 0,
         crc_ok: bool = True) -> bytes:
    """An SCTP packet (common header + chunks) with its CRC32c (stored least significant
    byte first), or a wrong one."""
    head = _st.pack("!HHI", sport, dport, vtag)
    crc = crc32c_bitwise(head + b"\0\0\0\0" + chunks) ^ (0 if crc_ok else 0x5A5A)
    return head + crc.to_bytes(4, "little") + chunks


def sctp_crc_ok(seg: bytes) -> bool:
    return crc32c_bitwise(seg[:8] + b"\0\0\0\0" + seg[12:]) == \
        int.from_bytes(seg[8:12], "little")


def nd(kind: str, src: str, dst: str, target: str, lla: str = "") -> bytes:
    """Neighbour solicitation (135) or advertisement (136) with an LLA option."""
    t = 135 if kind == "ns" else 136
    body = _st.pack("!BBHI", t, 0, 0, 0x60000000 if t == 136 else 0) + \
        _ip.IPv6Address(target).packed
    if lla:
        body += _st.pack("!BB", 1 if t == 135 else 2, 1) + mac_b(lla)
    c = csum16(pseudo(src, dst, 58, len(body)) + body)
    return body[:2] + _st.pack("!H", c) + body[4:]


def arp(op: int = 1, sha: str = "02:00:00:00:00:01", spa: str = "10.0.0.1",
        tha: str = "00:00:00:00:00:00", tpa: str = "10.0.0.2") -> bytes:
    return _st.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_b(sha) + \
        _ip.IPv4Address(spa).packed + mac_b(tha) + _ip.IPv4Address(tpa).packed


def sample_packets() -> dict:
    """Named frames of every kind the parser knows (all checksums correct)."""
    s4, d4, s6, d6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"
    tcp4 = eth(ipv4(l4("tcp", s4, d4), 6), 0x0800)
    hbh = bytes([6, 0]) + b"\x01\x04\0\0\0\0"            # hop-by-hop, next = TCP, PadN
    dst_opts = bytes([44, 0]) + b"\x01\x04\0\0\0\0"       # next = fragment
    frag0 = bytes([17, 0]) + _st.pack("!HI", 0x0001, 99)  # offset 0, M flag
    frag1 = bytes([17, 0]) + _st.pack("!HI", 0x0010, 99)  # offset 2 (x8)
    return {
        "tcp4": tcp4,
        "tcp4_padded": tcp4 + b"\0" * 6,
        "tcp4_options": eth(ipv4(l4("tcp", s4, d4), 6, options=b"\x01\x01\x01\x00"), 0x0800),
        "udp4": eth(ipv4(l4("udp", s4, d4, sport=5353, dport=53), 17), 0x0800),
        "udp4_nocsum": eth(ipv4(l4("udp", s4, d4, csum=False), 17), 0x0800),
        "icmp4": eth(ipv4(l4("icmp", s4, d4), 1, tos=0xB9), 0x0800),
        "frag4_later": eth(ipv4(b"\x00" * 24, 17, frag=0x0003), 0x0800),
        "frag4_first": eth(ipv4(l4("udp", s4, d4, csum=False), 17, frag=0x2000), 0x0800),
        "vlan_tcp4": eth(ipv4(l4("tcp", s4, d4), 6), 0x0800, vlans=((0x8100, 0x6005),)),
        "qinq_udp4": eth(ipv4(l4("udp", s4, d4), 17), 0x0800,
                         vlans=((0x88A8, 0x0064), (0x8100, 0x2007))),
        "arp_req": eth(arp(), 0x0806, dst="ff:ff:ff:ff:ff:ff"),
        "arp_reply": eth(arp(2, "02:aa:bb:cc:dd:ee", "10.0.0.2", "02:00:00:00:00:01",
                             "10.0.0.1"), 0x0806),
        "tcp6": eth(ipv6(l4("tcp", s6, d6, flags=0x02), 6, tc=0x2D, flabel=0xABCDE),
                    0x86DD),
        "udp6": eth(ipv6(l4("udp", s6, d6), 17), 0x86DD),
        "icmp6_echo": eth(ipv6(l4("icmpv6", s6, d6, icmp_type=128), 58), 0x86DD),
        "ns": eth(ipv6(nd("ns", "fe80::1", "ff02::1:ff00:2", "fe80::2", "02:00:00:00:00:01"),
                       58, "fe80::1", "ff02::1:ff00:2", hlim=255), 0x86DD),
        "na": eth(ipv6(nd("na", "fe80::2", "fe80::1", "fe80::2", "02:00:00:00:00:02"), 58,
                       "fe80::2", "fe80::1", hlim=255), 0x86DD),
        "ns_no_opt": eth(ipv6(nd("ns", "::", "ff02::1:ff00:2", "fe80::2"), 58, "::",
                              "ff02::1:ff00:2", hlim=255), 0x86DD),
        "tcp6_hbh": eth(ipv6(hbh + l4("tcp", s6, d6), 0), 0x86DD),
        "udp6_frag_first": eth(ipv6(dst_opts + frag0 + l4("udp", s6, d6, csum=False), 60),
                               0x86DD),
        "udp6_frag_later": eth(ipv6(frag1 + b"\x00" * 16, 44), 0x86DD),
        "mapped6": eth(ipv6(l4("udp", "::ffff:1.2.3.4", "::1.2.3.4"), 17, "::ffff:1.2.3.4",
                            "::1.2.3.4"), 0x86DD),
        "sctp4": eth(ipv4(sctp(sctp_init(), sport=5000, dport=36412), 132), 0x0800),
        "sctp4_padded": eth(ipv4(sctp(sctp_data(b"abc"), vtag=0x1234ABCD), 132), 0x0800)
        + b"\0" * 8,
        "sctp6": eth(ipv6(sctp(sctp_data(b"x" * 301) + sctp_chunk(6), vtag=77), 132),
                     0x86DD),
        "lldp": eth(b"\x02\x07\x04" + b"\0" * 40, 0x88CC, dst="01:80:c2:00:00:0e"),
        "llc": eth(b"\xaa\xaa\x03" + b"\0" * 40, 46),
    }


def verify_checksums(frame: bytes) -> None:
    """Assert every checksum in frame is right, recomputed from scratch."""
    off = 12
    etype = _st.unpack_from("!H", frame, off)[0]
    while etype in (0x8100, 0x88A8):
        off += 4
        etype = _st.unpack_from("!H", frame, off)[0]
    l3 = off + 2
    if etype == 0x0800:
        ihl = (frame[l3] & 15) * 4
        assert csum16(frame[l3:l3 + ihl]) == 0, "IPv4 header checksum"
        tot = _st.unpack_from("!H", frame, l3 + 2)[0]
        if _st.unpack_from("!H", frame, l3 + 6)[0] & 0x3FFF:
            return      # a fragment: its L4 checksum covers bytes elsewhere
        proto, seg = frame[l3 + 9], frame[l3 + ihl:l3 + tot]
        src, dst = str(_ip.IPv4Address(frame[l3 + 12:l3 + 16])), \
            str(_ip.IPv4Address(frame[l3 + 16:l3 + 20]))
    elif etype == 0x86DD:
        plen = _st.unpack_from("!H", frame, l3 + 4)[0]
        proto, seg = frame[l3 + 6], frame[l3 + 40:l3 + 40 + plen]
        src, dst = str(_ip.IPv6Address(frame[l3 + 8:l3 + 24])), \
            str(_ip.IPv6Address(frame[l3 + 24:l3 + 40]))
        if proto in (0, 60, 44):
            return      # extension headers: not verified here
    else:
        return
    if proto == 6:
        assert csum16(pseudo(src, dst, 6, len(seg)) + seg) == 0, "TCP checksum"
    elif proto == 17:
        if _st.unpack_from("!H", seg, 6)[0] != 0:
            assert csum16(pseudo(src, dst, 17, len(seg)) + seg) == 0, "UDP checksum"
    elif proto == 1:
        assert csum16(seg) == 0, "ICMP checksum"
    elif proto == 58:
        assert csum16(pseudo(src, dst, 58, len(seg)) + seg) == 0, "ICMPv6 checksum"
    elif proto == 132 and len(seg) >= 12:
        assert sctp_crc_ok(seg), "SCTP CRC32c"
