"""TCP GSO: a sender's TSO super-frames, which a veth hands over whole, leave the switch
cut into the sender's segments (its MSS for the connection), not merely into what fits
the egress MTU: a receiver that asked for a small MSS gets no larger segment."""
import pytest

from test_fastpath_datapath import PY, MiniController, _wait_ready, l2_policy

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
def test_tcp_super_frames_leave_in_the_senders_segments(fp, hosts3, v6):
    h0, h1, _ = hosts3
    dst = h1.ip6 if v6 else h1.ip4
    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    server = h1.popen(PY, "-c", SERVER, dst, "7300", str(MSS))
    try:
        _wait_ready(h1, 7300, "t")
        with MiniController(dp, l2_policy(hosts3)):
            h0.run("ping", "-c", "1", "-W", "2", dst, check=False)    # neighbours first
            sent = h0.run(PY, "-c", CLIENT, dst, "7300")
            assert sent.returncode == 0, sent.stderr
            out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    got, largest = map(int, out.split())
    assert got == 256 * 1024, (out, err)
    assert 0 < largest <= MSS, (largest, dp.stats())
