"""GSO, real traffic through the datapath:
- UDP: a sender's UDP_SEGMENT datagrams, which a veth hands over joined in one frame,
  reach the receiver as the datagrams it wrote (QUIC servers send this way);
- TCP: a sender's TSO super-frames, which a veth hands over whole, leave the switch cut
  into the sender's segments (its MSS for the connection), not merely into what fits the
  egress MTU: a receiver that asked for a small MSS gets no larger segment."""
import struct

import pytest

from conftest import IMPLS, eth, ipv4, ipv6, l4, verify_checksums
from kp_switch import fastpath_ref as ref
from test_fastpath_datapath import PY, MiniController, _wait_ready, l2_policy

C = IMPLS.get("c")

RECEIVE = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
got = []
try:
    while len(got) < int(sys.argv[3]):
        got.append(s.recv(65535))
except socket.timeout:
    pass
print(" ".join("%d:%d" % (len(d), d[0]) for d in got))
"""

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)          # UDP_SEGMENT: 1000-byte datagrams
for i in range(3):                               # 4 datagrams each, the last of 500
    s.sendto(bytes([i]) * 3500, (sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_segment_udp(fp, v6):
    src, dst = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    payload = bytes(range(256)) * 14                          # 3584 bytes
    seg = l4("udp", src, dst, payload=payload)
    frame = eth(ipv6(seg, 17, src, dst), 0x86DD) if v6 else eth(ipv4(seg, 17, src, dst),
                                                                0x0800)
    datagrams = fp.segment_udp(frame, 1000)
    hdr = 14 + (40 if v6 else 20) + 8
    assert [len(d) - hdr for d in datagrams] == [1000, 1000, 1000, 584]
    for d in datagrams:
        verify_checksums(d)
        assert struct.unpack_from("!H", d, hdr - 4)[0] == len(d) - hdr + 8
    assert b"".join(d[hdr:] for d in datagrams) == payload
    assert fp.segment_udp(frame, 4000) == [frame]            # one datagram: as it is
    assert fp.segment_tcp(frame, 1500) == [frame]
    if C is not None:
        assert C.segment_udp(frame, 1000) == ref.segment_udp(frame, 1000)


def _through_switch(fp, hosts3, v6, receiver, receiver_args, sender, port, listens):
    """Runs `receiver` on host 1 and then `sender` on host 0 (both given host 1's
    address and `port`) through a Datapath with L2 flows; the receiver's output."""
    h0, h1, _ = hosts3
    dst = h1.ip6 if v6 else h1.ip4
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    server = h1.popen(PY, "-c", receiver, dst, str(port), *receiver_args)
    try:
        _wait_ready(h1, port, listens)
        with MiniController(dp, l2_policy(hosts3)):
            h0.run("ping", "-c", "1", "-W", "2", dst, check=False)    # neighbours first
            sent = h0.run(PY, "-c", sender, dst, str(port))
            assert sent.returncode == 0, sent.stderr
            out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return out, (err, dp.stats())


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_gso_datagrams_arrive_as_sent(fpio, hosts3, v6):
    out, why = _through_switch(fpio, hosts3, v6, RECEIVE, ["12"], SEND, 7200, "u")
    expected = " ".join("%d:%d" % (n, i) for i in range(3) for n in (1000, 1000, 1000, 500))
    assert out.strip() == expected, (out, why)


MSS = 536

# Listens with a small MSS, counts the bytes it receives and, from a packet socket on
# its own interface, the largest TCP payload that reached it.
SERVER = r"""
import socket, struct, sys
addr, port, mss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sniff.bind(("eth0", 0))
sniff.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sniff.settimeout(0.3)
lsock = socket.socket(family, socket.SOCK_STREAM)
lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
lsock.bind((addr, port))
lsock.listen(1)
lsock.settimeout(10)
conn, _ = lsock.accept()
conn.settimeout(10)
got = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    got += len(data)
largest = 0
while True:
    try:
        f = sniff.recv(65535)
    except socket.timeout:
        break
    eth_type = struct.unpack_from("!H", f, 12)[0]
    if eth_type == 0x0800 and f[23] == 6:
        ip_len, l4 = struct.unpack_from("!H", f, 16)[0], 14 + (f[14] & 15) * 4
        end = 14 + ip_len
    elif eth_type == 0x86DD and f[20] == 6:
        l4, end = 54, 54 + struct.unpack_from("!H", f, 18)[0]
    else:
        continue
    if struct.unpack_from("!H", f, l4 + 2)[0] == port:
        largest = max(largest, end - l4 - (f[l4 + 12] >> 4) * 4)
print(got, largest)
"""

CLIENT = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((addr, port), timeout=10)
s.sendall(bytes(range(256)) * 1024)               # 256 KiB: many TSO super-frames
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_super_frames_leave_in_the_senders_segments(fpio, hosts3, v6):
    out, why = _through_switch(fpio, hosts3, v6, SERVER, [str(MSS)], CLIENT, 7300, "t")
    got, largest = map(int, out.split())
    assert got == 256 * 1024, (out, why)
    assert 0 < largest <= MSS, (largest, why)
