"""What one OpenFlow connection may cost kp-switch (kp_switch.limits), with real sockets
against a real kp-switch process: management connections are bounded in number, a
connection that never says hello is closed, a connection over its message rate is read
more slowly (every message still answered)."""
import socket
import struct
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp

from kp_switch import limits, wire
from of_harness import Hosts, SwitchProcess, connect

pytestmark = pytest.mark.kpswitch


@pytest.fixture
def hosts():
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    h = Hosts(1, net=84)
    try:
        yield h
    finally:
        h.close()


def closed_by_peer(sock, timeout=30.0):
    """True once the peer closed (EOF or reset), reading and dropping what it sends."""
    sock.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def raw(port, timeout=15.0):
    """A plain TCP connection to the switch's --listen port (it may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_token_bucket_paces_to_its_rate():
    bucket = limits.TokenBucket(10, 5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5    # the burst
    assert bucket.take(0.0) == pytest.approx(0.1)               # then 1/rate each
    assert bucket.take(0.0) == pytest.approx(0.2)
    assert bucket.take(10.0) == 0.0                             # refilled, to the burst
    assert bucket.tokens == 4.0
    with pytest.raises(ValueError):
        limits.TokenBucket(0, 1, 0.0)


def test_management_connections_are_bounded(hosts):
    sw = SwitchProcess([hosts[0].port_if], extra=("--max-mgmt-connections", "3"))
    chans = []
    try:
        chans = [connect(sw.listen_port) for _ in range(3)]
        extra = raw(sw.listen_port)
        assert closed_by_peer(extra), "a 4th management connection was kept"
        extra.close()
        # Those in place still work, and a place freed is taken again.
        assert chans[0].request(wire_echo())[0] is not None
        chans.pop().close()
        deadline = time.monotonic() + 20
        while True:     # (the switch notices the close when its reader sees EOF)
            try:
                again = connect(sw.listen_port, timeout=2)
                break
            except (OSError, EOFError, TimeoutError):
                assert time.monotonic() < deadline, sw.log()[-2000:]
                time.sleep(0.2)
        chans.append(again)
        assert again.request(wire_echo())[0] is not None
        assert "management connection from 127.0.0.1" in sw.log() and "refused" in sw.log()
    finally:
        for c in chans:
            c.close()
        sw.stop()


def wire_echo():
    from ryu.ofproto import ofproto_v1_3_parser as parser
    from of_harness import DP
    return parser.OFPEchoRequest(DP, data=b"x")


def test_a_connection_that_never_says_hello_is_closed(hosts):
    sw = SwitchProcess([hosts[0].port_if])
    try:
        silent = raw(sw.listen_port)
        # A partial message of the biggest size OpenFlow has: buffered, never more.
        silent.sendall(struct.pack("!BBHI", 4, ofp.OFPT_ECHO_REQUEST, 0xFFFF, 1) + b"\0" * 1000)
        assert closed_by_peer(silent, timeout=limits.HELLO_TIMEOUT + 20)
        assert "no hello in" in sw.log()
        silent.close()
        ch = connect(sw.listen_port)      # and the switch serves the next one
        ch.close()
    finally:
        sw.stop()


def test_a_connection_over_its_rate_is_read_slower_and_loses_nothing(hosts):
    rate = 200
    sw = SwitchProcess([hosts[0].port_if], extra=("--mgmt-rate", str(rate)))
    try:
        sock = raw(sw.listen_port)
        sock.sendall(wire.hello())
        n = 3 * rate       # the first `rate` go at once (the burst), the rest at `rate`/s
        start = time.monotonic()
        sock.sendall(b"".join(wire.echo_request(i + 1, b"k") for i in range(n)))
        replies, buf = set(), b""
        sock.settimeout(30)
        while len(replies) < n:
            chunk = sock.recv(65536)
            assert chunk, "closed after %d replies" % len(replies)
            buf += chunk
            while len(buf) >= 8:
                _, type_, length, xid = struct.unpack_from("!BBHI", buf)
                if len(buf) < length:
                    break
                if type_ == ofp.OFPT_ECHO_REPLY:
                    replies.add(xid)
                buf = buf[length:]
        elapsed = time.monotonic() - start
        assert replies == set(range(1, n + 1))          # every one answered
        # A bucket cannot go faster than its rate: (n - burst) / rate at the least.
        assert elapsed >= 0.9 * (n - rate) / rate, elapsed
        assert "over %d messages a second" % rate in sw.log()
        sock.close()
    finally:
        sw.stop()
