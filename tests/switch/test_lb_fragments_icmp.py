"""kp-switch's own sessions (kp_lb) with fragmented datagrams and ICMP errors, real
packets through a Datapath (C and the Python twin; the C one under ASan/UBSan in
switch/csrc/sanitize.sh):
- a 3000-byte UDP datagram to a VIP leaves the client's kernel in fragments: every
  fragment reaches the pod (the later ones have no ports, they get the first one's
  translation), and the pod's fragmented answer reaches the client from the VIP;
- the pod's ICMP port unreachable reaches the client about the VIP (its connected
  socket gets ECONNREFUSED), and an ICMP fragmentation needed / packet too big about
  the client's packet lowers the client's path MTU to the VIP;
- an IPv6 packet with too long a chain of extension headers is dropped and counted."""
from __future__ import annotations

import ipaddress
import struct
import subprocess
import time
from typing import List

import pytest

from kp_proto import lb as kplb
from test_fastpath_datapath import (PY, UDP_ECHO_SERVER, MiniController, _wait_ready,
                                    l2_policy)

CLIENT = r"""
import socket, sys
vip, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in vip else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((vip, port))
for attempt in range(3):
    s.send(b'x' * size)
    try:
        data = s.recv(65535)
    except ConnectionRefusedError:
        print('refused')
        break
    except socket.timeout:
        continue
    print('got', len(data), data.count(b'x'))
    break
else:
    print('timeout')
"""

# The pod says "fragmentation needed" (IPv4, MTU 1300) or "packet too big" (IPv6,
# MTU 1280) about the client's datagram as the pod got it (to the pod's own address and
# port), from a raw socket; the client then reads its path MTU to the VIP.
PMTU_POD = r"""
import socket, struct, sys
me, client, cport, pport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v6 = ':' in me
payload = b'x' * 1400
udp = struct.pack('!HHHH', cport, pport, 8 + len(payload), 0) + payload
if v6:
    inner = struct.pack('!IHBB', 6 << 28, len(udp), 17, 64) + \
        socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, me) + udp
    msg = struct.pack('!BBHI', 2, 0, 0, 1280) + inner[:1232]
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.sendto(msg, (client, 0))         # the kernel fills the ICMPv6 checksum
else:
    def csum(b):
        b += b'\0' * (len(b) & 1)
        t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
        while t >> 16:
            t = (t & 0xffff) + (t >> 16)
        return ~t & 0xffff
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                      socket.inet_aton(client), socket.inet_aton(me))
    hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
    body = hdr + udp[:64]
    msg = struct.pack('!BBHHH', 3, 4, 0, 0, 1300) + body
    msg = msg[:2] + struct.pack('!H', csum(msg)) + msg[4:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(msg, (client, 0))
"""

PMTU_CLIENT = r"""
import socket, subprocess, sys, time
vip, port, cport, pod, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
v6 = ':' in vip
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('', cport))
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)     # IPV6_MTU_DISCOVER: IPV6_PMTUDISC_DO
else:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)       # IP_MTU_DISCOVER: IP_PMTUDISC_DO
s.connect((vip, port))
s.send(b'x' * 100)                               # the session, first
print('ready', flush=True)
sys.stdin.readline()                             # the pod has sent its error
for _ in range(50):
    mtu = s.getsockopt(socket.IPPROTO_IPV6, 24) if v6 else s.getsockopt(socket.IPPROTO_IP, 14)
    if mtu < 1500:
        break
    time.sleep(0.05)
print('mtu', mtu)
"""


def _rig(fp, hosts3, v6: bool, port: int, pod_port: int):
    h0, h1, h2 = hosts3
    vip = "fd00:77::100" if v6 else "10.77.0.100"
    h_ip = (lambda h: h.ip6) if v6 else (lambda h: h.ip4)
    for h, peer, mac in ((h0, vip, h1.mac), (h1, h_ip(h0), h0.mac), (h2, h_ip(h0), h0.mac)):
        h.run("ip", "-6" if v6 else "-4", "neigh", "replace", peer, "lladdr", mac,
              "dev", "eth0")
    l2 = l2_policy(hosts3)
    a_dst = "ipv6_dst" if v6 else "ipv4_dst"
    seen: List[dict] = []

    def policy(key: dict):
        seen.append(key)
        if key.get(a_dst) == vip and key.get("udp_dst") == port:
            return [("kp_lb", 9)], [1]
        return l2(key)

    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=256)
    pods = [(h_ip(h1), pod_port), (h_ip(h2), pod_port)]
    table = [0] * 5          # every new session to h1
    raw_pods = b"".join(kplb.POD.pack(ipaddress.ip_address(a).packed.ljust(16, b"\0"), p)
                        for a, p in pods)
    dp.lb_set_vip(9, 6 if v6 else 4, 0, struct.pack("!5H", *table), raw_pods)
    return dp, policy, vip, h_ip, seen


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fragmented_udp_reaches_the_pod_and_comes_back_from_the_vip(fp, hosts3, family):
    h0, h1, _ = hosts3
    dp, policy, vip, h_ip, _seen = _rig(fp, hosts3, family == "ipv6", 53, 5353)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, h_ip(h1), "5353")
    try:
        _wait_ready(h1, 5353)
        with MiniController(dp, policy):
            r = h0.run(PY, "-c", CLIENT, vip, "53", "3000", timeout=30)
            st = dp.lb_stats()
    finally:
        server.kill()
        server.wait()
    assert r.returncode == 0, r.stderr
    # the pod got the whole datagram (all its fragments), the client its whole answer
    # from the VIP (its socket is connected to the VIP: nothing else gets in)
    assert r.stdout.split() == ["got", str(3000 + len("echo:" + h_ip(h0) + ":")), "3000"]
    assert st["created"] == 1 and st["fragments"] >= 4       # 2+ later ones each way


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_pod_port_unreachable_reaches_the_client_about_the_vip(fp, hosts3, family):
    h0, _h1, _ = hosts3
    dp, policy, vip, _h_ip, _seen = _rig(fp, hosts3, family == "ipv6", 53, 5399)
    with MiniController(dp, policy):          # nothing listens on the pod's 5399
        r = h0.run(PY, "-c", CLIENT, vip, "53", "20", timeout=30)
        st = dp.lb_stats()
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused"]
    assert st["icmp_errors"] >= 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fragmentation_needed_from_the_pod_lowers_the_clients_path_mtu(fp, hosts3, family):
    h0, h1, _ = hosts3
    v6 = family == "ipv6"
    dp, policy, vip, h_ip, _seen = _rig(fp, hosts3, v6, 53, 5353)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, h_ip(h1), "5353")
    client = None
    try:
        _wait_ready(h1, 5353)
        with MiniController(dp, policy):
            client = subprocess.Popen(
                ("ip", "netns", "exec", h0.ns, PY, "-c", PMTU_CLIENT, vip, "53", "40123",
                 h_ip(h1), h_ip(h0)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            assert client.stdout.readline().strip() == "ready"
            sent = h1.run(PY, "-c", PMTU_POD, h_ip(h1), h_ip(h0), "40123", "5353")
            assert sent.returncode == 0, sent.stderr
            out, err = client.communicate("go\n", timeout=20)
            st = dp.lb_stats()
    finally:
        for p in (server, client):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert out.split() == ["mtu", "1280" if v6 else "1300"], err
    assert st["icmp_errors"] >= 1


def test_too_long_an_extension_chain_is_dropped_and_counted(fp, hosts3):
    """Nine destination-options headers before a UDP datagram: refused by the parser,
    dropped by the datapath and counted, never forwarded by its outer fields."""
    h0, h1, _ = hosts3
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    send = r"""
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
src, dst = socket.inet_pton(socket.AF_INET6, sys.argv[1]), socket.inet_pton(socket.AF_INET6, sys.argv[2])
for n in (1, 9):
    chain = b''.join(struct.pack('!BB', 60 if i < n - 1 else 17, 0) + bytes(6) for i in range(n))
    udp = struct.pack('!HHHH', 1111, 2222, 12, 0) + b'ping'
    ip = struct.pack('!IHBB', 6 << 28, len(chain) + len(udp), 60, 64) + src + dst + chain + udp
    mac = bytes.fromhex(sys.argv[3].replace(':', ''))
    s.send(mac + bytes.fromhex(sys.argv[4].replace(':', '')) + b'\x86\xdd' + ip)
"""
    with MiniController(dp, l2_policy(hosts3)) as mc:
        r = h0.run(PY, "-c", send, h0.ip6, h1.ip6, h1.mac, h0.mac)
        assert r.returncode == 0, r.stderr
        for _ in range(100):
            if dp.stats()["refused"] >= 1 and any(
                    k and k.get("udp_dst") == 2222 for k in list(mc.misses)):
                break
            time.sleep(0.05)
        st = dp.stats()
    assert st["refused"] == 1
    # the one-header packet went up as UDP; the nine-header one never reached the tables
    assert [k.get("ip_proto") for k in mc.misses if k and k.get("ipv6_src") == h0.ip6
            and k.get("ipv6_dst") == h1.ip6 and k.get("ip_proto") != 58] == [17]
