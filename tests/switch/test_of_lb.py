"""kp-switch's in-switch load balancer (kp_proto.lb, csrc/lb.h), driven over a real
OpenFlow connection with real traffic between network namespaces: VIPs programmed with
kp's experimenter messages, sessions made by the switch with no controller on the path,
the pod the switch picks equal to kp's model, table full, flush, and bad messages
refused without a change.
"""
import ipaddress
import os
import struct
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID
from kp_proto.session_hash import session_hash, table_index
from of_harness import (DP, Hosts, SwitchProcess, TestController, close_rig, delete_all, flow_mod,
                        out, steer_thread, switch_args)

pytestmark = pytest.mark.kpswitch
# The suite runs on one datapath thread and on two (kp-switch --threads; or on what
# KP_TEST_SWITCH_ARGS="--threads N" asks for).  Each thread has its own session table
# of the configured buckets, so the tests that fill one table send from client ports
# one thread receives (steer_thread).
SWITCH_ARGS, THREADS = switch_args()
THREAD_COUNTS = [THREADS] if "--threads" in SWITCH_ARGS else [1, 2]


def thread0_ports(first, n, threads):
    """n client ports from `first` on that datapath thread 0 receives (all with one)."""
    return [p for p in range(first, first + 64 * n) if steer_thread(p, PORT, threads) == 0][:n]
M = parser.OFPMatch
IP = 0x0800
VIP, VIP_MAC, VIP_ID, PORT, TPORT = "10.79.0.100", "02:00:00:00:01:00", 7, 53, 5353
# A UDP echo server that answers with its own name, and a client that sends one
# datagram from a given source port and prints what came back and from where.
ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(sys.argv[2].encode() + b" " + d, a)
"""
ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.bind((sys.argv[4] if len(sys.argv) > 4 else "0.0.0.0", int(sys.argv[3])))
s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
try:
    d, a = s.recvfrom(2048)
    print(d.decode(), "%s:%d" % a)
except socket.timeout:
    print("TIMEOUT")
"""


def exp(exp_type, data):
    return parser.OFPExperimenter(DP, KP_EXPERIMENTER_ID, exp_type, data)


def kp_lb(vip_id):
    return parser.OFPActionExperimenterUnknown(KP_EXPERIMENTER_ID, data=kplb.encode_lb_action(vip_id))


def program_vip(ch, vip_id, pods, table, basis=0):
    for exp_type, data in kplb.encode_vip(vip_id, 4, table, pods, basis):
        ch.send(exp(exp_type, data))
    assert ch.barrier() == []


def lb_stats(ch):
    r = ch.request(exp(kplb.KP_LB_STATS_REQUEST, kplb.encode_stats_request(0)))[0]
    assert r.exp_type == kplb.KP_LB_STATS_REPLY
    totals, vips, _ = kplb.decode_stats_reply(r.data)
    return totals, {v["vip_id"]: v for v in vips}


@pytest.fixture(scope="module", params=THREAD_COUNTS, ids=lambda n: "threads%d" % n)
def rig(request):
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    hosts = Hosts(4, net=79)     # a client, two pods, another client
    ctl = sw = ch = None
    servers = []
    try:
        ctl = TestController()
        sw = SwitchProcess([h.port_if for h in hosts], controller=ctl.target, dpid=0x2B,
                           extra=["--threads", str(request.param)])   # + the env's others
        sw.threads = request.param
        ch = ctl.accept()
        for i, h in enumerate(hosts[1:3]):
            p = h.popen("/usr/bin/python3", "-c", ECHO, str(TPORT), "pod%d" % (i + 1))
            assert p.stdout.readline().strip() == "ready"
            servers.append(p)
        yield hosts, ch, sw
    finally:
        for p in servers:
            p.kill()
            p.wait()
        close_rig(ch, sw, ctl, hosts)


@pytest.fixture
def lb(rig):
    """The VIP's flow (kp_lb), routes to each host by address, and VIP_ID's two pods."""
    hosts, ch, sw = rig
    ch.send(delete_all())
    ch.send(exp(kplb.KP_LB_CONF, kplb.encode_conf(1024)))
    ch.send(exp(kplb.KP_LB_FLUSH, kplb.encode_flush(kplb.ALL_VIPS)))
    ch.send(flow_mod(M(eth_type=IP, ip_proto=17, ipv4_dst=VIP, udp_dst=PORT), [kp_lb(VIP_ID)],
                     priority=500))
    ch.send(flow_mod(M(eth_type=0x0806), [out(ofp.OFPP_FLOOD)], priority=50))
    for i, h in enumerate(hosts):
        ch.send(flow_mod(M(eth_type=IP, ipv4_dst=h.ip4), [parser.OFPActionSetField(eth_dst=h.mac),
                                                          out(i + 1)], priority=100))
    assert ch.barrier() == []
    for client in (hosts[0], hosts[3]):
        client.run("ip", "neigh", "replace", VIP, "lladdr", VIP_MAC, "dev", "eth0")
    pods = [(hosts[1].ip4, TPORT), (hosts[2].ip4, TPORT)]
    table = [0, 1, 1, 0, 1, 0, 0]
    program_vip(ch, VIP_ID, pods, table)
    return hosts, ch, sw, pods, table


def ask(host, sport, dst=VIP, port=PORT, src=None):
    return host.run("/usr/bin/python3", "-c", ASK, dst, str(port), str(sport),
                    *([src] if src else []), timeout=10).stdout.strip()


def expected_pod(client, sport, table):
    return table[table_index(session_hash(17, ipaddress.ip_address(client), sport,
                                          ipaddress.ip_address(VIP), PORT, 0), len(table))]


def test_switch_makes_sessions_on_the_pod_kps_model_picks(lb):
    hosts, ch, sw, pods, table = lb
    picked = set()
    for sport in range(40000, 40012):
        want = expected_pod(hosts[0].ip4, sport, table)
        picked.add(want)
        got = ask(hosts[0], sport)
        # the pod the hash picks answers, and the reply comes from the VIP and its port
        assert got == "pod%d hi %s:%d" % (want + 1, VIP, PORT), (sport, got, sw.log()[-1500:])
        assert ask(hosts[0], sport).startswith("pod%d " % (want + 1))   # the session's pod
    assert picked == {0, 1}
    # with two threads, both made sessions (their client ports steer to each), and the
    # counters and the session list below are both threads' together
    assert {steer_thread(p, PORT, sw.threads) for p in range(40000, 40012)} == \
        set(range(sw.threads))
    totals, vips = lb_stats(ch)
    assert totals["created"] >= 12 and totals["sessions"] >= 12 and totals["dropped"] == 0
    assert vips[VIP_ID]["sessions"] == sum(vips[VIP_ID]["pods"]) >= 12
    r = ch.request(exp(kplb.KP_LB_SESSIONS_REQUEST, kplb.encode_sessions_request(100)))[0]
    assert getattr(r, "exp_type", None) == kplb.KP_LB_SESSIONS_REPLY, (r, sw.log()[-2000:])
    listed = {s["client"]: s for s in kplb.decode_sessions_reply(r.data)}
    assert {(hosts[0].ip4, p) for p in range(40000, 40012)} <= set(listed)
    s = listed[(hosts[0].ip4, 40000)]
    want = expected_pod(hosts[0].ip4, 40000, table)
    assert (s["vip"], s["pod"], s["vip_id"], s["state"]) == ((VIP, PORT), pods[want], VIP_ID, "udp")
    # the controller saw none of it
    assert ch.drain(ofp.OFPT_PACKET_IN) == []
    # the VIP's flow reads back with its kp_lb action (a restarted controller compares)
    stats = ch.stats(parser.OFPFlowStatsRequest(DP, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0,
                                                M(eth_type=IP, ip_proto=17, ipv4_dst=VIP,
                                                  udp_dst=PORT)))
    (action,) = [a for s in stats for i in s.instructions for a in i.actions]
    assert action.experimenter == KP_EXPERIMENTER_ID
    assert kplb.decode_lb_action(action.data) == VIP_ID
    assert stats[0].packet_count >= 12


def test_a_session_keeps_its_pod_when_the_table_changes_and_flush_ends_it(lb):
    hosts, ch, sw, pods, table = lb
    sport = 41000
    first = expected_pod(hosts[0].ip4, sport, table)
    assert ask(hosts[0], sport).startswith("pod%d " % (first + 1))
    program_vip(ch, VIP_ID, pods, [1 - first] * 7)        # every new session elsewhere
    assert ask(hosts[0], sport).startswith("pod%d " % (first + 1))   # kept
    assert ask(hosts[0], sport + 1).startswith("pod%d " % (2 - first))
    ch.send(exp(kplb.KP_LB_FLUSH, kplb.encode_flush(VIP_ID, (pods[first][0], 0))))
    assert ch.barrier() == []
    assert ask(hosts[0], sport).startswith("pod%d " % (2 - first))   # a new session


def test_one_client_holds_its_share_of_the_table_and_others_still_get_sessions(lb):
    hosts, ch, sw, pods, table = lb
    flooder, other = hosts[0], hosts[3]
    # 64 entries: 32 sessions, 8 a client.  (Fewer buckets make a key's two candidate
    # buckets the same full one now and then: a session refused for the table's shape,
    # not for the share this test is about.)
    ch.send(exp(kplb.KP_LB_CONF, kplb.encode_conf(16)))
    assert ch.barrier() == []
    share = 16 * kplb.SESSION_WAYS // 2 // kplb.SOURCE_SHARE   # 8
    before, _ = lb_stats(ch)
    tracked = []
    for sport in thread0_ports(42000, share + 2, sw.threads):
        want = expected_pod(flooder.ip4, sport, table)
        got = ask(flooder, sport)
        # untracked: the pod gets it, its reply is not the switch's to translate
        assert got in ("pod%d hi %s:%d" % (want + 1, VIP, PORT),
                       "pod%d hi %s:%d" % (want + 1, pods[want][0], TPORT)), got
        tracked.append(got.endswith("%s:%d" % (VIP, PORT)))
    # Its share, and no more: the last ones go untracked.  (A session the table's shape
    # refuses, both of its key's buckets full, is not counted: a later one takes its
    # place in the share, so the count holds even then.)
    assert sum(tracked) == share and not tracked[-1], tracked
    # The flooder's excess took nothing from the others: a new client gets its sessions.
    # (One may still meet the table's shape, both of its key's buckets full, as any
    # session may: the client then tries another port, as a real one's next connection.)
    other_tracked = other_untracked = 0
    for sport in thread0_ports(42100, 6, sw.threads):
        want = expected_pod(other.ip4, sport, table)
        got = ask(other, sport)
        assert got in ("pod%d hi %s:%d" % (want + 1, VIP, PORT),
                       "pod%d hi %s:%d" % (want + 1, pods[want][0], TPORT)), got
        if got.endswith("%s:%d" % (VIP, PORT)):
            other_tracked += 1
        else:
            other_untracked += 1
        if other_tracked == 2:
            break
    assert other_tracked == 2 and other_untracked <= 1
    totals, vips = lb_stats(ch)
    assert totals["capacity"] == 32 * sw.threads and totals["sessions"] == share + 2
    assert totals["untracked"] - before["untracked"] == 2 + other_untracked


def test_a_full_table_still_reaches_the_tables_pod_untracked(lb):
    hosts, ch, sw, pods, table = lb
    client, second = hosts[0], hosts[3]
    second.run("ip", "addr", "add", "10.79.0.14/24", "dev", "eth0", check=False)
    ch.send(flow_mod(M(eth_type=IP, ipv4_dst="10.79.0.14"),
                     [parser.OFPActionSetField(eth_dst=second.mac), out(4)], priority=100))
    ch.send(exp(kplb.KP_LB_CONF, kplb.encode_conf(1)))     # 4 entries: 2 sessions
    assert ch.barrier() == []
    p0, p1, p2 = thread0_ports(43000, 3, sw.threads)      # one thread's table
    tracked = [(client, client.ip4, p0), (second, second.ip4, p1)]
    for host, src, sport in tracked:          # one each (a client's share is 1 here)
        want = expected_pod(src, sport, table)
        assert ask(host, sport, src=src) == "pod%d hi %s:%d" % (want + 1, VIP, PORT)
    want = expected_pod("10.79.0.14", p2, table)      # a third client: the table is full
    got = ask(second, p2, src="10.79.0.14")
    assert got == "pod%d hi %s:%d" % (want + 1, pods[want][0], TPORT), got
    totals, vips = lb_stats(ch)
    assert totals["capacity"] == 2 * sw.threads and totals["sessions"] == 2
    r = ch.request(exp(kplb.KP_LB_SESSIONS_REQUEST, kplb.encode_sessions_request(10)))[0]
    assert {s["client"] for s in kplb.decode_sessions_reply(r.data)} == \
        {(src, sport) for _, src, sport in tracked}


def test_bad_messages_and_flows_are_refused_and_change_nothing(lb):
    hosts, ch, sw, pods, table = lb
    bad = [
        exp(kplb.KP_LB_VIP, kplb.VIP.pack(VIP_ID, 4, 0, 0, 7, 0, 2)),   # nothing staged
        exp(kplb.KP_LB_CONF, kplb.CONF.pack(3, 1, 1, 1, 1, bytes(16), bytes(16))),  # not 2^n
        exp(kplb.KP_LB_CONF, kplb.CONF.pack(8, 1, 1, 1, 1, b"\n\0\0\1\1" + bytes(11),
                                            bytes(16))),                 # a 5-byte IPv4
        exp(kplb.KP_LB_TABLE, struct.pack("!II", VIP_ID, 5) + b"\0\0"),  # a gap
        exp(kplb.KP_LB_VIP_DELETE, b"\0"),                               # short
    ]
    for msg in bad:
        err = ch.request(msg)
        assert err and err[0].type == ofp.OFPET_BAD_REQUEST, (msg, err)
    # a table naming a pod the VIP does not have
    msgs = kplb.encode_vip(VIP_ID, 4, [0, 2], pods, 0)
    for exp_type, data in msgs[:-1]:
        ch.send(exp(exp_type, data))
    err = ch.request(exp(*msgs[-1]))
    assert err and err[0].type == ofp.OFPET_BAD_REQUEST
    # kp_lb must end the flow
    err = ch.request(flow_mod(M(eth_type=IP, ip_proto=17, ipv4_dst="10.79.0.101", udp_dst=1),
                              [kp_lb(VIP_ID), out(1)], priority=500))
    assert err and err[0].type == ofp.OFPET_BAD_ACTION
    err = ch.request(flow_mod(M(), [parser.OFPActionExperimenterUnknown(KP_EXPERIMENTER_ID,
                                                                        data=b"\0\2\0\0\0\0\0\7")]))
    assert err and err[0].type == ofp.OFPET_BAD_ACTION
    # the VIP is as it was
    sport = 43000
    want = expected_pod(hosts[0].ip4, sport, table)
    assert ask(hosts[0], sport).startswith("pod%d " % (want + 1))
    time.sleep(0)


# A UDP server that answers with the address and port its request came from.
PEER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(("peer %s:%d" % a).encode(), a)
"""


def test_a_pod_reaching_itself_through_its_vip_gets_the_request_from_the_hairpin_source(lb):
    """Hairpin, all in the switch: the pod's request comes back to it (out of the port
    it came in by) from the node address KP_LB_CONF gave, else from the VIP; the reply
    goes back the same way, from the VIP."""
    hosts, ch, sw, pods, table = lb
    pod = hosts[1]
    server = pod.popen("/usr/bin/python3", "-c", PEER, "5454")
    try:
        assert server.stdout.readline().strip() == "ready"
        ch.send(flow_mod(M(eth_type=IP, ip_proto=17, ipv4_dst=VIP, udp_dst=54),
                         [kp_lb(VIP_ID + 1)], priority=500))
        program_vip(ch, VIP_ID + 1, [(pod.ip4, 5454)], [0])
        node = "10.79.0.1"      # the node's address: the pod's replies to it meet the switch
        pod.run("ip", "neigh", "replace", VIP, "lladdr", VIP_MAC, "dev", "eth0")
        pod.run("ip", "neigh", "replace", node, "lladdr", VIP_MAC, "dev", "eth0")
        ch.send(exp(kplb.KP_LB_CONF, kplb.encode_conf(1024, hairpin4=node)))
        assert ch.barrier() == []
        for sport in (44000, 44001):
            assert ask(pod, sport, port=54) == "peer %s:%d %s:%d" % (node, sport, VIP, 54), \
                sw.log()[-1500:]
        ch.send(exp(kplb.KP_LB_CONF, kplb.encode_conf(1024)))       # no node address
        ch.send(exp(kplb.KP_LB_FLUSH, kplb.encode_flush(kplb.ALL_VIPS)))
        assert ch.barrier() == []
        assert ask(pod, 44002, port=54) == "peer %s:%d %s:%d" % (VIP, 44002, VIP, 54)
        _, vips = lb_stats(ch)
        assert vips[VIP_ID + 1]["sessions"] >= 3
        assert ch.drain(ofp.OFPT_PACKET_IN) == []
    finally:
        server.kill()
        server.wait()


TCP_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16); print("ready", flush=True)
while True:
    c, a = s.accept(); c.settimeout(3)
    try:        # the client closes first: no TIME_WAIT here for its next connection
        c.sendall(sys.argv[2].encode() + b" " + c.recv(100))
        c.recv(100)
    except OSError:
        pass
    finally:
        c.close()
"""
TCP_ASK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(3)
s.bind(("0.0.0.0", int(sys.argv[3])))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b"hi")
    print(s.recv(100).decode(), "%s:%d" % s.getpeername())
except OSError as e:
    print("FAILED", type(e).__name__, e)
s.close()
"""


def test_a_client_port_a_closed_session_used_reaches_the_pod_directly(lb):
    """A client whose TCP connection through the VIP closed reaches the pod itself from
    the same port (a load generator reusing ports, kube-proxy's clients do as they
    please): the pod's SYN-ACK meets the closed session's reply side and must reach the
    client untranslated, from the pod, as conntrack ends a closed entry on a new SYN."""
    hosts, ch, sw, pods, table = lb
    servers = []
    try:
        for i, h in enumerate(hosts[1:3]):
            p = h.popen("/usr/bin/python3", "-c", TCP_SERVER, str(TPORT), "pod%d" % (i + 1))
            assert p.stdout.readline().strip() == "ready"
            servers.append(p)
        ch.send(flow_mod(M(eth_type=IP, ip_proto=6, ipv4_dst=VIP, tcp_dst=PORT),
                         [kp_lb(VIP_ID)], priority=500))
        assert ch.barrier() == []
        client = hosts[0]
        for sport in (45000, 45001, 45002):
            via_vip = client.run("/usr/bin/python3", "-c", TCP_ASK, VIP, str(PORT),
                                 str(sport), timeout=10).stdout.strip()
            assert via_vip.startswith("pod") and via_vip.endswith("%s:%d" % (VIP, PORT)), \
                (via_vip, sw.log()[-1500:])
            name = via_vip.split()[0]
            pod = hosts[int(name[3:])]
            time.sleep(0.2)         # both FINs through: the session is closing
            direct = client.run("/usr/bin/python3", "-c", TCP_ASK, pod.ip4, str(TPORT),
                                str(sport), timeout=10).stdout.strip()
            assert direct == "%s hi %s:%d" % (name, pod.ip4, TPORT), (direct, sw.log()[-1500:])
    finally:
        for p in servers:
            p.kill()
            p.wait()
