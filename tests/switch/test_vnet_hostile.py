"""What a sender's virtio-net header says, through a real Datapath (C and the twin): a
host sends, from a packet socket with PACKET_VNET_HDR on its veth, frames whose header
claims a GSO size of 1 (refused: not cut into 3,000 frames) or leaves an ICMPv6
checksum to finish at csum_start/csum_offset (finished there: the receiver answers)."""
from __future__ import annotations

import time

import pytest

from test_fastpath_datapath import PY, MiniController, l2_policy

SEND = r"""
import socket, struct, sys
def csum(b):
    b += b'\0' * (len(b) & 1)
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return t
kind, src_mac, dst_mac, src, dst = sys.argv[1:6]
mac = lambda m: bytes.fromhex(m.replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 15, 1)                       # SOL_PACKET, PACKET_VNET_HDR
s.bind(('eth0', 0))
if kind == 'tcp':                              # a 3000-byte TSO frame, GSO size argv[6]
    gso = int(sys.argv[6])
    a, b = socket.inet_aton(src), socket.inet_aton(dst)
    payload = b'p' * 3000
    tcp = struct.pack('!HHIIBBHHH', 40000, 9, 1, 0, 5 << 4, 0x18, 8192, 0, 0) + payload
    ps = csum(a + b + struct.pack('!BBH', 0, 6, len(tcp)))
    while ps >> 16:
        ps = (ps & 0xffff) + (ps >> 16)
    tcp = tcp[:16] + struct.pack('!H', ps) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, a, b)
    ip = ip[:10] + struct.pack('!H', ~csum(ip) & 0xffff) + ip[12:]
    vnet = struct.pack('<BBHHHH', 1, 1, 54, gso, 34, 16)
    s.send(vnet + mac(dst_mac) + mac(src_mac) + b'\x08\x00' + ip + tcp)
else:                                          # an ICMPv6 echo left CHECKSUM_PARTIAL
    a, b = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    r.settimeout(3)
    echo = struct.pack('!BBHHH', 128, 0, 0, 0x4b50, 1) + b'csum_start' * 4
    ps = csum(a + b + struct.pack('!IxxxB', len(echo), 58))
    while ps >> 16:
        ps = (ps & 0xffff) + (ps >> 16)
    echo = echo[:2] + struct.pack('!H', ps) + echo[4:]
    ip = struct.pack('!IHBB', 6 << 28, len(echo), 58, 64) + a + b
    vnet = struct.pack('<BBHHHH', 1, 0, 0, 0, 54, 2)
    s.send(vnet + mac(dst_mac) + mac(src_mac) + b'\x86\xdd' + ip + echo)
    try:
        while True:
            got = r.recv(2048)
            if got[0] == 129 and got[4:6] == b'\x4b\x50':
                print('reply')
                break
    except socket.timeout:
        print('no reply')
"""


def _tx(dp, port: int) -> int:
    return dp.stats()["ports"][port]["tx_packets"]


def _settle(dp, port: int, want: int) -> int:
    for _ in range(60):
        if _tx(dp, port) >= want:
            break
        time.sleep(0.05)
    time.sleep(0.2)               # and nothing more comes
    return _tx(dp, port)


def test_a_gso_size_below_the_minimum_is_refused(fp, hosts3):
    h0, h1, _ = hosts3
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)

    def only_the_flow(key: dict):        # nothing else reaches port 2 to be counted
        return ([("output", 2)], [100]) if key.get("tcp_dst") == 9 else None

    with MiniController(dp, only_the_flow):
        base = _tx(dp, 2)
        r = h0.run(PY, "-c", SEND, "tcp", h0.mac, h1.mac, h0.ip4, h1.ip4, "1000")
        assert r.returncode == 0, r.stderr
        after_ok = _settle(dp, 2, base + 3)
        assert after_ok - base == 3            # the sender's three 1000-byte segments
        errors = dp.stats()["ports"][1]["rx_errors"]
        r = h0.run(PY, "-c", SEND, "tcp", h0.mac, h1.mac, h0.ip4, h1.ip4, "1")
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        st = dp.stats()
    assert st["ports"][2]["tx_packets"] - after_ok < 3       # not 3000 one-byte frames
    assert st["ports"][1]["rx_errors"] == errors + 1


def test_a_partial_icmpv6_checksum_is_finished_where_the_sender_said(fp, hosts3):
    h0, h1, _ = hosts3
    for h, peer in ((h0, h1), (h1, h0)):
        h.run("ip", "-6", "neigh", "replace", peer.ip6, "lladdr", peer.mac, "dev", "eth0")
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    with MiniController(dp, l2_policy(hosts3)):
        r = h0.run(PY, "-c", SEND, "icmp6", h0.mac, h1.mac, h0.ip6, h1.ip6, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["reply"]
