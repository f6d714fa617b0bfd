"""UDP GSO: a sender's UDP_SEGMENT datagrams, which a veth hands over joined in one
frame, reach the receiver as the datagrams it wrote (QUIC servers send this way)."""
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


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_gso_datagrams_arrive_as_sent(fp, hosts3, v6):
    h0, h1, _ = hosts3
    dst = h1.ip6 if v6 else h1.ip4
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    receiver = h1.popen(PY, "-c", RECEIVE, dst, "7200", "12")
    try:
        _wait_ready(h1, 7200)
        with MiniController(dp, l2_policy(hosts3)):
            h0.run("ping", "-c", "1", "-W", "2", dst, check=False)    # neighbours first
            sent = h0.run(PY, "-c", SEND, dst, "7200")
            assert sent.returncode == 0, sent.stderr
            out, err = receiver.communicate(timeout=15)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    expected = " ".join("%d:%d" % (n, i) for i in range(3) for n in (1000, 1000, 1000, 500))
    assert out.strip() == expected, (out, err, dp.stats())
