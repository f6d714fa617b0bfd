#!/usr/bin/env python3
"""Where kp-switch's Python agent spends its time, in process (no root, no namespaces).

Two workloads, each against the real `Agent` with a fake datapath (misses come from a
queue, executes and cache commands are counted) and a fake controller on the other end
of a socketpair (its replies are encoded with Ryu before the clock starts, so the
measured time is the agent's):

  sessions   kp_app's new-session exchange: N distinct UDP flows to a VIP miss the
             cache; the agent runs the pipeline and sends a packet-in per flow; the
             controller answers each with kp_app's 2 session flow-mods (exact 5-tuple,
             priority 900, set-fields, idle timeout, SEND_FLOW_REM) and a packet-out.
             Measured: flows from first miss to last packet-out executed, per second.
  add-flows  what `ovs-ofctl add-flows` does with bench/run.py's 10,000 session flows:
             N flow-mods back to back, then a barrier; seconds until the barrier reply.

    .venv/bin/python bench/agent_profile.py                       # both, 10,000 each
    .venv/bin/python bench/agent_profile.py --profile sessions    # + cProfile top 30
    .venv/bin/python bench/agent_profile.py --only add-flows -n 20000
    .venv/bin/python bench/agent_profile.py --only sessions --reply-in-port

Numbers are for comparing two versions of the agent on one machine, not OVS.
"""
import argparse
import collections
import cProfile
import ipaddress
import multiprocessing
import os
import pstats
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "switch"), REPO]

from ryu.ofproto import ofproto_v1_3 as ofp              # noqa: E402
from ryu.ofproto import ofproto_v1_3_parser as parser     # noqa: E402

from kp_switch import fastpath_ref                        # noqa: E402
from kp_switch.agent import Agent                         # noqa: E402

VIP, VIP_PORT, POD_IP, POD_PORT = "10.96.0.10", 80, "10.0.0.101", 8080
CLIENT_IP, CLIENT_MAC = "10.0.0.11", "02:00:00:00:00:11"
GW_MAC, POD_MAC = "02:6b:70:00:00:01", "02:00:00:00:01:01"
CLIENT_PORT, POD_OF_PORT = 1, 2
SPORT0 = 20000
COOKIE_VIP = (0x6B << 56) | (1 << 40) | 2


class FakeDatapath:
    """The fast path's interface, enough for the agent: misses from a queue (bounded like
    the C one: drops beyond `queue_len`), everything else counted."""

    def __init__(self, queue_len=1024):
        self.misses = collections.deque()
        self.cv = threading.Condition()
        self.queue_len = queue_len
        self.drops = 0
        self.executed = 0
        self.inserts = 0
        self.invalidations = 0
        self.last_execute = 0.0

    def push(self, items):
        with self.cv:
            for m in items:
                if len(self.misses) >= self.queue_len:
                    self.drops += 1
                else:
                    self.misses.append(m)
            self.cv.notify()

    def next_misses(self, timeout_ms, max_count=64):
        with self.cv:
            if not self.misses:
                self.cv.wait(timeout_ms / 1000.0)
            out = []
            while self.misses and len(out) < max_count:
                out.append(self.misses.popleft())
            return out

    def start(self):
        pass

    def stop(self):
        pass

    def execute(self, in_port, packet, actions):
        self.executed += 1
        self.last_execute = time.monotonic()

    def cache_insert(self, blob, actions, ids):
        self.inserts += 1

    def invalidate_flow(self, i):
        self.invalidations += 1

    def invalidate_all(self):
        self.invalidations += 1

    def flow_counters(self, ids):
        return [(0, 0, 0)] * len(ids)

    def set_port_state(self, port_no, up):
        pass

    def stats(self):
        return {"ports": {}}


class FakeOFDatapath:
    """What Ryu's message classes need to serialize."""
    ofproto = ofp
    ofproto_parser = parser
    id = 1


DP = FakeOFDatapath()
_xid = [0]


def encode(msg):
    _xid[0] += 1
    msg.set_xid(_xid[0])
    msg.serialize()
    return bytes(msg.buf)


def flow_mod(table, priority, match, actions=(), goto=None, cookie=0, idle_timeout=0, flags=0):
    ins = []
    if actions:
        ins.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions)))
    if goto is not None:
        ins.append(parser.OFPInstructionGotoTable(goto))
    return encode(parser.OFPFlowMod(DP, cookie=cookie, table_id=table, command=ofp.OFPFC_ADD,
                                    idle_timeout=idle_timeout, priority=priority,
                                    buffer_id=ofp.OFP_NO_BUFFER, flags=flags,
                                    match=parser.OFPMatch(**match), instructions=ins))


def out(port):
    max_len = ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else 0
    return parser.OFPActionOutput(port, max_len)


def sf(**kw):
    return parser.OFPActionSetField(**kw)


def base_flows():
    """kp_app's flows for one node with one UDP VIP and two pods (kp_app/pipeline.py)."""
    ctl = [out(ofp.OFPP_CONTROLLER)]
    base = 0x6B << 56 | 1
    msgs = [
        flow_mod(0, 1000, {"eth_type": 0x88B5}, ctl, cookie=base),
        flow_mod(1, 150, {"eth_dst": GW_MAC}, ctl, cookie=base),
        flow_mod(0, 1000, {"eth_type": 0x0806}, ctl, cookie=base),
        flow_mod(0, 1000, {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 135}, ctl, cookie=base),
        flow_mod(0, 1000, {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 136}, ctl, cookie=base),
        flow_mod(0, 0, {}, goto=1, cookie=base),
        flow_mod(1, 0, {}, [out(ofp.OFPP_FLOOD)], cookie=base),
        flow_mod(0, 532, {"eth_type": 0x0800, "ip_proto": 17, "ipv4_dst": VIP, "udp_dst": VIP_PORT},
                 ctl, cookie=COOKIE_VIP),
    ]
    for pod in ("10.0.0.101", "10.0.0.102"):
        msgs.append(flow_mod(0, 400, {"eth_type": 0x0800, "ip_proto": 17, "ipv4_src": pod,
                                      "udp_src": POD_PORT, "ipv4_dst": ("10.0.0.0", "255.255.255.0")},
                             ctl, cookie=COOKIE_VIP))
    for mac, port in ((CLIENT_MAC, CLIENT_PORT), (POD_MAC, POD_OF_PORT)):
        msgs.append(flow_mod(1, 100, {"eth_dst": mac}, [out(port)]))
    return msgs


def session_reply(sport, reply_in_port=False):
    """kp_app's answer to the packet-in of one new session: 2 flow-mods, a packet-out
    (bytes). `reply_in_port`: the reverse flow matches the pod's port too, as kp_app's
    do once `ku set interface nat4 in <port>` lists the ports replies come in on."""
    fwd = {"eth_type": 0x0800, "ip_proto": 17, "ipv4_src": CLIENT_IP, "ipv4_dst": VIP,
           "udp_src": sport, "udp_dst": VIP_PORT}
    rev = {"eth_type": 0x0800, "ip_proto": 17, "ipv4_src": POD_IP, "ipv4_dst": CLIENT_IP,
           "udp_src": POD_PORT, "udp_dst": sport}
    if reply_in_port:
        rev["in_port"] = POD_OF_PORT
    dnat = [sf(eth_src=GW_MAC), sf(eth_dst=POD_MAC), sf(ipv4_dst=POD_IP), sf(udp_dst=POD_PORT),
            out(POD_OF_PORT)]
    snat = [sf(eth_src=GW_MAC), sf(eth_dst=CLIENT_MAC), sf(ipv4_src=VIP), sf(udp_src=VIP_PORT),
            out(CLIENT_PORT)]
    flags = ofp.OFPFF_SEND_FLOW_REM
    return (flow_mod(0, 900, fwd, dnat, cookie=COOKIE_VIP | 3 << 16, idle_timeout=300, flags=flags) +
            flow_mod(0, 900, rev, snat, cookie=COOKIE_VIP | 4 << 16, idle_timeout=300, flags=flags) +
            encode(parser.OFPPacketOut(DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=CLIENT_PORT,
                                       actions=dnat, data=udp_frame(sport))))


def udp_frame(sport):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 18, 1, 0, 64, 17, 0,
                     ipaddress.IPv4Address(CLIENT_IP).packed, ipaddress.IPv4Address(VIP).packed)
    udp = struct.pack("!HHHH", sport, VIP_PORT, 8 + 18, 0) + bytes(18)
    eth = bytes.fromhex(GW_MAC.replace(":", "")) + bytes.fromhex(CLIENT_MAC.replace(":", "")) + b"\x08\x00"
    return eth + ip + udp


class Controller:
    """The other end of the agent's channel, in a child process (so that it does not take
    the agent's GIL): hello, then answers packet-ins from `replies` (sport -> bytes);
    counts what comes back by message type."""

    def __init__(self, sock, replies=None):
        ctx = multiprocessing.get_context("fork")
        self.sock = sock
        self.replies = replies or {}
        self.barrier = ctx.Event()
        self.pins = ctx.Value("l", 0)
        self.errors = ctx.Value("l", 0)
        self.proc = ctx.Process(target=self._loop, daemon=True)

    def start(self):
        self.sock.sendall(struct.pack("!BBHI", 4, ofp.OFPT_HELLO, 8, 0))
        self.proc.start()

    def stop(self):
        self.proc.terminate()
        self.proc.join(5)

    def _loop(self):
        buf = b""
        sock = self.sock
        data_off = len(udp_frame(0))
        pins = errors = 0
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            off = 0
            n = len(buf)
            out = []
            while n - off >= 8:
                (length,) = struct.unpack_from("!H", buf, off + 2)
                if n - off < length:
                    break
                type_ = buf[off + 1]
                if type_ == ofp.OFPT_PACKET_IN:
                    pins += 1
                    # the frame is the tail: UDP source port at 14 + 20 of it
                    (sport,) = struct.unpack_from("!H", buf, off + length - data_off + 34)
                    r = self.replies.get(sport)
                    if r is not None:
                        out.append(r)
                elif type_ == ofp.OFPT_ERROR:
                    errors += 1
                elif type_ == ofp.OFPT_BARRIER_REPLY:
                    self.barrier.set()
                off += length
            buf = buf[off:]
            self.pins.value = pins
            self.errors.value = errors
            if out:
                sock.sendall(b"".join(out))


def make_agent(queue_len):
    dp = FakeDatapath(queue_len)
    agent = Agent(dp, [(CLIENT_PORT, "cli"), (POD_OF_PORT, "pod")],
                  link_reader=lambda name: ("02:00:00:00:00:0%d" % len(name), True, 10000000))
    a, b = socket.socketpair()
    th = threading.Thread(target=agent._serve, args=(a, ("fake", 0), False), daemon=True)
    return agent, dp, b, th


def wait_negotiated(agent):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(c.negotiated for c in agent.connections):
            return
        time.sleep(0.01)
    raise RuntimeError("no hello")


def run_sessions(n, rate, queue_len, reply_in_port=False):
    agent, dp, csock, th = make_agent(queue_len)
    replies, misses = {}, []
    for i in range(n):
        sport = SPORT0 + i
        replies[sport] = session_reply(sport, reply_in_port)
        frame = udp_frame(sport)
        key, blob, _ = fastpath_ref.parse_blob(frame, CLIENT_PORT)
        misses.append((CLIENT_PORT, frame, key, blob))
    ctl = Controller(csock, replies)
    th.start()
    ctl.start()
    wait_negotiated(agent)
    csock.sendall(b"".join(base_flows()) + encode(parser.OFPBarrierRequest(DP)))
    if not ctl.barrier.wait(10):
        raise RuntimeError("no barrier reply after the base flows")
    agent._thread(agent._slow_path_loop, "kp-slow-path")
    t0 = time.monotonic()
    if rate:
        step = 0.005
        per = max(1, int(rate * step))
        for i in range(0, n, per):
            target = t0 + i / rate
            d = target - time.monotonic()
            if d > 0:
                time.sleep(d)
            dp.push(misses[i:i + per])
    else:
        dp.push(misses)
    # Done when every miss that was not dropped (miss queue, packet-in queue) has had its
    # packet-out, or when nothing moved for a second.
    last, still = -1, time.monotonic()
    ok = False
    while time.monotonic() - still < 1.0:
        lost = dp.drops + sum(c.dropped for c in list(agent.connections))
        if dp.executed >= n - lost:
            ok = True
            break
        if dp.executed != last:
            last, still = dp.executed, time.monotonic()
        time.sleep(0.002)
    t1 = dp.last_execute
    lost_pins = sum(c.dropped for c in list(agent.connections))
    agent.stop()
    ctl.stop()
    flows = sum(len(t) for t in agent.tables.tables)
    return {"sessions": n, "lost_pins": lost_pins, "delivered": dp.executed, "drops": dp.drops, "seconds": t1 - t0,
            "per_s": dp.executed / (t1 - t0), "ok": ok, "flows": flows,
            "packet_ins": ctl.pins.value, "invalidations": dp.invalidations}


def run_add_flows(n):
    agent, dp, csock, th = make_agent(1024)
    ctl = Controller(csock)
    th.start()
    ctl.start()
    wait_negotiated(agent)
    # bench/run.py's flow_line(i): exact udp 5-tuple, 4 set-fields, output
    msgs = []
    for i in range(n):
        src = str(ipaddress.IPv4Address("10.0.1.2") + i // 50000)
        m = {"eth_type": 0x0800, "ip_proto": 17, "ipv4_src": src, "ipv4_dst": VIP,
             "udp_src": 10000 + i % 50000, "udp_dst": VIP_PORT}
        msgs.append(flow_mod(0, 900, m, [sf(eth_src=GW_MAC), sf(eth_dst=POD_MAC), sf(ipv4_dst=POD_IP),
                                         sf(udp_dst=POD_PORT), out(2)]))
    blob = b"".join(msgs) + encode(parser.OFPBarrierRequest(DP))
    t0 = time.monotonic()
    csock.sendall(blob)
    ok = ctl.barrier.wait(300)
    t1 = time.monotonic()
    agent.stop()
    ctl.stop()
    flows = sum(len(t) for t in agent.tables.tables)
    return {"flow_mods": n, "seconds": t1 - t0, "per_s": n / (t1 - t0), "ok": ok, "flows": flows,
            "errors": ctl.errors.value}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10000, help="sessions / flow-mods")
    p.add_argument("--rate", type=int, default=0,
                   help="sessions: offered misses per second (0: all at once, capacity)")
    p.add_argument("--queue", type=int, default=1024 * 64,
                   help="sessions: miss queue length (the C fast path's is 1024)")
    p.add_argument("--only", choices=("sessions", "add-flows"))
    p.add_argument("--profile", choices=("sessions", "add-flows"),
                   help="run that workload under cProfile (all threads) and print the top")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--reply-in-port", action="store_true",
                   help="sessions: reverse flows match in_port (ku set interface nat4 in ...)")
    a = p.parse_args()
    work = [w for w in ("sessions", "add-flows") if a.only in (None, w)]
    for w in work:
        profiles = _profile_threads() if a.profile == w else None
        if w == "sessions":
            r = run_sessions(a.n, a.rate, a.queue, a.reply_in_port)
            print("sessions : %6d in %6.2f s = %7.0f /s  (miss drops %d, packet-in drops %d, packet-ins %d, flows %d, "
                  "invalidations %d)%s" % (r["delivered"], r["seconds"], r["per_s"], r["drops"], r["lost_pins"],
                                           r["packet_ins"], r["flows"], r["invalidations"],
                                           "" if r["ok"] else "  INCOMPLETE"))
        else:
            r = run_add_flows(a.n)
            print("add-flows: %6d in %6.2f s = %7.0f /s  (flows %d, errors %d)%s"
                  % (r["flow_mods"], r["seconds"], r["per_s"], r["flows"], r["errors"],
                     "" if r["ok"] else "  INCOMPLETE"))
        if profiles is not None:
            threading.setprofile(None)
            st = pstats.Stats(*profiles)
            st.sort_stats("tottime").print_stats(a.top)
            st.sort_stats("cumulative").print_stats(a.top)


def _profile_threads():
    """A cProfile for each thread started from now on (the agent's threads); the list
    fills as they start."""
    profiles = []

    def boot(frame, event, arg):
        sys.setprofile(None)
        pr = cProfile.Profile()
        profiles.append(pr)
        pr.enable()

    threading.setprofile(boot)
    return profiles


if __name__ == "__main__":
    main()
