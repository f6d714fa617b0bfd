"""A real kp-switch process driven over a real OpenFlow 1.3 TCP connection by a small
test controller, its ports veth ends of private network namespaces with real traffic.

One switch serves the module (it starts in about a second); each test starts from
empty tables and groups.
"""
import os
import struct
import sys
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_proto import experimenter as kpexp
from of_harness import (DP, Hosts, SwitchProcess, TestController, close_rig, connect, delete_all,
                        flow_mod, out, sh)

pytestmark = pytest.mark.kpswitch
APPLY = ofp.OFPIT_APPLY_ACTIONS
M = parser.OFPMatch
ARP = 0x0806
IP = 0x0800
SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d)
c.close()
"""
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
data = bytes(range(256)) * 800
s.sendall(data); s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d: break
    got += d
print("OK" if got == data else "MISMATCH %d" % len(got))
"""


@pytest.fixture(scope="module")
def rig():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(3)
    ctl = sw = ch = None
    try:
        ctl = TestController()
        sw = SwitchProcess([h.port_if for h in hosts], controller=ctl.target, dpid=0x2A)
        state = [hosts, ctl, sw, ctl.accept()]
        yield state  # a list: test_fail_secure_then_reconnect replaces the channel
        ch = state[3]
        ch.close()
        ch = None
        assert sw.stop() == 0, sw.log()[-2000:]
    finally:
        close_rig(ch, sw, ctl, hosts)


@pytest.fixture
def sw(rig):
    hosts, ctl, proc, ch = rig
    ch.send(delete_all())
    ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, ofp.OFPG_ALL, []))
    assert ch.barrier() == []
    for h in hosts:
        h.run("ip", "neigh", "flush", "dev", "eth0", check=False)
    time.sleep(0.05)
    while not ch.inbox.empty():
        ch.inbox.get_nowait()
    return rig


def l2_flows(ch, hosts, extra=()):
    """Exact L2 forwarding between the hosts, ARP flooded."""
    ch.send(flow_mod(M(eth_type=ARP), [out(ofp.OFPP_FLOOD)], priority=50))
    for i, h in enumerate(hosts):
        ch.send(flow_mod(M(eth_dst=h.mac), [*extra, out(i + 1)], priority=10))
    assert ch.barrier() == []


def flow_stats(ch, **kw):
    return ch.stats(parser.OFPFlowStatsRequest(DP, 0, kw.pop("table_id", ofp.OFPTT_ALL), ofp.OFPP_ANY,
                                               ofp.OFPG_ANY, 0, 0, kw.pop("match", M())))


def port_stats(ch, port=ofp.OFPP_ANY):
    return {s.port_no: s for s in ch.stats(parser.OFPPortStatsRequest(DP, 0, port))}


# -- channel basics -------------------------------------------------------------------

def test_features_and_port_desc(sw):
    hosts, _, _, ch = sw
    f = ch.features
    assert f.datapath_id == 0x2A and f.n_tables == 8 and f.n_buffers > 0
    ports = ch.stats(parser.OFPPortDescStatsRequest(DP, 0))
    assert [(p.port_no, p.name.decode(), p.hw_addr) for p in ports] == [
        (i + 1, h.port_if, open("/sys/class/net/%s/address" % h.port_if).read().strip())
        for i, h in enumerate(hosts)]
    desc = ch.stats(parser.OFPDescStatsRequest(DP, 0))[0]
    assert b"kp" in desc.mfr_desc
    # the C fast path runs the switch once it is built, unless KP_FASTPATH=ref forces the twin
    try:
        import kp_switch._fastpath  # noqa: F401
        want = b"ref" if os.environ.get("KP_FASTPATH") == "ref" else b"c fast path"
    except ImportError:
        want = b"ref fast path"
    assert want in desc.hw_desc, desc.hw_desc
    r = ch.request(parser.OFPEchoRequest(DP, data=b"hi"))[0]
    assert r.data == b"hi"
    ch.send(parser.OFPSetConfig(DP, 0, 200))
    assert ch.request(parser.OFPGetConfigRequest(DP))[0].miss_send_len == 200
    ch.send(parser.OFPSetConfig(DP, 0, 128))


def test_ping_counts_cached_packets_in_flow_port_table_stats(sw):
    hosts, _, _, ch = sw
    before = port_stats(ch)
    l2_flows(ch, hosts)
    assert hosts[0].ping(hosts[1].ip4, count=10, interval=0.05)
    stats = {s.match["eth_dst"]: s for s in flow_stats(ch) if "eth_dst" in s.match}
    # 10 requests and 10 replies; most went through the cache, all are counted
    assert stats[hosts[1].mac].packet_count >= 10
    assert stats[hosts[0].mac].packet_count >= 10
    assert stats[hosts[1].mac].byte_count >= 10 * 98
    agg = ch.stats(parser.OFPAggregateStatsRequest(DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                                   0, 0, M(eth_dst=hosts[1].mac)))[0]
    assert agg.flow_count == 1 and agg.packet_count == stats[hosts[1].mac].packet_count
    after = port_stats(ch)
    assert after[1].rx_packets - before[1].rx_packets >= 10
    assert after[2].tx_packets - before[2].tx_packets >= 10
    assert after[1].rx_bytes > before[1].rx_bytes
    t0 = ch.stats(parser.OFPTableStatsRequest(DP, 0))[0]
    assert t0.table_id == 0 and t0.active_count == 4 and t0.matched_count >= 20
    assert len(port_stats(ch, 2)) == 1


def test_priorities_and_vlan_push_pop_across_tables_and_dec_ttl(sw):
    hosts, _, _, ch = sw
    h1, h2, h3 = hosts
    ch.send(flow_mod(M(eth_type=ARP), [out(ofp.OFPP_FLOOD)], priority=50))
    # table 0: tag everything from port 1 with VLAN 10, then table 1 decides
    ch.send(flow_mod(M(in_port=1, eth_type=IP), instructions=[
        parser.OFPInstructionActions(APPLY, [parser.OFPActionPushVlan(0x8100),
                                             parser.OFPActionSetField(vlan_vid=0x1000 | 10)]),
        parser.OFPInstructionGotoTable(1)], priority=20))
    # a lower-priority flow that would send to port 3 must lose
    ch.send(flow_mod(M(in_port=1), [out(3)], priority=5))
    ch.send(flow_mod(M(vlan_vid=0x1000 | 10), [parser.OFPActionPopVlan(), parser.OFPActionDecNwTtl(),
                                               out(2)], table_id=1))
    ch.send(flow_mod(M(in_port=2, eth_type=IP), [parser.OFPActionDecNwTtl(), out(1)], priority=20))
    assert ch.barrier() == []
    r = h1.run("ping", "-c", "3", "-i", "0.1", "-W", "2", h2.ip4, check=False)
    assert r.returncode == 0, r.stdout
    assert "ttl=63" in r.stdout  # the reply was decremented once
    low = [s for s in flow_stats(ch) if s.priority == 5][0]
    assert low.packet_count <= 2  # at most ARP-less stray packets


def test_tcp_through_nat_rewrites_has_correct_checksums(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    vip = "10.78.0.100"
    l2_flows(ch, hosts)
    h1.run("ip", "neigh", "replace", vip, "lladdr", "02:00:00:00:01:00", "dev", "eth0")
    ch.send(flow_mod(M(in_port=1, eth_type=IP, ip_proto=6, ipv4_dst=vip, tcp_dst=80), [
        parser.OFPActionSetField(eth_dst=h2.mac), parser.OFPActionSetField(ipv4_dst=h2.ip4),
        parser.OFPActionSetField(tcp_dst=8080), out(2)], priority=100))
    ch.send(flow_mod(M(in_port=2, eth_type=IP, ip_proto=6, ipv4_src=h2.ip4, tcp_src=8080), [
        parser.OFPActionSetField(ipv4_src=vip), parser.OFPActionSetField(tcp_src=80), out(1)],
        priority=100))
    assert ch.barrier() == []
    server = h2.popen("/usr/bin/python3", "-c", SERVER, "8080")
    try:
        assert server.stdout.readline().strip() == "ready"
        r = h1.run("/usr/bin/python3", "-c", CLIENT, vip, "80", check=False, timeout=30)
        assert r.stdout.strip() == "OK", r.stdout + r.stderr
    finally:
        server.kill()
        server.wait()
    nat = [s for s in flow_stats(ch) if s.priority == 100]
    assert all(s.packet_count > 5 for s in nat)


# -- timeouts and flow-removed ---------------------------------------------------------

def test_idle_and_hard_timeouts_send_flow_removed_with_cache_counts(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    ch.send(flow_mod(M(eth_type=ARP), [out(ofp.OFPP_FLOOD)], priority=50))
    ch.send(flow_mod(M(eth_dst=h2.mac), [out(2)], idle_timeout=2, cookie=0x11,
                     flags=ofp.OFPFF_SEND_FLOW_REM))
    ch.send(flow_mod(M(eth_dst=h1.mac), [out(1)], hard_timeout=3, cookie=0x22,
                     flags=ofp.OFPFF_SEND_FLOW_REM))
    assert ch.barrier() == []
    t0 = time.monotonic()
    assert h1.ping(h2.ip4, count=8, interval=0.2)  # 1.6 s: kept alive by cache hits
    idle = ch.expect(ofp.OFPT_FLOW_REMOVED, 8, lambda m: m.cookie == 0x11)
    assert time.monotonic() - t0 >= 2.5
    assert idle.reason == ofp.OFPRR_IDLE_TIMEOUT and idle.idle_timeout == 2
    assert idle.packet_count >= 8 and idle.byte_count >= 8 * 98
    assert idle.match["eth_dst"] == h2.mac and idle.duration_sec >= 2
    hard = ch.expect(ofp.OFPT_FLOW_REMOVED, 6, lambda m: m.cookie == 0x22)
    assert hard.reason == ofp.OFPRR_HARD_TIMEOUT and hard.packet_count >= 8
    assert [s.priority for s in flow_stats(ch)] == [50]


def test_delete_sends_flow_removed(sw):
    _, _, _, ch = sw
    ch.send(flow_mod(M(in_port=3), [out(1)], cookie=0x33, flags=ofp.OFPFF_SEND_FLOW_REM))
    ch.send(flow_mod(M(in_port=2), [out(1)], cookie=0x44))
    ch.send(parser.OFPFlowMod(DP, cookie=0x33, cookie_mask=0xFF, table_id=ofp.OFPTT_ALL,
                              command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                              out_group=ofp.OFPG_ANY, match=M()))
    fr = ch.expect(ofp.OFPT_FLOW_REMOVED, 3)
    assert fr.cookie == 0x33 and fr.reason == ofp.OFPRR_DELETE
    assert [s.cookie for s in flow_stats(ch)] == [0x44]


# -- packet-in / packet-out -------------------------------------------------------------

def test_packet_in_buffered_and_packet_out(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    ch.send(flow_mod(M(), [out(ofp.OFPP_CONTROLLER, 40)], priority=0, cookie=0x55))
    assert ch.barrier() == []
    pinger = h1.popen("ping", "-c", "1", "-W", "1", h2.ip4)
    pi = ch.expect(ofp.OFPT_PACKET_IN, 5)
    pinger.wait()
    assert pi.reason == ofp.OFPR_NO_MATCH and pi.table_id == 0 and pi.cookie == 0x55
    assert pi.match["in_port"] == 1 and pi.buffer_id != ofp.OFP_NO_BUFFER
    assert len(pi.data) == 40 and pi.total_len == 42  # an ARP request, truncated
    assert pi.data[12:14] == b"\x08\x06"
    tx = port_stats(ch)[2].tx_packets
    assert ch.check(parser.OFPPacketOut(DP, pi.buffer_id, 1, [out(ofp.OFPP_FLOOD)], None)) is None
    deadline = time.monotonic() + 3
    while port_stats(ch)[2].tx_packets == tx and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_stats(ch)[2].tx_packets > tx
    # the buffer was used up
    e = ch.check(parser.OFPPacketOut(DP, pi.buffer_id, 1, [out(2)], None))
    assert (e.type, e.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BUFFER_UNKNOWN)
    # packet-out with data through the tables (OFPP_TABLE): a flow sends it to port 3
    ch.send(flow_mod(M(in_port=1, eth_type=ARP), [out(3)], priority=10))
    tx3 = port_stats(ch)[3].tx_packets
    frame = bytes.fromhex("ffffffffffff") + bytes.fromhex(h1.mac.replace(":", "")) + pi.data[12:] + b"\0" * 2
    assert ch.check(parser.OFPPacketOut(DP, ofp.OFP_NO_BUFFER, 1, [out(ofp.OFPP_TABLE)], frame)) is None
    deadline = time.monotonic() + 3
    while port_stats(ch)[3].tx_packets == tx3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_stats(ch)[3].tx_packets == tx3 + 1
    # packet-out from the controller itself (in_port CONTROLLER)
    tx2 = port_stats(ch)[2].tx_packets
    assert ch.check(parser.OFPPacketOut(DP, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, [out(2)], frame)) is None
    deadline = time.monotonic() + 3
    while port_stats(ch)[2].tx_packets == tx2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_stats(ch)[2].tx_packets == tx2 + 1


def test_port_status_on_link_change(sw):
    hosts, _, _, ch = sw
    h3 = hosts[2]
    h3.run("ip", "link", "set", "eth0", "down")
    try:
        ps = ch.expect(ofp.OFPT_PORT_STATUS, 5, lambda m: m.desc.port_no == 3)
        assert ps.reason == ofp.OFPPR_MODIFY and ps.desc.state & ofp.OFPPS_LINK_DOWN
    finally:
        h3.run("ip", "link", "set", "eth0", "up")
    ps = ch.expect(ofp.OFPT_PORT_STATUS, 5, lambda m: m.desc.port_no == 3)
    assert not ps.desc.state & ofp.OFPPS_LINK_DOWN and ps.desc.state & ofp.OFPPS_LIVE


def test_packet_in_action_carries_rewritten_packet(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    ch.send(flow_mod(M(in_port=1, eth_type=ARP), [parser.OFPActionSetField(eth_dst="02:aa:bb:cc:dd:ee"),
                                                  out(ofp.OFPP_CONTROLLER)], cookie=0x66))
    assert ch.barrier() == []
    h1.run("ping", "-c", "1", "-W", "1", h2.ip4, check=False)
    pi = ch.expect(ofp.OFPT_PACKET_IN, 5)
    assert pi.reason == ofp.OFPR_ACTION and pi.buffer_id == ofp.OFP_NO_BUFFER
    assert pi.data[:6] == bytes.fromhex("02aabbccddee") and len(pi.data) == pi.total_len


# -- groups ---------------------------------------------------------------------------

def bucket(actions, weight=0, watch_port=ofp.OFPP_ANY):
    return parser.OFPBucket(weight, watch_port, ofp.OFPG_ANY, actions)


def test_group_all_and_select_stickiness(sw):
    hosts, _, _, ch = sw
    h1, h2, h3 = hosts
    ch.send(flow_mod(M(eth_type=ARP), [out(ofp.OFPP_FLOOD)], priority=50))
    ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_ADD, ofp.OFPGT_ALL, 1, [bucket([out(2)]), bucket([out(3)])]))
    ch.send(flow_mod(M(in_port=1, eth_dst=h2.mac), [parser.OFPActionGroup(1)]))
    ch.send(flow_mod(M(in_port=2, eth_dst=h1.mac), [out(1)]))
    assert ch.barrier() == []
    tx3 = port_stats(ch)[3].tx_packets
    assert h1.ping(h2.ip4, count=5, interval=0.05)
    assert port_stats(ch)[3].tx_packets - tx3 >= 5  # the copies
    (desc,) = ch.stats(parser.OFPGroupDescStatsRequest(DP, 0))
    assert desc.group_id == 1 and desc.type == ofp.OFPGT_ALL and len(desc.buckets) == 2
    (gs,) = ch.stats(parser.OFPGroupStatsRequest(DP, 0, ofp.OFPG_ALL))
    assert gs.group_id == 1 and gs.ref_count == 1 and gs.packet_count >= 1

    # select: a VIP balanced over h2 and h3; one ping session sticks to one backend
    vip = "10.78.0.200"
    h1.run("ip", "neigh", "replace", vip, "lladdr", "02:00:00:00:02:00", "dev", "eth0")
    ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_ADD, ofp.OFPGT_SELECT, 2, [
        bucket([parser.OFPActionSetField(eth_dst=h.mac), parser.OFPActionSetField(ipv4_dst=h.ip4),
                out(i + 2)], weight=1) for i, h in enumerate((h2, h3))]))
    ch.send(flow_mod(M(in_port=1, eth_type=IP, ipv4_dst=vip), [parser.OFPActionGroup(2)], priority=200))
    for i, h in enumerate((h2, h3)):
        ch.send(flow_mod(M(in_port=i + 2, eth_type=IP, ipv4_src=h.ip4),
                         [parser.OFPActionSetField(ipv4_src=vip), out(1)], priority=200, cookie=i + 2))
    assert ch.barrier() == []
    assert h1.ping(vip, count=6, interval=0.05)
    back = {s.cookie: s.packet_count for s in flow_stats(ch) if s.priority == 200 and s.cookie}
    assert sorted(back.values()) == [0, 6], back
    e = ch.check(parser.OFPGroupMod(DP, ofp.OFPGC_ADD, ofp.OFPGT_ALL, 2, []))
    assert (e.type, e.code) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_GROUP_EXISTS)
    # deleting a group removes the flows that use it
    ch.send(parser.OFPGroupMod(DP, ofp.OFPGC_DELETE, ofp.OFPGT_ALL, 2, []))
    assert ch.barrier() == []
    assert not [s for s in flow_stats(ch) if s.priority == 200 and not s.cookie]


# -- errors ---------------------------------------------------------------------------

def test_unsupported_things_are_refused_with_spec_errors(sw):
    hosts, _, proc, ch = sw
    cases = [
        (flow_mod(M(in_port=1), [parser.OFPActionSetQueue(1)]), ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE),
        (flow_mod(M(eth_type=0x8847, mpls_label=5), [out(2)]), ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD),
        (flow_mod(M(ipv4_dst="1.2.3.4"), [out(2)]), ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ),
        (flow_mod(M(), instructions=[parser.OFPInstructionMeter(1)]),
         ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST),
        (flow_mod(M(), [out(2)], table_id=9), ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID),
        (flow_mod(M(), [out(9)]), ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT),
        (flow_mod(M(), [out(ofp.OFPP_LOCAL)]), ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT),
        (flow_mod(M(), [parser.OFPActionGroup(77)]), ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP),
        (parser.OFPMeterMod(DP, ofp.OFPMC_ADD, ofp.OFPMF_KBPS, 1, [parser.OFPMeterBandDrop(10, 10)]),
         ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE),
        (parser.OFPMeterConfigStatsRequest(DP, 0, ofp.OFPM_ALL), ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART),
        (parser.OFPExperimenter(DP, 0x2320, 1, b""), ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER),
        (parser.OFPSetConfig(DP, ofp.OFPC_FRAG_DROP, 128), ofp.OFPET_SWITCH_CONFIG_FAILED,
         ofp.OFPSCFC_BAD_FLAGS),
        (parser.OFPPortMod(DP, 9, "00:00:00:00:00:00", 0, 0, 0), ofp.OFPET_PORT_MOD_FAILED,
         ofp.OFPPMFC_BAD_PORT),
        (parser.OFPPortStatsRequest(DP, 0, 9), ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_PORT),
    ]
    for msg, type_, code in cases:
        e = ch.check(msg)
        assert e is not None and (e.type, e.code) == (type_, code), (msg, e)
    ch.send(flow_mod(M(in_port=1), [out(2)], priority=7))
    e = ch.check(flow_mod(M(in_port=1, eth_type=IP), [out(3)], priority=7, flags=ofp.OFPFF_CHECK_OVERLAP))
    assert (e.type, e.code) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP)
    assert [s.priority for s in flow_stats(ch)] == [7]  # nothing refused was installed
    # an OpenFlow 1.0-only hello is refused with HELLO_FAILED
    import socket
    s = socket.create_connection(("127.0.0.1", proc.listen_port), timeout=5)
    s.sendall(struct.pack("!BBHI", 1, 0, 8, 7))
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) >= 8 + 12:
            break
    s.close()
    # our hello first, then the error
    assert data[1] == ofp.OFPT_HELLO
    hello_len = struct.unpack_from("!H", data, 2)[0]
    etype, ecode = struct.unpack_from("!HH", data, hello_len + 8)
    assert data[hello_len + 1] == ofp.OFPT_ERROR and (etype, ecode) == (ofp.OFPET_HELLO_FAILED,
                                                                        ofp.OFPHFC_INCOMPATIBLE)


def test_experimenter_set_buckets_and_cache_stats(sw):
    hosts, _, _, ch = sw
    l2_flows(ch, hosts)
    assert hosts[0].ping(hosts[1].ip4, count=3, interval=0.05)
    r = ch.request(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_CACHE_STATS_REQUEST, b""))[0]
    assert r.exp_type == kpexp.KP_CACHE_STATS_REPLY
    st = kpexp.decode_cache_stats(r.data)
    assert st["hits"] >= 1 and st["misses"] >= 1 and st["inserts"] >= 1 and st["buckets"] == 1024
    # The megaflow counters come after the original ten (old readers stop at ten): the
    # L2 flows match eth_dst only: every ICMP packet that was not an exact hit went in
    # with a megaflow (in_port, eth_dst and eth_type: the ARP flow was probed first).
    assert len(r.data) == 8 * len(kpexp.CACHE_STATS_FIELDS) == 120
    assert st["mf_inserts"] >= 1 and st["mf_entries"] >= 1 and st["mf_subtables"] >= 1
    old = kpexp.decode_cache_stats(r.data[:80])
    assert old == {k: st[k] for k in kpexp.CACHE_STATS_FIELDS[:10]}
    from kp_app import ofmsg
    assert ofmsg.decode_cache_stats(r.data) == st
    assert ofmsg.decode_cache_stats(r.data[:80]) == old
    assert ch.check(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_SET_BUCKETS,
                                           kpexp.encode_set_buckets(4096))) is None
    r = ch.request(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_CACHE_STATS_REQUEST, b""))[0]
    assert kpexp.decode_cache_stats(r.data)["buckets"] == 4096
    for data in (kpexp.encode_set_buckets(1000), b"\0\0"):
        e = ch.check(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_SET_BUCKETS, data))
        assert (e.type, e.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN)
    e = ch.check(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, 99, b""))
    assert (e.type, e.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXP_TYPE)
    ch.check(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_SET_BUCKETS,
                                    kpexp.encode_set_buckets(1024)))


# -- management connections -----------------------------------------------------------

def ofctl(proc, *args):
    return sh("ovs-ofctl", "-O", "OpenFlow13", *args[:1], "tcp:127.0.0.1:%d" % proc.listen_port, *args[1:],
              check=False)


def test_ovs_ofctl_add_flow_and_dump_flows(sw):
    hosts, _, proc, ch = sw
    r = ofctl(proc, "add-flow", "priority=33,in_port=1,dl_type=0x0800,nw_dst=10.78.0.0/16,"
                                "actions=set_field:02:00:00:00:00:09->eth_dst,output:2")
    assert r.returncode == 0, r.stderr
    r = ofctl(proc, "add-flow", "table=1,priority=1,actions=drop")
    assert r.returncode == 0, r.stderr
    r = ofctl(proc, "dump-flows")
    assert r.returncode == 0, r.stderr
    assert "priority=33,ip,in_port=1,nw_dst=10.78.0.0/16" in r.stdout, r.stdout
    assert "set_field:02:00:00:00:00:09->eth_dst,output:2" in r.stdout, r.stdout
    assert "table=1" in r.stdout
    # the controller sees what the management connection added
    assert sorted(s.priority for s in flow_stats(ch)) == [1, 33]
    r = ofctl(proc, "del-flows", "table=1")
    assert r.returncode == 0, r.stderr
    assert [s.priority for s in flow_stats(ch)] == [33]
    for cmd in ("dump-ports", "dump-tables", "dump-groups", "dump-ports-desc", "show"):
        r = ofctl(proc, cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    r = ofctl(proc, "add-flow", "priority=1,actions=meter:1,output:2")
    assert r.returncode != 0


def test_management_connection_does_not_steal_packet_ins(sw):
    hosts, _, proc, ch = sw
    mgmt = connect(proc.listen_port)
    try:
        ch.send(flow_mod(M(), [out(ofp.OFPP_CONTROLLER)], priority=0))
        assert ch.barrier() == []
        hosts[0].run("ping", "-c", "1", "-W", "1", hosts[1].ip4, check=False)
        ch.expect(ofp.OFPT_PACKET_IN, 5)
        assert mgmt.drain(ofp.OFPT_PACKET_IN) == []
        assert mgmt.request(parser.OFPBarrierRequest(DP))[0] is not None
    finally:
        mgmt.close()


# -- fail-secure and reconnect (last: it replaces the controller channel) ---------------

def test_fail_secure_then_reconnect(sw):
    hosts, ctl, proc, ch = sw
    l2_flows(ch, hosts)
    assert hosts[0].ping(hosts[1].ip4, count=2, interval=0.05)
    ch.close()
    time.sleep(0.3)
    # no controller: the flows stay and keep forwarding
    assert hosts[0].ping(hosts[2].ip4, count=3, interval=0.05)
    ch2 = ctl.accept(timeout=15)
    sw[3] = ch2  # the module's channel from now on
    assert len(flow_stats(ch2)) == 4
    assert proc.proc.poll() is None


# -- the cache never answers differently from the tables ---------------------------------

def test_flow_changes_take_effect_on_cached_traffic(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    l2_flows(ch, hosts)
    assert h1.ping(h2.ip4, count=3, interval=0.05)  # now cached both ways
    # a higher-priority drop shadows the cached forwarding at once
    ch.send(flow_mod(M(eth_dst=h2.mac), [], priority=200))
    assert ch.barrier() == []
    assert not h1.ping(h2.ip4, count=1, wait=1)
    ch.send(parser.OFPFlowMod(DP, table_id=0, priority=200, command=ofp.OFPFC_DELETE_STRICT,
                              out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=M(eth_dst=h2.mac)))
    assert ch.barrier() == []
    assert h1.ping(h2.ip4, count=2, interval=0.05)
    # modifying the cached flow's actions redirects it
    ch.send(flow_mod(M(eth_dst=h2.mac), [out(3)], priority=10, command=ofp.OFPFC_MODIFY_STRICT))
    assert ch.barrier() == []
    assert not h1.ping(h2.ip4, count=1, wait=1)
    ch.send(flow_mod(M(eth_dst=h2.mac), [out(2)], priority=10, command=ofp.OFPFC_MODIFY_STRICT))
    assert ch.barrier() == []
    assert h1.ping(h2.ip4, count=2, interval=0.05)


def test_flow_mod_with_buffer_id_forwards_the_buffered_packet(sw):
    hosts, _, _, ch = sw
    h1, h2, _ = hosts
    ch.send(flow_mod(M(), [out(ofp.OFPP_CONTROLLER, 128)], priority=0))
    assert ch.barrier() == []
    pinger = h1.popen("ping", "-c", "1", "-W", "2", h2.ip4)
    pi = ch.expect(ofp.OFPT_PACKET_IN, 5)  # h1's ARP request
    assert pi.buffer_id != ofp.OFP_NO_BUFFER
    tx2 = port_stats(ch)[2].tx_packets
    ch.send(flow_mod(M(in_port=1, eth_type=ARP), [out(2)], priority=10, buffer_id=pi.buffer_id))
    assert ch.barrier() == []
    deadline = time.monotonic() + 3
    while port_stats(ch)[2].tx_packets == tx2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_stats(ch)[2].tx_packets > tx2
    pinger.kill()
    pinger.wait()


def test_roles_slave_is_read_only(sw):
    hosts, _, proc, ch = sw
    mgmt = connect(proc.listen_port)
    try:
        r = mgmt.request(parser.OFPRoleRequest(DP, ofp.OFPCR_ROLE_SLAVE, 10))[0]
        assert r.role == ofp.OFPCR_ROLE_SLAVE and r.generation_id == 10
        e = mgmt.check(flow_mod(M(in_port=1), [out(2)]))
        assert (e.type, e.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
        r = mgmt.request(parser.OFPRoleRequest(DP, ofp.OFPCR_ROLE_MASTER, 9))[0]
        assert (r.type, r.code) == (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)
        r = ch.request(parser.OFPRoleRequest(DP, ofp.OFPCR_ROLE_MASTER, 11))[0]
        assert r.role == ofp.OFPCR_ROLE_MASTER
        assert ch.check(flow_mod(M(in_port=1), [out(2)])) is None
        r = ch.request(parser.OFPRoleRequest(DP, ofp.OFPCR_ROLE_EQUAL, 0))[0]
        assert r.role == ofp.OFPCR_ROLE_EQUAL
    finally:
        mgmt.close()


UDP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(3); print("ready", flush=True)
seen = set()
try:
    while len(seen) < int(sys.argv[2]):
        _, peer = s.recvfrom(2048)
        seen.add(peer[1])
except socket.timeout:
    pass
print(len(seen), flush=True)
"""
UDP_SOURCES = r"""
import socket, sys, time
for i in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", int(sys.argv[4]) + i))
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    s.close()
    time.sleep(0.005)
"""


def cache_stats(ch):
    r = ch.request(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID,
                                          kpexp.KP_CACHE_STATS_REQUEST, b""))[0]
    return kpexp.decode_cache_stats(r.data)


def test_new_sessions_through_a_wildcard_flow_are_megaflow_hits(sw):
    """The L2 flows look at eth_dst (and ARP's eth_type) only: after the first datagram
    of one UDP session is classified in Python, the next sessions' first datagrams are
    answered by its megaflow in the C fast path, not the slow path."""
    hosts, _, _, ch = sw
    l2_flows(ch, hosts)
    assert hosts[0].ping(hosts[1].ip4, count=1)          # ARP learnt both ways
    sink = hosts[1].popen(sys.executable, "-c", UDP_SINK, "7100", "40")
    try:
        assert sink.stdout.readline().strip() == "ready"
        s0 = cache_stats(ch)
        hosts[0].run(sys.executable, "-c", UDP_SOURCES, hosts[1].ip4, "7100", "40", "31000")
        got = int(sink.stdout.readline())
    finally:
        sink.kill()
        sink.wait()
    s1 = cache_stats(ch)
    d = {k: s1[k] - s0[k] for k in ("hits", "mf_hits", "misses")}
    assert got == 40
    assert d["mf_hits"] >= 38 and d["misses"] <= 2, d
