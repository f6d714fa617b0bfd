"""kp-switch's datapath threads (--threads N, csrc/datapath.h and steer.h) with real
packets: each flow reaches the thread its larger L4 port steers it to (both directions
on one thread), invalidations reach every thread's cache, counters and stats are every
thread's together, and what cannot run on several threads is refused with its reason.
The load balancer's sessions on two threads: test_of_lb.py (its rig runs at 1 and 2).
"""
from __future__ import annotations

import errno
import subprocess
import time
from typing import List, Tuple

import pytest

from conftest import _fastpath, eth, ipv4, l4
from kp_switch import datapath as dpimpl
from kp_switch import fastpath_ref
from of_harness import KP_SWITCH, steer_thread

PY = "/usr/bin/python3"
needs_c = pytest.mark.skipif(_fastpath is None, reason="the C extension is not built")

# Datagrams from each source port of a range (to one destination port), or to each
# destination port of a range (from one source port).
SEND = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
dst, port, first, n, vary = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
for i in range(n):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if vary == "sport":
        s.bind(("", first + i)); s.sendto(b"x", (dst, port))
    else:
        s.bind(("", port)); s.sendto(b"x", (dst, first + i))
    s.close()
"""


def test_thread_counts_out_of_range_are_refused_with_the_limit():
    limit = dpimpl.MAX_THREADS
    for bad in ("0", str(limit + 1), "-1"):
        r = subprocess.run([KP_SWITCH, "--threads", bad, "lo"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "--threads %s: want 1..%d" % (bad, limit) in r.stderr, r
    r = subprocess.run([KP_SWITCH, "--threads", "two", "lo"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "--threads" in r.stderr
    with pytest.raises(ValueError, match="datapath threads: want 1..%d" % limit):
        dpimpl.open_datapath([], 64, "afpacket", 0)
    with pytest.raises(ValueError, match="the Python twin has 1"):
        fastpath_ref.Datapath([], 64, "afpacket", 2)


@needs_c
def test_the_c_datapath_refuses_threads_past_its_limit():
    assert _fastpath.MAX_THREADS == dpimpl.MAX_THREADS >= 2
    for bad in (0, _fastpath.MAX_THREADS + 1):
        with pytest.raises(ValueError, match="want 1..%d" % _fastpath.MAX_THREADS):
            _fastpath.Datapath([], 64, "afpacket", bad)


@needs_c
def test_afxdp_takes_one_thread_and_auto_says_why_it_fell_back(hosts3):
    ports = [(i + 1, h.port_if) for i, h in enumerate(hosts3)]
    with pytest.raises(OSError) as e:
        _fastpath.Datapath(ports, 64, "afxdp", 2)
    assert e.value.errno == errno.EOPNOTSUPP and "one datapath thread" in str(e.value)
    dp, io, why = dpimpl.open_datapath(ports, 64, "auto", 2)
    try:
        assert io == "afpacket" and "one datapath thread" in why
        assert set(dp.port_io().values()) == {"afpacket fanout"}
        assert dp.stats()["threads"] == 2
    finally:
        dp.stop()


def _misses(dp, want: int, deadline_s: float = 10.0) -> List[Tuple[dict, int]]:
    """(key, thread) of up to `want` misses, waiting at most deadline_s."""
    out: List[Tuple[dict, int]] = []
    end = time.monotonic() + deadline_s
    while len(out) < want and time.monotonic() < end:
        for _port, _pkt, key, _blob, thread in dp.next_misses(100, 256):
            if key is not None:
                out.append((key, thread))
    return out


def _neighbours(hosts3) -> None:
    """Static neighbours both ways between h0 and h1: no ARP or ND in what we count."""
    h0, h1 = hosts3[0], hosts3[1]
    for a, b in ((h0, h1), (h1, h0)):
        a.run("ip", "neigh", "replace", b.ip4, "lladdr", b.mac, "dev", "eth0")
        a.run("ip", "-6", "neigh", "replace", b.ip6, "lladdr", b.mac, "dev", "eth0")


@needs_c
def test_each_flow_reaches_the_thread_its_larger_port_steers_it_to(hosts3):
    """With no controller, every frame is a miss that names the thread that received
    it: the kernel ran the fanout program; the thread must be steer.h's (written again
    in steer_thread), for requests and their replies alike, IPv4 and IPv6."""
    h0, h1 = hosts3[0], hosts3[1]
    _neighbours(hosts3)
    dp = _fastpath.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], 64,
                            "afpacket", 2)
    dp.start()
    try:
        n = 40
        h0.run(PY, "-c", SEND, h1.ip4, "7000", "41000", str(n), "sport")   # requests
        h1.run(PY, "-c", SEND, h0.ip4, "7000", "41000", str(n), "dport")   # their replies
        h0.run(PY, "-c", SEND, h1.ip6, "7001", "41000", str(n), "sport")
        h0.run("ping", "-c", "3", "-i", "0.2", "-W", "1", h1.ip4, check=False)
        got = _misses(dp, 3 * n + 6)
    finally:
        dp.stop()
    udp = [(k, t) for k, t in got if k.get("ip_proto") == 17]
    assert len(udp) >= 3 * n, (len(udp), got[:5])
    for k, t in udp:
        assert t == steer_thread(k["udp_src"], k["udp_dst"], 2), (k, t)
    by_port = {}
    for k, t in udp:
        by_port.setdefault(max(k["udp_src"], k["udp_dst"]), set()).add(t)
    assert all(len(ts) == 1 for ts in by_port.values())     # a reply on its request's
    assert {t for _, t in udp} == {0, 1}                      # and both threads in use
    icmp = {t for k, t in got if k.get("ip_proto") == 1}
    assert len(icmp) == 1, got        # echo requests and replies: the addresses' thread


def _wait_hits(dp, total: int) -> int:
    """Polls until the datapath counted `total` cache hits (or 10 s); the last count."""
    end = time.monotonic() + 10
    while dp.stats()["hits"] < total and time.monotonic() < end:
        time.sleep(0.02)
    return dp.stats()["hits"]


@needs_c
def test_invalidation_reaches_every_threads_cache_and_counters_add_up(hosts3):
    """Flows cached by the slow path (an insert reaches every thread's cache): a second
    round is all hits, on both threads; invalidating the flow makes both threads miss
    again; the flow's counter is both threads' hits."""
    h0, h1 = hosts3[0], hosts3[1]
    _neighbours(hosts3)
    dp = _fastpath.Datapath([(i + 1, h.port_if) for i, h in enumerate(hosts3)], 64,
                            "afpacket", 2)
    n = 24
    send = (PY, "-c", SEND, h1.ip4, "7000", "42000", str(n), "sport")
    dp.start()
    try:
        first = []
        end = time.monotonic() + 10
        h0.run(*send)
        while len(first) < n and time.monotonic() < end:
            for port, pkt, key, blob, thread in dp.next_misses(100, 256):
                if key is None or key.get("udp_dst") != 7000:
                    continue
                first.append(thread)
                dp.execute(port, pkt, [("output", 2)], thread)
                dp.cache_insert(blob, [("output", 2)], [102])
        assert sorted(set(first)) == [0, 1] and len(first) == n
        st0 = dp.stats()
        h0.run(*send)
        # Every datagram a hit (nothing else is cached: the namespaces' IPv6 chatter
        # misses), on both threads.
        assert _wait_hits(dp, st0["hits"] + n) == st0["hits"] + n
        assert [k for _, _, k, _, _ in dp.next_misses(0, 1024)
                if k and k.get("udp_dst") == 7000] == []
        st1 = dp.stats()
        assert st1["entries"] == 2 * n           # each thread's cache has every entry
        assert dp.flow_counters([102])[0][0] == n
        assert st1["ports"][2]["tx_packets"] >= 2 * n
        dp.invalidate_flow(102)
        h0.run(*send)
        again = [t for k, t in _misses(dp, n) if k.get("udp_dst") == 7000]
        assert sorted(set(again)) == [0, 1] and len(again) == n
        assert dp.flow_counters([102])[0][0] == n
        assert dp.stats()["threads"] == 2
    finally:
        dp.stop()


@needs_c
def test_the_load_balancers_of_two_threads_are_programmed_and_read_as_one():
    """VIPs reach every thread's load balancer; stats and capacity are their sum; a bad
    VIP changes none of them (no ports needed: the tables alone)."""
    import struct
    dp = _fastpath.Datapath([], 64, "afpacket", 2)
    dp.lb_configure(16, (300, 60, 30, 30))
    pods = b"".join(bytes([10, 0, 0, i]) + bytes(12) + struct.pack("!HH", 80, 0)
                    for i in (1, 2))
    table = struct.pack("!7H", 0, 1, 1, 0, 1, 0, 0)
    dp.lb_set_vip(5, 4, 0, table, pods)
    st = dp.lb_stats()
    assert st["capacity"] == 2 * 16 * 4 // 2 and st["sessions"] == 0
    assert [(v["vip_id"], v["pods"]) for v in st["vips"]] == [(5, [0, 0])]
    with pytest.raises(ValueError):
        dp.lb_set_vip(6, 4, 0, table[:-1], pods)            # an odd table: refused
    assert [v["vip_id"] for v in dp.lb_stats()["vips"]] == [5]
    assert dp.lb_flush(0xFFFFFFFF) == 0 and dp.lb_sessions(10) == []
    # Sessions made by the slow path's kp_lb go in the miss's thread; one whose client
    # port is below the Service's has its replies steered elsewhere: counted as split.
    low = [p for p in range(1000, 1100) if steer_thread(p, 80, 2) != steer_thread(p, 8080, 2)]
    clients = [(0, 50000), (1, 50001), (0, low[0]), (1, low[1])]
    for thread, sport in clients:
        frame = eth(ipv4(l4("udp", "10.9.0.1", "10.96.0.5", sport=sport, dport=8080), 17,
                         src="10.9.0.1", dst="10.96.0.5"), 0x0800)
        dp.execute(1, frame, [("kp_lb", 5)], thread)
    st = dp.lb_stats()
    split = sum(steer_thread(sport, 8080, 2) != steer_thread(80, sport, 2)
                for _, sport in clients)
    assert st["created"] == st["sessions"] == 4 and split == 2
    assert st["split_sessions"] == split and st["vips"][0]["sessions"] == 4
    assert sorted(s[3] for s in dp.lb_sessions(10)) == sorted(p for _, p in clients)
    assert dp.lb_flush(5) == 4 and dp.lb_stats()["sessions"] == 0
    with pytest.raises(ValueError, match="no datapath thread 2"):
        dp.execute(1, frame, [("kp_lb", 5)], 2)
    dp.lb_delete_vip(5)
    assert dp.lb_stats()["vips"] == []
