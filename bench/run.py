#!/usr/bin/env python3
"""kp benchmarks: kp-switch against Open vSwitch (userspace), the kernel and a bare forwarder.

    ./run bench                 # the full run (a few minutes)
    ./run bench --quick         # 2 rounds of 2 s, fewer sessions
    ./run bench --rounds 5 --seconds 4 --skip-sessions

What it measures, all in one run on a topology it builds and removes itself:

1. Packets per second of 64-byte UDP (60 bytes + FCS) through one switch carrying a
   kube-proxy DNAT flow per 5-tuple (the session flow kp_app installs: exact udp
   5-tuple to the VIP 10.96.0.10:80 -> set eth_src/eth_dst, ip_dst 10.0.0.101, udp_dst
   8080, output), with 1 flow and with 10,000 flows (one per generated 5-tuple), for
       kp-xdp     kp-switch (C fast path, flow cache) on AF_XDP ports (--ports afxdp)
       kp-afpkt   kp-switch on AF_PACKET ports (--ports afpacket)
       ovs-afpkt  Open vSwitch, bridge datapath_type=netdev, AF_PACKET (veth) ports
       ovs-xdp    Open vSwitch, datapath_type=netdev, type=afxdp ports (a PMD thread on
                  the switch core, pmd-maxsleep so that it sleeps while others run)
       kernel     the kernel's own forwarding in a router namespace, iptables DNAT to
                  the pod (one kube-proxy rule; conntrack: one entry per 5-tuple)
       bare       bench/bare_forwarder.c: TPACKET_V3 rx -> sendmmsg tx, no parse, no lookup
   alternated round by round, in both receive layouts (--layouts): the kernel's receive
   work for the switch's port 1 on the generator's core, and steered to the switch
   core by RPS; medians, ratios kp/peer, PASS/MISS against GOALS.
   The switch side (every engine) is pinned to core 1, the generator to core 0.
   Also the CPU time (user + system, from /proc) the switch process spent per packet
   it forwarded: a cost the generator's limit does not hide (the kernel's share of
   receiving and sending is in it, as it is for every engine; for the kernel peer,
   the softirq time of all cores).
2. New sessions per second: distinct UDP flows to a VIP offered at a fixed rate (more
   than any keeps up with), counted at the pod, through kp_app (ryu-manager) with
   kp-switch, with Open vSwitch making the sessions itself (ct) and in packet-in mode,
   and through the kernel's own forwarding with kube-proxy's iptables chains (DNAT +
   conntrack, in a router namespace); and the CPU time the controller and the switch
   spent per session.
3. New flows per second through a static flow: one wildcard DNAT flow (udp to
   VIP:80 from anywhere) and one frame per new UDP 5-tuple, offered above what either
   switch keeps up with, counted at the sink (kp-switch answers them from its megaflow
   cache in C after the first; before megaflows each one went to the Python agent).
   `--skip-pps --skip-sessions` runs only this (and 4).
4. Bytes of kp-switch flow cache per cached flow, from the structure sizes the compiler
   gives (switch/csrc/flow_cache.h, megaflow.h) and the live cache statistics.
5. Programming kp-switch's own sessions (bench/programming.py): 10,000 Services x 10
   endpoints applied through kp_app until the switch holds every VIP table; one
   endpoint added to or removed from a 1,000-endpoint Service until the switch holds
   the new table (p50, p99); kp_app's and kp-switch's memory per Service.
   `--skip-programming` leaves it out.
6. Scale (bench/scale.py): new TCP connections per second through one ClusterIP while
   1, 1,000 and 10,000 Services are installed, through kp_app + kp-switch and the
   kernel with kube-proxy's iptables rules and its nftables verdict maps (and Open
   vSwitch at 1 Service); each engine at 10,000 against itself at 1, kp against each
   peer at each scale, and the connections that failed. `--skip-scale` leaves it out.

Results: a table on stdout and bench/results/latest.json.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import (ENGINES, GEN_CPU, LAYOUTS, OvsDaemon, Procs, REPO, RESULTS, SWITCH_CPU,
                     Topology, VENV_BIN, build, free_port, http, log, start_kp_switch,
                     wait_listening)
from pps import PpsBench
from newflows import NewFlowsBench
from sessions import SessionsBench
from report import (cache_memory, report)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s, a short sessions run")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds per flow count")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (10k flows)")
    p.add_argument("--flows", type=int, default=10000, help="the many-flows case")
    p.add_argument("--buckets", type=int, default=16384,
                   help="kp-switch cache buckets for the pps runs (power of 2)")
    # Above what the packet-in engines keep up with, so that their figure is the capacity;
    # the kernel and Open vSwitch's conntrack may deliver all of it.
    p.add_argument("--session-rate", type=int, default=120000,
                   help="new flows offered per second (above what the fastest keeps up with)")
    p.add_argument("--session-seconds", type=float, default=4.0)
    p.add_argument("--session-rounds", type=int, default=2)
    p.add_argument("--engines", default=",".join(ENGINES),
                   help="forwarding peers of section 1, comma-separated (kp always); "
                        "default all: " + ",".join(ENGINES))
    p.add_argument("--layouts", default=",".join(LAYOUTS),
                   help="receive layouts to measure, comma-separated: rx-gen-core (the "
                        "kernel's receive work for the switch ports on the generator's core), "
                        "rx-switch-core (steered to the switch core by RPS); default both")
    p.add_argument("--newflow-rate", type=int, default=200000,
                   help="new flows offered per second through the static flow")
    p.add_argument("--newflow-seconds", type=float, default=2.0)
    p.add_argument("--newflow-rounds", type=int, default=3)
    p.add_argument("--skip-pps", action="store_true")
    p.add_argument("--skip-sessions", action="store_true")
    p.add_argument("--skip-newflows", action="store_true")
    p.add_argument("--skip-programming", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--scale-seconds", type=float, default=4.0,
                   help="seconds of connections measured at each Service count")
    p.add_argument("--scale-rounds", type=int, default=2)
    p.add_argument("--json", default=os.path.join(RESULTS, "latest.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.seconds, a.warmup = 2, 2.0, 1.5
        a.session_seconds, a.session_rounds = 2.0, 1
        a.newflow_seconds, a.newflow_rounds = 1.0, 2
        a.scale_seconds, a.scale_rounds = 2.0, 1
    if a.seconds < 1.0:
        p.error("--seconds must be at least 1")
    a.engines = [e for e in a.engines.split(",") if e]
    if "kp" not in a.engines or any(e not in ENGINES for e in a.engines):
        p.error("--engines: kp and any of %s" % ",".join(ENGINES))
    a.layouts = [l for l in a.layouts.split(",") if l]
    if not a.layouts or any(l not in LAYOUTS for l in a.layouts):
        p.error("--layouts: some of %s" % ",".join(LAYOUTS))
    return a


def _programming_bench(topo, procs, tmp):
    """bench/programming.py with this harness: kp_app in lb mode, kp-switch on one veth."""
    from programming import ProgrammingBench

    def ryu_cmd(of_port, ws_port, log_file):
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        return (["taskset", "-c", str(GEN_CPU), os.path.join(VENV_BIN, "ryu-manager"), "kp_app",
                 "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(of_port),
                 "--wsapi-host", "127.0.0.1", "--wsapi-port", str(ws_port), "--log-file",
                 log_file, "--kp-mode", "lb"],
                dict(cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def link():
        return topo.link("pg", topo.ns("pg"))
    return ProgrammingBench(log, http, procs, start_kp_switch, free_port, wait_listening,
                            ryu_cmd, link, tmp)


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (namespaces, veth, AF_PACKET)", file=sys.stderr)
        return 2
    if os.cpu_count() < 2:
        print("bench: needs 2 cores (switch on one, generator on the other)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {GEN_CPU})        # keep this script off the switch core
    exe = build()
    procs = Procs()
    topo = Topology()
    ovsd = OvsDaemon()
    tmp = tempfile.mkdtemp(prefix="kpb-")
    pps = sessions = newflows = programming = None
    scaled = {}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    t_start = time.monotonic()
    ok = False
    try:
        ovsd.ensure()
        ovsd.pin(SWITCH_CPU)
        if not args.skip_pps:
            pps = PpsBench(args, exe, topo, procs, tmp, ovsd.pid)
            try:
                pps.run()
            finally:
                pps.close()
        if not args.skip_newflows:
            log("\n== new flows per second through a static flow ==")
            newflows = NewFlowsBench(args, exe, topo, procs, tmp)
            try:
                newflows.run()
            except Exception as e:
                log("new-flows benchmark failed: %s" % e)
            finally:
                newflows.close()
        if not args.skip_sessions:
            log("\n== new sessions per second through kp_app ==")
            sessions = SessionsBench(args, exe, topo, procs, tmp)
            try:
                sessions.run()
            except Exception as e:
                log("sessions benchmark failed: %s" % e)
        if not args.skip_programming:
            log("\n== programming kp-switch's own sessions (lb mode) ==")
            programming = _programming_bench(topo, procs, tmp)
            try:
                programming.run()
            except Exception as e:
                log("programming benchmark failed: %s" % e)
        if not args.skip_scale:
            log("\n== new connections with 1, 1,000 and 10,000 Services installed ==")
            import scale            # kp_lab and Mininet: only when this part runs
            try:
                measured = scale.run(log, args.scale_seconds, args.scale_rounds)
                scaled = {"results": measured, "summary": scale.summary(measured, log)}
            except Exception as e:
                log("scale benchmark failed: %s" % e)
        mem = cache_memory(exe, pps.kp_stats if pps else None, args.buckets)
        load = os.getloadavg()[0]
        note = ("load average %.1f during the run (other work on this machine adds noise)"
                % load) if load > 2.5 else ""
        summary = report(args, pps, sessions, mem, note, newflows)
        if programming is not None and programming.results:
            summary["programming"] = programming.results
        if scaled:
            summary["scale"] = scaled
        summary["config"] = {k: v for k, v in vars(args).items()}
        summary["elapsed_s"] = time.monotonic() - t_start
        summary["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release,
                              "loadavg_end": os.getloadavg()}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)
        log("results: %s (%.0f s)" % (args.json, summary["elapsed_s"]))
        ok = True
    except KeyboardInterrupt as e:
        log("bench: interrupted (%s); cleaning up" % (e or "SIGINT"))
    finally:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        procs.stop_all()
        if sessions is not None and sessions.ovs_br is not None:
            sessions.ovs_br.close()
        if pps is not None:
            pps.close()
        topo.close()
        ovsd.restore()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log("bench: logs kept in %s" % tmp)
        for s, h in old.items():
            signal.signal(s, h)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
