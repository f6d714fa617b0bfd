"""Real packets through a Datapath (C and the Python twin): veth pairs in private
namespaces, misses up to a tiny in-test controller, cache inserts, then hits, rewritten
headers, and TCP across a NAT with the veths' checksum offload left on."""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from of_harness import SCTP_AGENT, Host

PY = "/usr/bin/python3"
Policy = Callable[[dict], Optional[Tuple[list, List[int]]]]


class MiniController:
    """Answers misses with a policy: execute the packet, then cache the decision."""

    def __init__(self, dp, policy: Policy) -> None:
        self.dp, self.policy = dp, policy
        self.misses: List[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: List[BaseException] = []

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for in_port, pkt, key, blob, *_ in self.dp.next_misses(50):
                    assert isinstance(pkt, bytes) and len(blob) > 0
                    self.misses.append(key)
                    if key is None:
                        continue
                    decision = self.policy(key)
                    if decision is None:
                        continue
                    actions, ids = decision[:2]
                    self.dp.execute(in_port, pkt, actions)
                    if len(decision) > 2:       # and a megaflow mask
                        self.dp.cache_insert(blob, actions, ids, decision[2])
                    else:
                        self.dp.cache_insert(blob, actions, ids)
        except BaseException as e:     # surfaced by stop()
            self.errors.append(e)

    def __enter__(self) -> "MiniController":
        self.dp.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.dp.stop()
        if self.errors:
            raise self.errors[0]


def l2_policy(hosts: List[Host]) -> Policy:
    """A learning-free L2 switch: port i+1 is hosts[i]; flow id = 100 + output port."""
    by_mac: Dict[str, int] = {h.mac: i + 1 for i, h in enumerate(hosts)}

    def policy(key: dict) -> Tuple[list, List[int]]:
        out = by_mac.get(key["eth_dst"])
        if out is None:         # broadcast / multicast / unknown: flood
            ports = [p for p in range(1, len(hosts) + 1) if p != key["in_port"]]
            return [("output", p) for p in ports], [99]
        return [("output", out)], [100 + out]
    return policy


UDP_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(15)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(b'echo:' + addr[0].encode() + b':' + data, addr)
"""

UDP_CLIENT = """
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if len(sys.argv) > 4:
    s.bind(('', int(sys.argv[4])))
s.settimeout(0.5)
got = 0
for i in range(int(sys.argv[3])):
    for attempt in range(10):
        s.sendto(b'ping%d' % i, (sys.argv[1], int(sys.argv[2])))
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        got += 1
        print(data.decode())
        break
sys.exit(0 if got == int(sys.argv[3]) else 1)
"""


def _wait_ready(h: Host, port: int, proto: str = "u") -> None:
    for _ in range(100):
        out = h.run("ss", "-lnH" + proto, check=False).stdout
        if (":%d " % port) in out:
            return
        time.sleep(0.05)
    raise AssertionError("server did not start in %s" % h.ns)


def test_l2_misses_then_cached_hits(fpio, hosts3):
    h0, h1, h2 = hosts3
    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, h1.ip4, "7000")
    try:
        _wait_ready(h1, 7000)
        with MiniController(dp, l2_policy(hosts3)) as ctl:
            r = h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7000", "30")
            assert r.returncode == 0, r.stdout + r.stderr
            assert r.stdout.count("echo:%s:ping" % h0.ip4) == 30
        st = dp.stats()
    finally:
        server.kill()
        server.wait()
    # The first packets of each direction (ARP, the first datagram) were misses; the
    # rest were cache hits, counted against the flow ids the controller gave.
    assert st["misses"] >= 2
    assert st["hits"] >= 50, st
    assert st["inserts"] >= 2
    assert st["entries"] >= 2
    pkts_to_h1, bytes_to_h1, last = dp.flow_counters([102])[0]
    assert pkts_to_h1 >= 25 and bytes_to_h1 >= 25 * 42 and last > 0
    assert dp.flow_counters([101])[0][0] >= 25
    assert dp.flow_counters([7])[0] == (0, 0, 0)
    p1, p2 = st["ports"][1], st["ports"][2]
    assert p1["rx_packets"] >= 31 and p2["tx_packets"] >= 31
    assert p2["rx_packets"] >= 31 and p1["tx_packets"] >= 31
    assert st["hits"] + st["misses"] + st["parse_errors"] == \
        sum(p["rx_packets"] for p in st["ports"].values())
    # h2 saw only the floods (ARP), never the unicast datagrams.
    assert st["ports"][3]["tx_packets"] < 5
    assert {k["in_port"] for k in ctl.misses if k} <= {1, 2, 3}


MANY_SOURCES_CLIENT = """
import socket, sys
got = 0
for i in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('', int(sys.argv[4]) + i))
    s.settimeout(0.5)
    for attempt in range(10):
        s.sendto(b'ping%d' % i, (sys.argv[1], int(sys.argv[2])))
        try:
            s.recv(65535)
        except socket.timeout:
            continue
        got += 1
        break
    s.close()
print(got)
sys.exit(0 if got == int(sys.argv[3]) else 1)
"""


def test_megaflows_answer_new_sessions_without_misses(fpio, hosts3):
    """The L2 policy's answer depends only on in_port and eth_dst: given as a megaflow
    mask, one miss per direction serves every later source port (each a megaflow hit,
    then exact hits), and the counters still add up to the packets received."""
    from kp_switch.megaflow import IN_PORT_MASK, mask_blob
    h0, h1, h2 = hosts3
    mask = mask_blob({"in_port": IN_PORT_MASK, "eth_dst": (1 << 48) - 1})
    l2 = l2_policy(hosts3)
    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, h1.ip4, "7000")
    try:
        _wait_ready(h1, 7000)
        with MiniController(dp, lambda key: l2(key) + (mask,)) as ctl:
            r = h0.run(PY, "-c", MANY_SOURCES_CLIENT, h1.ip4, "7000", "20", "20000")
            assert r.returncode == 0, r.stdout + r.stderr
        st = dp.stats()
    finally:
        server.kill()
        server.wait()
    udp_misses = [k for k in ctl.misses if k and k.get("ip_proto") == 17]
    assert len(udp_misses) <= 4, udp_misses          # the first datagram each way
    assert st["mf_hits"] >= 30, st                    # 19 new sources, both directions
    assert st["mf_inserts"] >= 2 and st["mf_entries"] >= 2 and st["mf_subtables"] == 1
    assert st["hits"] + st["mf_hits"] + st["misses"] + st["parse_errors"] == \
        sum(p["rx_packets"] for p in st["ports"].values())
    # cache hits count against the flow ids (the first datagram each way took the slow path)
    assert dp.flow_counters([102])[0][0] >= 19 and dp.flow_counters([101])[0][0] >= 19


def test_invalidate_and_port_down(fpio, hosts3):
    h0, h1, _ = hosts3
    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, h1.ip4, "7001")
    try:
        _wait_ready(h1, 7001)
        with MiniController(dp, l2_policy(hosts3)):
            assert h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7001", "5", "5555").returncode == 0
            before = dp.stats()
            dp.invalidate_flow(102)
            assert h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7001", "5", "5555").returncode == 0
            after_flow = dp.stats()
            dp.invalidate_all()
            assert h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7001", "5", "5555").returncode == 0
            after_all = dp.stats()
            dp.set_port_state(2, False)
            r = h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7001", "1", "5555",
                      check=False)
            down = dp.stats()
            dp.set_port_state(2, True)
            assert h0.run(PY, "-c", UDP_CLIENT, h1.ip4, "7001", "3", "5555").returncode == 0
    finally:
        server.kill()
        server.wait()
    # After invalidating the flow to h1, the next packet to h1 missed again; the
    # reverse direction (flow 101) kept hitting.
    assert after_flow["invalidated"] >= before["invalidated"] + 1
    assert after_flow["misses"] >= before["misses"] + 1
    assert after_all["invalidated"] >= after_flow["invalidated"] + 2
    assert r.returncode != 0, "a down port must not send"
    assert down["ports"][2]["tx_dropped"] > after_all["ports"][2]["tx_dropped"]


TCP_SERVER = """
import hashlib, socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(20)
c, addr = s.accept()
c.settimeout(20)
n = int(sys.argv[3])
h = hashlib.sha256()
got = 0
while got < n:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
    got += len(d)
c.sendall(('%s %d %s\\n' % (addr[0], got, h.hexdigest())).encode() * 2000)
c.close()
"""

TCP_CLIENT = """
import hashlib, socket, sys, os
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
n = int(sys.argv[3])
data = os.urandom(n)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(data)
buf = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    buf += d
line = buf.split(b'\\n')[0].decode()
ok = buf == (line + '\\n').encode() * 2000
print(line, hashlib.sha256(data).hexdigest(), ok)
"""


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_through_nat_with_checksum_offload(fpio, hosts3, family):
    """h0 talks to a VIP; the datapath DNATs to h1:8080 and SNATs the replies back.
    Offloads stay on, so the sender's packets arrive CHECKSUM_PARTIAL (and as GSO
    super-frames): the connection only completes if the datapath finishes and then
    incrementally fixes the checksums, and segments what exceeds the MTU."""
    h0, h1, h2 = hosts3
    v6 = family == "ipv6"
    vip = "fd00:77::100" if v6 else "10.77.0.100"
    a_src, a_dst = ("ipv6_src", "ipv6_dst") if v6 else ("ipv4_src", "ipv4_dst")
    h_ip = (lambda h: h.ip6) if v6 else (lambda h: h.ip4)
    h0.run("ip", "-6" if v6 else "-4", "neigh", "replace", vip, "lladdr", h1.mac,
           "dev", "eth0")
    h1.run("ip", "-6" if v6 else "-4", "neigh", "replace", h_ip(h0), "lladdr", h0.mac,
           "dev", "eth0")
    l2 = l2_policy(hosts3)

    def policy(key: dict):
        if key.get(a_dst) == vip and key.get("tcp_dst") == 80:
            return [("set_field", a_dst, h_ip(h1)), ("set_field", "tcp_dst", 8080),
                    ("dec_ttl",), ("output", 2)], [1]
        if key.get(a_src) == h_ip(h1) and key.get("tcp_src") == 8080:
            return [("set_field", a_src, vip), ("set_field", "tcp_src", 80),
                    ("output", 1)], [2]
        return l2(key)

    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=256)
    n = 300_000
    server = h1.popen(PY, "-c", TCP_SERVER, h_ip(h1), "8080", str(n))
    try:
        _wait_ready(h1, 8080, "t")
        with MiniController(dp, policy):
            r = h0.run(PY, "-c", TCP_CLIENT, vip, "80", str(n), timeout=40)
        out, err = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert r.returncode == 0, r.stderr
    peer, got, digest, mine, ok = r.stdout.split()
    assert peer == h_ip(h0)             # the server saw the real client
    assert int(got) == n and digest == mine and ok == "True"
    st = dp.stats()
    assert dp.flow_counters([1])[0][0] > 10 and dp.flow_counters([2])[0][0] > 10
    assert st["hits"] > 20


RAW_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for _ in range(int(sys.argv[2])):
    s.send(bytes.fromhex(sys.argv[1]))
    time.sleep(0.05)
"""

RAW_RECV = """
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(263, 8, 1)                                     # PACKET_AUXDATA
s.bind(('eth0', 0))
s.settimeout(10)
while True:
    data, anc, _, _ = s.recvmsg(65535, 64)
    if b'kp-vlan-magic' not in data:
        continue
    tci = None
    for lvl, typ, c in anc:
        st, _l, _s, _m, _n, t, _tp = struct.unpack('=IIIHHHH', c[:20])
        if st & 16:                                         # TP_STATUS_VLAN_VALID
            tci = t
    if data[12:14] == b'\\x81\\x00':
        tci = struct.unpack('!H', data[14:16])[0]
    print('tci', tci, 'len', len(data))
    sys.stdout.flush()
    break
"""


def test_vlan_tagged_traffic_keeps_its_tag(fpio, hosts3):
    """The kernel hands AF_PACKET tagged frames with the tag stripped into metadata; the
    datapath must put it back, in the key and in the frame it forwards."""
    from conftest import eth, ipv4, l4
    h0, h1, _ = hosts3
    frame = eth(ipv4(l4("udp", "10.0.0.1", "10.0.0.2", payload=b"kp-vlan-magic"), 17),
                0x0800, dst=h1.mac, src=h0.mac, vlans=((0x8100, 0x6005),))
    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=64)
    recv = h1.popen(PY, "-c", RAW_RECV)
    try:
        time.sleep(0.3)
        with MiniController(dp, l2_policy(hosts3)) as ctl:
            h0.run(PY, "-c", RAW_SEND, frame.hex(), "5")
            out, err = recv.communicate(timeout=10)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    keys = [k for k in ctl.misses if k and k.get("udp_dst") == 80]
    assert keys and keys[0]["vlan_vid"] == 0x1005 and keys[0]["vlan_pcp"] == 3, ctl.misses
    assert keys[0]["eth_type"] == 0x0800
    assert out.split()[:2] == ["tci", str(0x6005)], out + err
    assert dp.stats()["hits"] >= 1


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_through_the_datapaths_own_sessions(fpio, hosts3, family):
    """kp_lb: the datapath picks the pod from the VIP's table, keeps the session and
    translates both ways itself; the policy (the slow path) only ever sees the VIP's
    first packet and untranslated forwarding, and a bulk transfer with checksum
    offload (super-frames) goes through the session table intact.  The twin and the C
    datapath alike, the C one under ASan/UBSan in switch/csrc/sanitize.sh."""
    import ipaddress
    from kp_proto import lb as kplb
    h0, h1, h2 = hosts3
    v6 = family == "ipv6"
    vip = "fd00:77::100" if v6 else "10.77.0.100"
    a_dst = "ipv6_dst" if v6 else "ipv4_dst"
    h_ip = (lambda h: h.ip6) if v6 else (lambda h: h.ip4)
    for h, peer, mac in ((h0, vip, h1.mac), (h1, h_ip(h0), h0.mac), (h2, h_ip(h0), h0.mac)):
        h.run("ip", "-6" if v6 else "-4", "neigh", "replace", peer, "lladdr", mac,
              "dev", "eth0")
    l2 = l2_policy(hosts3)
    seen: List[dict] = []

    def policy(key: dict):
        seen.append(key)
        if key.get(a_dst) == vip and key.get("tcp_dst") == 80:
            return [("kp_lb", 9)], [1]
        return l2(key)

    dp = fpio.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=256)
    pods = [(h_ip(h1), 8080), (h_ip(h2), 8080)]
    table = [0] * 5          # every new session to h1
    msgs = kplb.encode_vip(9, 6 if v6 else 4, table, pods, 0)
    raw_pods = b"".join(kplb.POD.pack(ipaddress.ip_address(a).packed.ljust(16, b"\0"), p)
                        for a, p in pods)
    assert msgs[-1][0] == kplb.KP_LB_VIP
    dp.lb_set_vip(9, 6 if v6 else 4, 0, struct.pack("!5H", *table), raw_pods)
    n = 300_000
    server = h1.popen(PY, "-c", TCP_SERVER, h_ip(h1), "8080", str(n))
    try:
        _wait_ready(h1, 8080, "t")
        with MiniController(dp, policy):
            r = h0.run(PY, "-c", TCP_CLIENT, vip, "80", str(n), timeout=40)
            st = dp.lb_stats()
            sessions = dp.lb_sessions()
        out, err = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert r.returncode == 0, r.stderr
    peer, got, digest, mine, ok = r.stdout.split()
    assert peer == h_ip(h0)             # the server saw the real client
    assert int(got) == n and digest == mine and ok == "True"
    assert st["created"] == 1 and st["dropped"] == 0 and st["untracked"] == 0
    assert st["vips"][0]["vip_id"] == 9 and st["vips"][0]["pods"][0] == st["vips"][0]["sessions"]
    assert st["vips"][0]["packets"] > 20
    # the slow path saw the VIP's first packets and the translated ones, never a reply
    # from the pod's own address to the client (the session table gave it the VIP's)
    src = "ipv6_src" if v6 else "ipv4_src"
    assert not [k for k in seen if k.get(src) == h_ip(h1) and k.get("tcp_src") == 8080]
    assert any(s[4] == ipaddress.ip_address(vip).packed and s[7] == 8080 for s in sessions) \
        or st["sessions"] == 0     # closed sessions may be gone already
    assert dp.lb_flush(kplb.ALL_VIPS) >= 0


# A DATA chunk with no association before it (verification tag 1): no INIT, so it may
# not start a session.
SCTP_STRAY = """
import socket, sys
sys.path.insert(0, sys.argv[4])
from sctp_agent import data_chunk, packet
pkt = packet(int(sys.argv[2]), int(sys.argv[3]), 1, data_chunk(b"stray", 1))
socket.socket(socket.AF_INET, socket.SOCK_RAW, 132).sendto(pkt, (sys.argv[1], 0))
"""


def test_sctp_through_the_datapaths_own_sessions(fp, hosts3):
    """kp_lb for an SCTP VIP (crafted packets over raw sockets: the kernel has no SCTP
    sockets): an INIT starts the session, the pod port is rewritten with the CRC32c
    computed again (the far ends drop a wrong one, and say so), replies come back from
    the VIP's port, the client's ABORT moves the session to closing, a new INIT on its
    ports starts a new session, and a DATA chunk with no INIT before it goes to its pod
    untracked. C and the twin alike."""
    import ipaddress
    from kp_proto import lb as kplb
    h0, h1, h2 = hosts3
    vip, port, target = "10.77.0.100", 38412, 36412
    for h, peer, mac in ((h0, vip, h1.mac), (h1, h0.ip4, h0.mac), (h2, h0.ip4, h0.mac)):
        h.run("ip", "neigh", "replace", peer, "lladdr", mac, "dev", "eth0")
    l2 = l2_policy(hosts3)

    def policy(key: dict):
        if key.get("ipv4_dst") == vip and key.get("sctp_dst") == port:
            return [("kp_lb", 9)], [1]
        return l2(key)

    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=256)
    raw_pods = kplb.POD.pack(ipaddress.ip_address(h1.ip4).packed.ljust(16, b"\0"), target)
    dp.lb_set_vip(9, 4, 0, struct.pack("!4H", 0, 0, 0, 0), raw_pods)
    server = h1.popen(PY, "-u", SCTP_AGENT, "server", "--port", str(target), "--name", "p1",
                      "--lifetime", "20")
    try:
        assert '"ready": true' in server.stdout.readline()
        with MiniController(dp, policy):
            runs = [h0.run(PY, "-u", SCTP_AGENT, "request", vip, str(port), "--src-port",
                           str(sport), "--count", "2", "--timeout", "2", check=False,
                           timeout=30) for sport in (40001, 40002)]
            sessions = dp.lb_sessions()
            # An INIT on a closed association's ports starts a new session.
            runs.append(h0.run(PY, "-u", SCTP_AGENT, "request", vip, str(port),
                               "--src-port", "40001", "--count", "1", "--timeout", "2",
                               check=False, timeout=30))
            h0.run(PY, "-c", SCTP_STRAY, vip, "40003", str(port),
                   os.path.dirname(SCTP_AGENT))
            deadline = time.monotonic() + 5
            while dp.lb_stats()["untracked"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            st = dp.lb_stats()
    finally:
        server.kill()
        server.wait()
    for r in runs:
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert lines[-1]["ok"] and lines[-1]["bad_crc"] == 0, r.stdout + r.stderr
        assert {(x["from"], x["from_port"]) for x in lines[:-1]} == {(vip, port)}
        assert all(x["bad_crc"] == 0 and x["peer"] == h0.ip4 for x in lines[:-1])
    assert st["created"] == 3 and st["untracked"] == 1 and st["dropped"] == 0, st
    mine = sorted(s for s in sessions if s[0] == 132)
    assert [(s[3], s[5], s[7], s[9]) for s in mine] == [
        (40001, port, target, "closing"), (40002, port, target, "closing")], sessions


def test_a_hairpin_goes_back_out_of_its_in_port_from_the_hairpin_source(fp, hosts3):
    """kp_lb's hairpin: a pod that reaches itself through its VIP gets its request from
    the configured hairpin source (the node's address), and the translated packets, both
    ways, reach the tables marked LB_LOOPBACK, so that they may leave by their in_port
    (OpenFlow drops that otherwise). The twin and the C datapath alike."""
    import ipaddress
    from kp_proto import lb as kplb
    from kp_switch.fastpath_ref import LB_LOOPBACK
    _, h1, _ = hosts3
    vip, node = "10.77.0.100", "10.77.0.250"
    for peer in (vip, node):
        h1.run("ip", "neigh", "replace", peer, "lladdr", "02:00:00:00:00:64", "dev", "eth0")
    looped: List[dict] = []

    def policy(key: dict):
        if key.get("ipv4_dst") == vip and key.get("udp_dst") == 53:
            return [("kp_lb", 3)], [1]
        if key.get(LB_LOOPBACK):
            looped.append(key)
            return [("set_field", "eth_dst", h1.mac), ("output", key["in_port"])], [2]
        return None          # nothing else may get through

    dp = fp.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], buckets=256)
    dp.lb_configure(256, (60, 60, 60, 60), ipaddress.ip_address(node).packed, None)
    pod = kplb.POD.pack(ipaddress.ip_address(h1.ip4).packed.ljust(16, b"\0"), 5353)
    dp.lb_set_vip(3, 4, 0, struct.pack("!2H", 0, 0), pod)
    server = h1.popen(PY, "-c", UDP_ECHO_SERVER, "0.0.0.0", "5353")
    try:
        _wait_ready(h1, 5353)
        with MiniController(dp, policy):
            r = h1.run(PY, "-c", UDP_CLIENT, vip, "53", "3", "45000", timeout=20, check=False)
            st = dp.lb_stats()
    finally:
        server.kill()
        server.wait()
    assert r.returncode == 0, (r.stdout, r.stderr, looped, st)
    assert r.stdout.split() == ["echo:%s:ping%d" % (node, i) for i in range(3)]
    # both ways: the request (to the pod, from the node) and the reply (to the pod,
    # from the VIP), each once before its cache entry took over
    assert {(k["ipv4_src"], k["ipv4_dst"]) for k in looped} == {(node, h1.ip4), (vip, h1.ip4)}
    assert st["created"] == 1 and st["untracked"] == 0
