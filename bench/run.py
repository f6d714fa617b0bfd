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
import ipaddress
import json
import os
import shutil
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from kp_lab.controller import free_port
from kp_lab.procs import stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build")
RESULTS = os.path.join(HERE, "results")
VENV_BIN = os.path.dirname(sys.executable)

SWITCH_CPU = 1
GEN_CPU = 0

VIP, VIP_PORT, POD_IP, POD_PORT = "10.96.0.10", 80, "10.0.0.101", 8080
GW_MAC = "02:6b:70:00:00:01"        # what kp_app's node uses as its gateway MAC (dpid 1)
POD_MAC = "02:00:00:00:01:01"       # not the sink interface's MAC: the sink's kernel
                                    # drops the frames at once (PACKET_OTHERHOST)
CLIENT_IP = "10.0.1.2"
SPORT0 = 10000

GOALS = {"kp_over_ovs": 1.5, "kp_over_bare": 0.9, "kp_over_kernel": 1.0,
         "kp_over_ovs_xdp": 1.5, "cache_bytes_per_flow": 64}

# The forwarding peers (section 1): kp-switch on each of its port backends, Open
# vSwitch's userspace datapath on each of its, the kernel's own forwarding, and the
# bare AF_PACKET forwarder.
ENGINES = ("bare", "kp", "kp-afp", "ovs", "ovs-xdp", "kernel")
ENGINE_TITLES = {"bare": "bare", "kp": "kp-xdp", "kp-afp": "kp-afpkt", "ovs": "ovs-afpkt",
                 "ovs-xdp": "ovs-xdp", "kernel": "kernel"}
# Receive layouts: where the kernel's receive work for the switch's ports runs.
LAYOUTS = ("rx-gen-core", "rx-switch-core")


# --------------------------------------------------------------------------- helpers

def log(msg):
    print(msg, flush=True)


def sh(*args, check=True, capture=False, timeout=60):
    r = subprocess.run(args, check=False, timeout=timeout, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if check and r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout if capture else r


def build():
    os.makedirs(BUILD, exist_ok=True)
    out = {}
    for name, extra in (("pktgen", []), ("bare_forwarder", []),
                        ("cache_sizes", ["-I", os.path.join(REPO, "switch", "csrc")])):
        src = os.path.join(HERE, name + ".c")
        exe = os.path.join(BUILD, name)
        deps = [src] + ([os.path.join(REPO, "switch", "csrc", h)
                         for h in ("flow_cache.h", "megaflow.h")]
                        if name == "cache_sizes" else [])
        if not os.path.exists(exe) or any(os.path.getmtime(d) > os.path.getmtime(exe)
                                          for d in deps):
            sh("gcc", "-O2", "-Wall", "-o", exe, src, *extra)
        out[name] = exe
    return out


def read_counter(ifname, name):
    with open("/sys/class/net/%s/statistics/%s" % (ifname, name)) as f:
        return int(f.read())


def wait_listening(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process %d exited with %s" % (proc.pid, proc.returncode))
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("nothing listens on %d after %ss" % (port, timeout))


def cpu_seconds(pid):
    """User + system CPU time of a whole process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Procs:
    """Processes this bench started; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=5):
        stop_process(p, timeout)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            try:
                self.stop(p)
            except Exception as e:       # keep cleaning up
                log("warning: stopping %d: %s" % (p.pid, e))


# --------------------------------------------------------------------------- topology

class Topology:
    """Namespaces and veth pairs this run owns (names carry the PID); all removed by
    close().  For each link name L: root end '<tag>L' <-> namespace end 'L'."""

    def __init__(self):
        pid = os.getpid()
        self.tag = "kpb%d" % (pid % 100000)
        self.prefix = "kpb-%d-" % pid
        self.namespaces = []
        self.links = []          # root ends

    def ns(self, role):
        name = self.prefix + role
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.nsexec(name, "ip", "link", "set", "lo", "up")
        self.nsexec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.nsexec(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        return name

    def nsexec(self, ns, *args, **kw):
        return sh("ip", "netns", "exec", ns, *args, **kw)

    def link(self, short, ns, addrs=(), mac=None):
        """A veth pair: root end self.tag+short (a switch port), the other end `short`
        inside ns.  Returns the root end's name."""
        root = self.tag + short
        sh("ip", "link", "add", root, "type", "veth", "peer", "name", short, "netns", ns)
        self.links.append(root)
        self._no_ipv6(root)
        sh("ip", "link", "set", root, "up")
        if mac:
            self.nsexec(ns, "ip", "link", "set", short, "address", mac)
        for a in addrs:
            self.nsexec(ns, "ip", "addr", "add", a, "dev", short)
        self.nsexec(ns, "ip", "link", "set", short, "up")
        return root

    @staticmethod
    def _no_ipv6(ifname):
        try:
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % ifname, "w") as f:
                f.write("1")
        except OSError:
            pass

    def ns_mac(self, ns, ifname):
        out = self.nsexec(ns, "cat", "/sys/class/net/%s/address" % ifname, capture=True)
        return out.strip()

    def close(self):
        for root in reversed(self.links):
            sh("ip", "link", "del", root, check=False)
        self.links = []
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces = []


def router_namespace(topo, rt, cli_end, pod_end):
    """The kernel peer's router: namespace rt takes both root ends (the client side
    answering as the gateway MAC, 10.0.0.1 on both) and forwards between them."""
    for end in (cli_end, pod_end):
        sh("ip", "link", "set", end, "netns", rt)
        topo.links.remove(end)         # the namespace's deletion takes it
    topo.nsexec(rt, "ip", "link", "set", cli_end, "address", GW_MAC)
    topo.nsexec(rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for end in (cli_end, pod_end):
        topo.nsexec(rt, "sysctl", "-qw", "net.ipv4.conf.%s.rp_filter=0" % end)
        topo.nsexec(rt, "ip", "addr", "add", "10.0.0.1/32", "dev", end)
        topo.nsexec(rt, "ip", "link", "set", end, "up")


# --------------------------------------------------------------------------- switches

def flow_line(i, out_port=2):
    src = str(ipaddress.IPv4Address(CLIENT_IP) + i // 50000)
    return ("table=0,priority=900,udp,nw_src=%s,nw_dst=%s,tp_src=%d,tp_dst=%d "
            "actions=set_field:%s->eth_src,set_field:%s->eth_dst,set_field:%s->ip_dst,"
            "set_field:%d->udp_dst,output:%d"
            % (src, VIP, SPORT0 + i % 50000, VIP_PORT, GW_MAC, POD_MAC, POD_IP, POD_PORT,
               out_port))


def add_flows(target, first, last, tmpdir):
    path = os.path.join(tmpdir, "flows-%d-%d.txt" % (first, last))
    with open(path, "w") as f:
        for i in range(first, last):
            f.write(flow_line(i) + "\n")
    t = time.monotonic()
    sh("ovs-ofctl", "-O", "OpenFlow13", "add-flows", target, path, timeout=600)
    return time.monotonic() - t


def count_flows(target):
    out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", target, capture=True, timeout=120)
    return sum(1 for line in out.splitlines() if "priority=900" in line)


class OvsDaemon:
    """Open vSwitch (shared system daemon): started if it is not running; its threads
    pinned to the switch core while this bench runs, then given their old affinity."""

    PIDFILE = "/var/run/openvswitch/ovs-vswitchd.pid"

    def __init__(self):
        self.saved = {}

    def ensure(self):
        if sh("ovs-vsctl", "--timeout=2", "show", check=False).returncode:
            sh("/usr/share/openvswitch/scripts/ovs-ctl", "start", timeout=120)
        self.pid = self.pid_now()

    @classmethod
    def pid_now(cls):
        with open(cls.PIDFILE) as f:
            return int(f.read().strip())

    def threads(self):
        return [int(t) for t in os.listdir("/proc/%d/task" % self.pid)]

    def pin(self, cpu):
        for tid in self.threads():
            try:
                self.saved.setdefault(tid, os.sched_getaffinity(tid))
                os.sched_setaffinity(tid, {cpu})
            except OSError:
                pass

    def restore(self):
        for tid, cpus in self.saved.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass
        self.saved = {}


class OvsBridge:
    def __init__(self, name, ports, controller=None, dpid=1, iface_type=None):
        """iface_type: None (netdev's AF_PACKET on a veth) or "afxdp" (AF_XDP ports,
        polled by a PMD thread)."""
        self.name = name
        args = ["ovs-vsctl", "--timeout=20", "add-br", name, "--", "set", "bridge", name,
                "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
                "other_config:disable-in-band=true",
                "other_config:datapath-id=%016x" % dpid]
        for i, p in enumerate(ports, 1):
            args += ["--", "add-port", name, p, "--", "set", "interface", p,
                     "ofport_request=%d" % i] + (["type=%s" % iface_type] if iface_type else [])
        sh(*args)
        self.created = True
        sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", name)
        if controller:      # after del-flows, which would race the controller's flows
            sh("ovs-vsctl", "--timeout=20", "set-controller", name, controller)

    def set_ports(self, ports, iface_type=None):
        """Attach ports again (numbered from 1, as at creation) or, with ports=[],
        detach them all; the flow table stays."""
        have = sh("ovs-vsctl", "--timeout=20", "list-ports", self.name, capture=True).split()
        args = ["ovs-vsctl", "--timeout=20"]
        for p in have:
            args += ["--", "del-port", self.name, p]
        for i, p in enumerate(ports, 1):
            args += ["--", "add-port", self.name, p, "--", "set", "interface", p,
                     "ofport_request=%d" % i] + (["type=%s" % iface_type] if iface_type else [])
        if len(args) > 2:
            sh(*args)

    @property
    def target(self):
        return self.name

    def close(self):
        if self.created:
            sh("ovs-vsctl", "--timeout=20", "--if-exists", "del-br", self.name, check=False)
            self.created = False


def start_kp_switch(procs, ports, listen_port, buckets, log_file, controller=None, dpid=1,
                    port_io=None):
    args = ["taskset", "-c", str(SWITCH_CPU), os.path.join(VENV_BIN, "kp-switch"),
            "--dpid", str(dpid), "--listen", "ptcp:%d" % listen_port,
            "--buckets", str(buckets), "--log-file", log_file]
    if port_io:
        args += ["--ports", port_io]
    if controller:
        args += ["--controller", controller]
    with open(log_file + ".stderr", "ab") as err:
        p = procs.start(args + list(ports), stdout=subprocess.DEVNULL, stderr=err)
    wait_listening(listen_port, p)
    return p


class KpCacheStats:
    """KP_CACHE_STATS_REQUEST over an OpenFlow 1.3 management connection
    (FASTPATH.md: experimenter 0x004B5000, exp_type 2; reply exp_type 3, 10 x u64)."""

    NAMES = ("hits", "misses", "inserts", "insert_failures", "evictions", "expired",
             "invalidated", "entries", "buckets", "parse_errors",
             "mf_hits", "mf_inserts", "mf_insert_failures", "mf_entries", "mf_subtables")

    def __init__(self, port):
        self.port = port

    def get(self, timeout=5.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(struct.pack("!BBHI", 4, 0, 8, 1))                      # hello
            s.sendall(struct.pack("!BBHIII", 4, 4, 16, 77, 0x004B5000, 2))   # request
            buf = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                while len(buf) >= 8:
                    _, typ, length, xid = struct.unpack("!BBHI", buf[:8])
                    if len(buf) < length:
                        break
                    msg, buf = buf[:length], buf[length:]
                    if typ == 4 and xid == 77 and length >= 16 + 80:
                        n = min((length - 16) // 8, len(self.NAMES))
                        vals = struct.unpack("!%dQ" % n, msg[16:16 + 8 * n])
                        return dict(zip(self.NAMES, vals))
                    if typ == 1:
                        raise RuntimeError("kp-switch refused the cache stats request")
                    if typ == 2:                                            # echo
                        s.sendall(struct.pack("!BBHI", 4, 3, length, xid) + msg[8:])
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        raise RuntimeError("no cache stats reply from kp-switch")


# --------------------------------------------------------------------------- pps

class PpsBench:
    """Section 1: each engine forwards the generator's DNAT traffic from its own pair of
    links (generator -> port 1, port 2 -> sink), one engine at a time, rounds
    alternated, in both receive layouts (RPS for the switch's port 1 off, then on)."""

    def __init__(self, args, exe, topo, procs, tmpdir, ovs_pid):
        self.args, self.exe, self.topo, self.procs, self.tmp = args, exe, topo, procs, tmpdir
        self.ovs_pid = ovs_pid
        self.layouts = [l for l in LAYOUTS if l in args.layouts]
        self.engines = [e for e in ENGINES if e in args.engines]
        counts = (1, args.flows)
        self.results = {l: {f: {e: [] for e in self.engines} for f in counts}
                        for l in self.layouts}
        # CPU time the switch process spent per packet it forwarded: what a switch costs
        # even where the generator, not the switch, limits the rate.
        self.cpu_ns = {l: {f: {e: [] for e in self.engines} for f in counts}
                       for l in self.layouts}
        self.details = []
        self.kp_stats = None
        self.kp_port_io = {}
        self.ovs_saved = None

    def setup(self):
        t = self.topo
        self.ns_src = t.ns("src")
        self.ns_dst = t.ns("dst")
        self.ns_rt = t.ns("prt")
        self.links = {}
        for e, c in (("bare", "b"), ("kp", "k"), ("kp-afp", "a"), ("ovs", "o"),
                     ("ovs-xdp", "x"), ("kernel", "n")):
            a = t.link("g" + c, self.ns_src)          # generator -> switch port 1
            b = t.link("s" + c, self.ns_dst)          # switch port 2 -> sink
            self.links[e] = (a, b, "g" + c)
        self._kernel_router(*self.links["kernel"][:2])
        # Counters of the router namespace's interfaces: /proc/<pid>/net/dev of a
        # process inside it (no process start per reading).
        self.rt_holder = self.procs.start(["ip", "netns", "exec", self.ns_rt, "sleep", "86400"])
        a, b, _ = self.links["bare"]
        self.bare = self.procs.start(["taskset", "-c", str(SWITCH_CPU), self.exe["bare_forwarder"],
                                      a, b], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.kp_ports, self.kp_procs, self.targets, self.kp_caches = {}, {}, {}, {}
        for e, port_io in (("kp", "afxdp"), ("kp-afp", "afpacket")):
            if e not in self.engines:
                continue
            a, b, _ = self.links[e]
            self.kp_ports[e] = free_port()
            log_file = os.path.join(self.tmp, "kp-switch-pps-%s.log" % port_io)
            self.kp_procs[e] = start_kp_switch(self.procs, [a, b], self.kp_ports[e],
                                               self.args.buckets, log_file, port_io=port_io)
            self.targets[e] = "tcp:127.0.0.1:%d" % self.kp_ports[e]
            self.kp_caches[e] = KpCacheStats(self.kp_ports[e])
            with open(log_file, errors="replace") as f:
                found = [l.split(" kp_switch: ports ", 1)[1].strip() for l in f
                         if " kp_switch: ports " in l]
            self.kp_port_io[e] = found[-1] if found else "?"
            log("  %-7s kp-switch ports: %s" % (e, self.kp_port_io[e]))
        self.bridges = {}
        if "ovs-xdp" in self.engines:
            self._ovs_pmd_config()
        for e, c, typ in (("ovs", "br", None), ("ovs-xdp", "bx", "afxdp")):
            if e not in self.engines:
                continue
            a, b, _ = self.links[e]
            self.bridges[e] = OvsBridge(t.tag + c, [a, b], iface_type=typ)
            self.targets[e] = self.bridges[e].target
        self.ovs_xdp_ports(False)

    def ovs_xdp_ports(self, attached):
        """Open vSwitch's AF_XDP ports only while ovs-xdp is measured: while a port of
        its needs a PMD thread, Open vSwitch's AF_PACKET ports forward a fraction of
        what they do without one (measured: 10-170 kpps instead of 190-260), which
        would make the ovs-afpkt figure meaningless.  Flows stay; the port numbers
        are the same after re-attaching."""
        br = self.bridges.get("ovs-xdp")
        if br is not None:
            a, b, _ = self.links["ovs-xdp"]
            br.set_ports([a, b] if attached else [], "afxdp")
            if attached:
                time.sleep(1.0)     # the XDP program and the PMD's first polls
        self.pids = {"bare": self.bare.pid, "ovs": self.ovs_pid, "ovs-xdp": self.ovs_pid,
                     "kernel": None}
        self.pids.update({e: p.pid for e, p in self.kp_procs.items()})

    def _ovs_pmd_config(self):
        """Open vSwitch's AF_XDP ports are polled by a PMD thread: on the switch core,
        and asleep when idle (pmd-maxsleep, Open vSwitch 3.1), or it would spin on the
        switch core through every other engine's runs.  Restored by close()."""
        keys = ("pmd-cpu-mask", "pmd-maxsleep")
        self.ovs_saved = {}
        for k in keys:
            r = sh("ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "other_config:" + k,
                   check=False, capture=True)
            self.ovs_saved[k] = r.strip() if isinstance(r, str) else None
        sh("ovs-vsctl", "--timeout=5", "set", "Open_vSwitch", ".",
           "other_config:pmd-cpu-mask=0x%x" % (1 << SWITCH_CPU), "other_config:pmd-maxsleep=10000")

    def _kernel_router(self, cli_end, pod_end):
        """The kernel peer: the router namespace takes both root ends and forwards with
        kube-proxy's iptables DNAT for the VIP (conntrack: one entry per 5-tuple)."""
        t, rt = self.topo, self.ns_rt
        t.nsexec(rt, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        t.nsexec(rt, "sysctl", "-qw", "net.netfilter.nf_conntrack_max=262144", check=False)
        router_namespace(t, rt, cli_end, pod_end)
        t.nsexec(rt, "ip", "route", "add", "10.0.1.0/24", "dev", cli_end)
        t.nsexec(rt, "ip", "route", "add", POD_IP + "/32", "dev", pod_end)
        t.nsexec(rt, "ip", "neigh", "replace", POD_IP, "lladdr", POD_MAC, "dev", pod_end,
                 "nud", "permanent")
        for rule in ("-N KUBE-SERVICES", "-A PREROUTING -j KUBE-SERVICES",
                     "-A KUBE-SERVICES -d %s/32 -p udp --dport %d -j DNAT --to-destination "
                     "%s:%d" % (VIP, VIP_PORT, POD_IP, POD_PORT)):
            t.nsexec(rt, "iptables", "-t", "nat", *rule.split())

    def set_layout(self, layout):
        """RPS for port 1 of every engine: its receive work on the switch core, or
        (rps_cpus 0) where the generator's transmit runs it, the generator's core."""
        mask = "%x" % (1 << SWITCH_CPU) if layout == "rx-switch-core" else "0"
        for e, (a, _, _) in self.links.items():
            path = "/sys/class/net/%s/queues/rx-0/rps_cpus" % a
            if e == "kernel":
                self.topo.nsexec(self.ns_rt, "sh", "-c", "echo %s > %s" % (mask, path))
            else:
                with open(path, "w") as f:
                    f.write(mask)

    def counter(self, engine, ifname, name):
        if engine != "kernel":
            return read_counter(ifname, name)
        with open("/proc/%d/net/dev" % self.rt_holder.pid) as f:
            for line in f:
                if line.strip().startswith(ifname + ":"):
                    v = line.split(":", 1)[1].split()
                    return int(v[{"rx_packets": 1, "tx_packets": 9}[name]])
        raise RuntimeError("no %s in the router namespace" % ifname)

    @staticmethod
    def softirq_seconds():
        """Softirq time of all cores (the kernel forwarding's work), in seconds."""
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[7]) / os.sysconf("SC_CLK_TCK")

    def install(self, first, last):
        for e in [e for e in ("kp", "kp-afp", "ovs", "ovs-xdp") if e in self.engines]:
            secs = add_flows(self.targets[e], first, last, self.tmp)
            n = count_flows(self.targets[e])
            log("  %-7s %5d flows installed (%d new in %.1f s)" % (e, n, last - first, secs))
            if n != last:
                raise RuntimeError("%s holds %d DNAT flows, expected %d" % (e, n, last))

    def verify_translation(self, engine):
        """A few frames at the sink must carry the DNAT (pod MAC, pod IP, port 8080) and
        a correct UDP checksum."""
        code = r'''
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0)); s.settimeout(3)
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return t
ok = bad = 0
end = time.time() + 3
while ok + bad < 20 and time.time() < end:
    try: f = s.recv(2048)
    except socket.timeout: break
    if len(f) < 42 or f[12:14] != b"\x08\x00" or f[23] != 17: continue
    ip = f[14:34]; udp = f[34:14 + struct.unpack("!H", f[16:18])[0]]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    good = (f[:6] == bytes.fromhex(sys.argv[2].replace(":", "")) and
            socket.inet_ntoa(ip[16:20]) == sys.argv[3] and
            struct.unpack("!H", udp[2:4])[0] == int(sys.argv[4]) and
            csum(ip) == 0xffff and csum(pseudo + udp) == 0xffff)
    ok += good; bad += not good
print(ok, bad)
'''
        _, _, gen_if = self.links[engine]
        p = subprocess.Popen(["ip", "netns", "exec", self.ns_dst, sys.executable, "-c", code,
                              "s" + gen_if[1:], POD_MAC, POD_IP, str(POD_PORT)],
                             stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        g = self.gen(engine, 1, seconds=1.5, pps=2000, warmup=0)
        g.wait(10)
        out = p.communicate(timeout=10)[0].split()
        ok, bad = int(out[0]), int(out[1])
        if not ok or bad:
            raise RuntimeError("%s: translated frames at the sink: %d right, %d wrong"
                               % (engine, ok, bad))
        return ok

    def gen(self, engine, flows, seconds, pps=0, warmup=0.0, warmup_pps=20000):
        _, _, gen_if = self.links[engine]
        args = ["ip", "netns", "exec", self.ns_src, "taskset", "-c", str(GEN_CPU),
                self.exe["pktgen"], gen_if, "--dst-mac", GW_MAC, "--src-ip", CLIENT_IP,
                "--dst-ip", VIP, "--dport", str(VIP_PORT), "--sport", str(SPORT0),
                "--flows", str(flows), "--seconds", str(seconds), "--pps", str(pps)]
        if warmup:
            args += ["--warmup-seconds", str(warmup), "--warmup-pps", str(warmup_pps)]
        return self.procs.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def measure(self, layout, engine, flows):
        """One run: warm-up (caches fill), then flat out for --seconds; the forwarded
        rate is the sink link's counter over the middle of the flat-out phase."""
        a, b, _ = self.links[engine]
        warm = self.args.warmup if flows > 1 else min(self.args.warmup, 0.5)
        wpps = max(20000, 4 * flows) if flows > 1 else 5000
        secs = self.args.seconds
        kp0 = None
        cache = self.kp_caches.get(engine)
        pid = self.pids[engine]
        if engine == "ovs-xdp":
            self.ovs_xdp_ports(True)
        g = self.gen(engine, flows, secs + 0.5, pps=0, warmup=warm, warmup_pps=wpps)
        try:
            time.sleep(warm + 0.4)
            if cache:
                kp0 = cache.get()
            cpu0 = cpu_seconds(pid) if pid else self.softirq_seconds()
            c0, rx0, t0 = (self.counter(engine, b, "tx_packets"),
                           self.counter(engine, a, "rx_packets"), time.monotonic())
            time.sleep(secs - 0.2)
            c1, rx1, t1 = (self.counter(engine, b, "tx_packets"),
                           self.counter(engine, a, "rx_packets"), time.monotonic())
            cpu1 = cpu_seconds(pid) if pid else self.softirq_seconds()
            kp1 = cache.get() if cache else None
            out, err = g.communicate(timeout=secs + warm + 30)
        finally:
            self.procs.stop(g)
            if engine == "ovs-xdp":
                self.ovs_xdp_ports(False)
        if g.returncode:
            raise RuntimeError("pktgen: %s" % err.strip())
        gen = json.loads(out)
        pps = (c1 - c0) / (t1 - t0)
        offered = (rx1 - rx0) / (t1 - t0)
        d = {"layout": layout, "engine": engine, "flows": flows, "pps": pps,
             "offered_pps": offered,
             "generator_pps": gen["sent"] / gen["seconds"] if gen["seconds"] else 0,
             "cpu_ns_per_packet": 1e9 * (cpu1 - cpu0) / max(1, c1 - c0)}
        if kp0 and kp1:
            hits, misses = kp1["hits"] - kp0["hits"], kp1["misses"] - kp0["misses"]
            d["kp_cache"] = {"hits": hits, "misses": misses, "entries": kp1["entries"],
                             "insert_failures": kp1["insert_failures"] - kp0["insert_failures"],
                             "evictions": kp1["evictions"] - kp0["evictions"]}
            if engine == "kp":
                self.kp_stats = kp1
        self.details.append(d)
        return d

    def run(self):
        self.setup()
        order = list(self.engines)
        for phase, flows in enumerate((1, self.args.flows)):
            log("\n== %d flow%s ==" % (flows, "s" if flows > 1 else ""))
            if phase == 0:
                self.install(0, 1)
            else:
                self.install(1, flows)
            for e in [e for e in self.engines if e != "bare"]:
                if e == "ovs-xdp":
                    self.ovs_xdp_ports(True)
                try:
                    n = self.verify_translation(e)
                finally:
                    if e == "ovs-xdp":
                        self.ovs_xdp_ports(False)
                log("  %-7s translation checked at the sink (%d frames: pod MAC, pod "
                    "IP:port, checksums)" % (e, n))
            for layout in self.layouts:
                self.set_layout(layout)
                log("  -- receive layout: %s" % layout)
                for r in range(self.args.rounds):
                    for e in order:
                        d = self.measure(layout, e, flows)
                        self.results[layout][flows][e].append(d["pps"])
                        self.cpu_ns[layout][flows][e].append(d["cpu_ns_per_packet"])
                        extra = ""
                        if "kp_cache" in d:
                            kc = d["kp_cache"]
                            extra = "  cache: %d entries, %.2f%% misses" % (
                                kc["entries"],
                                100.0 * kc["misses"] / max(1, kc["hits"] + kc["misses"]))
                        if d["offered_pps"] < 1.05 * d["pps"]:
                            extra += "  [generator-limited: offered ~ forwarded]"
                            d["generator_limited"] = True
                        log("  round %d  %-7s %9.0f pps  (offered %6.0f kpps, %5.0f ns "
                            "CPU/packet)%s" % (r + 1, e, d["pps"], d["offered_pps"] / 1000,
                                               d["cpu_ns_per_packet"], extra))
                    order = order[1:] + order[:1]       # rotate who goes first

    def close(self):
        for br in getattr(self, "bridges", {}).values():
            br.close()
        self.bridges = {}
        if self.ovs_saved is not None:
            for k, v in self.ovs_saved.items():
                if v:
                    sh("ovs-vsctl", "--timeout=5", "set", "Open_vSwitch", ".",
                       "other_config:%s=%s" % (k, v), check=False)
                else:
                    sh("ovs-vsctl", "--timeout=5", "remove", "Open_vSwitch", ".",
                       "other_config", k, check=False)
            self.ovs_saved = None


# --------------------------------------------------------------------------- new flows

def static_flow_line(out_port=2):
    """One wildcard DNAT flow (any client, any source port, to VIP:80): a static
    service flow, so that new 5-tuples need no controller."""
    return ("table=0,priority=100,udp,nw_dst=%s,tp_dst=%d "
            "actions=set_field:%s->eth_src,set_field:%s->eth_dst,set_field:%s->ip_dst,"
            "set_field:%d->udp_dst,output:%d"
            % (VIP, VIP_PORT, GW_MAC, POD_MAC, POD_IP, POD_PORT, out_port))


class NewFlowsBench:
    """New flows per second through a static flow: the switch holds one wildcard DNAT
    flow; the generator sends one frame per new UDP 5-tuple (each run from fresh
    client addresses) at a rate above what either switch keeps up with; the figure is
    the frames forwarded to the sink per second until its counter settles.  Every frame
    is the first of its flow, so an exact-match cache never helps: kp-switch either
    classifies each in Python (no megaflows) or answers it from a megaflow in C."""

    def __init__(self, args, exe, topo, procs, tmpdir):
        self.args, self.exe, self.topo, self.procs, self.tmp = args, exe, topo, procs, tmpdir
        self.results = {"kp": [], "ovs": []}
        self.details = []
        self.run_no = 0

    def setup(self):
        t = self.topo
        self.ns_src = t.ns("nfsrc")
        self.ns_dst = t.ns("nfdst")
        self.links = {}
        for e, c in (("kp", "k"), ("ovs", "o")):
            a = t.link("wg" + c, self.ns_src)       # not "no": an `ip link` keyword
            b = t.link("ws" + c, self.ns_dst)
            self.links[e] = (a, b, "wg" + c)
        a, b, _ = self.links["kp"]
        self.kp_port = free_port()
        self.kp = start_kp_switch(self.procs, [a, b], self.kp_port, self.args.buckets,
                                  os.path.join(self.tmp, "kp-switch-newflows.log"))
        self.kp_cache = KpCacheStats(self.kp_port)
        a, b, _ = self.links["ovs"]
        self.ovs = OvsBridge(t.tag + "nf", [a, b])
        targets = {"kp": "tcp:127.0.0.1:%d" % self.kp_port, "ovs": self.ovs.target}
        for e, target in targets.items():
            sh("ovs-ofctl", "-O", "OpenFlow13", "add-flow", target, static_flow_line())
            out = sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", target, capture=True)
            if "priority=100" not in out:
                raise RuntimeError("%s: the static flow did not go in" % e)

    def measure(self, engine):
        a, b, gen_if = self.links[engine]
        n = int(self.args.newflow_rate * self.args.newflow_seconds)
        self.run_no += 1
        src = "10.%d.0.1" % (100 + self.run_no)        # fresh 5-tuples every run
        kp0 = self.kp_cache.get() if engine == "kp" else None
        c0, t0 = read_counter(b, "tx_packets"), time.monotonic()
        g = self.procs.start(
            ["ip", "netns", "exec", self.ns_src, "taskset", "-c", str(GEN_CPU),
             self.exe["pktgen"], gen_if, "--dst-mac", GW_MAC, "--src-ip", src,
             "--dst-ip", VIP, "--dport", str(VIP_PORT), "--sport", "10000",
             "--flows", str(n), "--pps", str(self.args.newflow_rate), "--once"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last, t_last = c0, t0
        try:
            # Until the generator is done and the sink's counter has not moved for 0.5 s
            # (the slow path may still be working through its queue).
            while True:
                time.sleep(0.05)
                c, now = read_counter(b, "tx_packets"), time.monotonic()
                if c != last:
                    last, t_last = c, now
                elif g.poll() is not None and now - t_last > 0.5:
                    break
                if now - t0 > self.args.newflow_seconds + 60:
                    break
            out, err = g.communicate(timeout=30)
        finally:
            self.procs.stop(g)
        if g.returncode:
            raise RuntimeError("pktgen: %s" % err.strip())
        gen = json.loads(out)
        delivered = last - c0
        d = {"engine": engine, "offered": n, "offered_rate": self.args.newflow_rate,
             "generator_seconds": gen["seconds"], "delivered": delivered,
             "new_flows_per_s": delivered / max(1e-9, t_last - t0)}
        if kp0 is not None:
            kp1 = self.kp_cache.get()
            d["kp_cache"] = {k: kp1.get(k, 0) - kp0.get(k, 0)
                             for k in ("hits", "mf_hits", "misses", "inserts", "mf_inserts")}
        self.details.append(d)
        return d

    def run(self):
        self.setup()
        for r in range(self.args.newflow_rounds):
            for e in (("kp", "ovs") if r % 2 == 0 else ("ovs", "kp")):
                d = self.measure(e)
                self.results[e].append(d["new_flows_per_s"])
                extra = ""
                if "kp_cache" in d:
                    kc = d["kp_cache"]
                    extra = "  cache: %d megaflow hits, %d exact hits, %d misses" % (
                        kc["mf_hits"], kc["hits"], kc["misses"])
                log("  round %d  %-4s %9.0f new flows/s  (%d of %d offered at %d/s)%s"
                    % (r + 1, e, d["new_flows_per_s"], d["delivered"], d["offered"],
                       d["offered_rate"], extra))

    def close(self):
        if getattr(self, "ovs", None):
            self.ovs.close()


# --------------------------------------------------------------------------- sessions

SINK = r'''
import json, signal, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
first = {}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
while not stop:
    try:
        _, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    if peer not in first:
        first[peer] = time.monotonic()
        if len(first) == 1:
            print("hit", flush=True)
print(json.dumps({"peers": [[p[0], p[1], t] for p, t in first.items()]}), flush=True)
'''


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


class SessionsBench:
    """New sessions per second through kp_app: a client namespace sends one UDP frame per
    new flow (distinct source ports) to VIP:80 at a fixed rate; a pod namespace (two
    pod addresses, one interface) counts the distinct flows that reach it."""

    PODS = ("10.0.0.101", "10.0.0.102")
    CLIENT = "10.0.0.11"

    def __init__(self, args, exe, topo, procs, tmpdir):
        self.args, self.exe, self.topo, self.procs, self.tmp = args, exe, topo, procs, tmpdir
        self.results = {}
        self.ovs_br = None

    # engine -> (the switch, kp_app's --kp-mode); "kernel" is the kernel's own forwarding
    # with kube-proxy's iptables rules (DNAT + conntrack) in a router namespace.
    ENGINES = {"kp": ("kp", "lb"), "kp-pi": ("kp", "packet-in"), "ovs": ("ovs", "ct"),
               "ovs-pi": ("ovs", "packet-in"), "kernel": ("kernel", None)}

    def setup(self):
        t = self.topo
        self.ns_cli = t.ns("cli")
        self.ns_pod = t.ns("pod")
        self.ns_rt = t.ns("rt")
        for ns in (self.ns_cli, self.ns_pod, self.ns_rt):
            t.nsexec(ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        self.links = {}
        for e, c in (("kp", "k"), ("ovs", "o"), ("kernel", "n")):
            cli = t.link("c" + c, self.ns_cli, ["%s/24" % self.CLIENT] if c == "k" else [])
            pod = t.link("p" + c, self.ns_pod, ["%s/24" % a for a in self.PODS] if c == "k" else [])
            self.links[e] = (cli, pod, "c" + c, "p" + c)
        self.links["ovs-pi"] = self.links["ovs"]
        self.links["kp-pi"] = self.links["kp"]
        self._kernel_router(*self.links["kernel"][:2])

    def _kernel_router(self, cli_end, pod_end):
        """The kernel peer: the router namespace takes both root ends and forwards with
        kube-proxy's iptables chains for the VIP (a statistic rule per pod, DNAT)."""
        t, rt = self.topo, self.ns_rt
        router_namespace(t, rt, cli_end, pod_end)
        t.nsexec(rt, "ip", "route", "add", self.CLIENT + "/32", "dev", cli_end)
        for pod in self.PODS:
            t.nsexec(rt, "ip", "route", "add", pod + "/32", "dev", pod_end)
        rules = ["-N KUBE-SERVICES", "-A PREROUTING -j KUBE-SERVICES", "-N KUBE-SVC-BENCH",
                 "-A KUBE-SERVICES -d %s/32 -p udp --dport %d -j KUBE-SVC-BENCH"
                 % (VIP, VIP_PORT)]
        for i, pod in enumerate(self.PODS):
            rules += ["-N KUBE-SEP-%d" % i, "-A KUBE-SEP-%d -p udp -j DNAT --to-destination "
                      "%s:%d" % (i, pod, POD_PORT)]
        for i, pod in enumerate(self.PODS):
            left = len(self.PODS) - i
            rules.append("-A KUBE-SVC-BENCH " + ("-m statistic --mode random --probability "
                                                 "%.5f " % (1.0 / left) if left > 1 else "")
                         + "-j KUBE-SEP-%d" % i)
        for rule in rules:
            t.nsexec(rt, "iptables", "-t", "nat", *rule.split())

    def _use(self, engine):
        """Give the client and pod addresses to this engine's interfaces only."""
        t = self.topo
        ends = {link[2:] for link in self.links.values()}     # (some engines share theirs)
        for cif, pif in sorted(ends, key=lambda e: e == self.links[engine][2:]):
            op = "add" if (cif, pif) == self.links[engine][2:] else "del"
            for ns, ifn, addrs in ((self.ns_cli, cif, [self.CLIENT]), (self.ns_pod, pif, self.PODS)):
                for a in addrs:
                    t.nsexec(ns, "ip", "addr", op, "%s/24" % a, "dev", ifn, check=False)
        t.nsexec(self.ns_cli, "ip", "route", "replace", "default", "via", "10.0.0.1",
                 "dev", self.links[engine][2])
        t.nsexec(self.ns_pod, "ip", "route", "replace", "default", "via", "10.0.0.1",
                 "dev", self.links[engine][3])

    def run_one(self, engine, base_port):
        if engine == "kernel":
            return self._run_kernel(base_port)
        args = self.args
        switch, mode = self.ENGINES[engine]
        cli_root, pod_root, cif, pif = self.links[engine]
        self._use(engine)
        of_port, ws_port = free_port(), free_port()
        ryu_log = os.path.join(self.tmp, "ryu-%s.log" % engine)
        env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
        ctl = self.procs.start(
            ["taskset", "-c", str(GEN_CPU), os.path.join(VENV_BIN, "ryu-manager"), "kp_app",
             "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(of_port),
             "--wsapi-host", "127.0.0.1", "--wsapi-port", str(ws_port), "--log-file", ryu_log]
            + (["--kp-mode", mode] if mode else []),
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sw = None
        try:
            wait_listening(of_port, ctl)
            wait_listening(ws_port, ctl)
            api = "http://127.0.0.1:%d/v1" % ws_port
            http("PUT", api + "/conf", {"node_ip": "10.0.0.1", "buckets": 65536})
            http("POST", api + "/vips", {"prefix": VIP + "/32", "port": VIP_PORT,
                                         "target_port": POD_PORT, "protocol": "udp"})
            http("POST", api + "/vips/%s/32/%d/pods" % (VIP, VIP_PORT),
                 {"addresses": list(self.PODS)})
            controller = "tcp:127.0.0.1:%d" % of_port
            if switch == "kp":
                sw = start_kp_switch(self.procs, [cli_root, pod_root], free_port(), 16384,
                                     os.path.join(self.tmp, "kp-switch-sessions.log"),
                                     controller=controller)
            else:
                self.ovs_br = OvsBridge(self.topo.tag + "bs", [cli_root, pod_root],
                                        controller=controller)
            sw_pid = sw.pid if sw is not None else OvsDaemon.pid_now()
            d = self._measure(engine, cif, lambda: read_counter(pod_root, "tx_packets"),
                              base_port, (ctl.pid, sw_pid))
            try:
                vip = http("GET", api + "/vips/%s/32/%d" % (VIP, VIP_PORT))
                d["kp_app_new_sessions"] = vip["counters"]["new_sessions"]
                d["kp_app_table_full"] = vip["counters"]["table_full"]
            except Exception:
                pass
            return d
        finally:
            if sw is not None:
                self.procs.stop(sw)
            if self.ovs_br is not None:
                self.ovs_br.close()
                self.ovs_br = None
            self.procs.stop(ctl)

    def _measure(self, engine, cif, pod_packets, base_port, cpu_pids):
        """Offer the new flows and count what reaches the pod; the figures. cpu_pids:
        (controller, switch), 0 for none."""
        args = self.args
        sink = None
        try:
            sink = self.procs.start(["ip", "netns", "exec", self.ns_pod, "taskset", "-c",
                                     str(GEN_CPU), sys.executable, "-c", SINK, str(POD_PORT)],
                                    stdout=subprocess.PIPE, text=True)
            if sink.stdout.readline().strip() != "ready":
                raise RuntimeError("sink did not start")
            cli_mac = self.topo.ns_mac(self.ns_cli, cif)
            # Readiness: one flow, resent, until it reaches the pod (switch connected,
            # pods' MACs learned).
            deadline = time.monotonic() + 30
            ready = False
            while time.monotonic() < deadline and not ready:
                g = self._gen(cif, cli_mac, base_port - 1, 1, 200, once=True)
                g.wait(10)
                ready = bool(select.select([sink.stdout], [], [], 0.5)[0])
            if ready and sink.stdout.readline().strip() != "hit":
                ready = False
            if not ready:
                raise RuntimeError("%s: the first flow never reached the pod" % engine)
            n = int(args.session_rate * args.session_seconds)
            rx0 = pod_packets()
            cpu0 = tuple(cpu_seconds(p) if p else 0.0 for p in cpu_pids)
            t_send = time.monotonic()
            g = self._gen(cif, cli_mac, base_port, n, args.session_rate, once=True)
            out, err = g.communicate(timeout=args.session_seconds + 30)
            t_sent = time.monotonic()
            time.sleep(2.0)                                       # grace for held packets
            cpu1 = tuple(cpu_seconds(p) if p else 0.0 for p in cpu_pids)
            sink.send_signal(signal.SIGTERM)
            res = json.loads(sink.communicate(timeout=10)[0].strip().splitlines()[-1])
            sink = None
            peers = [p for p in res["peers"] if base_port <= p[1] < base_port + n]
            times = sorted(p[2] for p in peers)
            in_window = sum(1 for x in times if x <= t_sent)
            end = max(t_sent, times[-1]) if times else t_sent
            d = {"engine": engine, "offered": n, "offered_rate": args.session_rate,
                 "delivered": len(peers),
                 "delivered_in_send_window": in_window,
                 "send_seconds": t_sent - t_send,
                 "sessions_per_s": len(peers) / (end - t_send) if peers else 0.0,
                 "lost": n - len(peers),
                 # CPU per session reached: both sides of the OpenFlow channel
                 "controller_cpu_us": 1e6 * (cpu1[0] - cpu0[0]) / max(1, len(peers)),
                 "switch_cpu_us": 1e6 * (cpu1[1] - cpu0[1]) / max(1, len(peers)),
                 "pod_link_packets": pod_packets() - rx0}
            return d
        finally:
            if sink is not None:
                self.procs.stop(sink)

    def _run_kernel(self, base_port):
        """The kernel peer: no controller, no switch process; the router namespace's
        kernel forwards with kube-proxy's rules (its CPU is the senders' softirq time,
        not a process's: not counted)."""
        cli_root, pod_root, cif, pif = self.links["kernel"]
        self._use("kernel")

        def pod_packets():
            out = self.topo.nsexec(self.ns_rt, "cat", "/sys/class/net/%s/statistics/"
                                   "tx_packets" % pod_root, capture=True)
            return int(out)
        d = self._measure("kernel", cif, pod_packets, base_port, (0, 0))
        d["controller_cpu_us"] = d["switch_cpu_us"] = None
        return d

    def _gen(self, ifname, mac, sport, flows, rate, once):
        args = ["ip", "netns", "exec", self.ns_cli, "taskset", "-c", str(GEN_CPU),
                self.exe["pktgen"], ifname, "--src-mac", mac, "--dst-mac", GW_MAC,
                "--src-ip", self.CLIENT, "--dst-ip", VIP, "--dport", str(VIP_PORT),
                "--sport", str(sport), "--flows", str(flows), "--pps", str(rate),
                "--batch", "8"]
        if once:
            args.append("--once")
        return self.procs.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self):
        self.setup()
        engines = list(self.ENGINES)
        for r in range(self.args.session_rounds):
            for e in (engines if r % 2 == 0 else engines[::-1]):
                d = self.run_one(e, 20000)
                self.results.setdefault(e, []).append(d)
                log("  round %d  %-4s %7.0f new sessions/s  (%d of %d offered at %d/s reached "
                    "the pod, %d within the send window)"
                    % (r + 1, e, d["sessions_per_s"], d["delivered"], d["offered"],
                       d["offered_rate"], d["delivered_in_send_window"]))


# --------------------------------------------------------------------------- memory

def cache_memory(exe, kp_stats, buckets):
    sizes = json.loads(sh(exe["cache_sizes"], capture=True))
    slot = sizes["bucket"] / sizes["ways"] + sizes["entry"]
    table = buckets * (sizes["bucket"] + sizes["ways"] * sizes["entry"])
    fixed = (sizes["flow_cache"] + (sizes["prog_pool"] + 1) * sizes["prog_slot"]
             + sizes["max_flow_ids"] * sizes.get("flow_inval", 4)
             + (sizes.get("addr_pool", -1) + 1) * (sizes.get("addr_slot", 0) + 8)
             + sizes.get("megaflows", 0))
    out = {"sizes": sizes, "bytes_per_cached_flow": slot,
           "bucket_share_per_flow": sizes["bucket"] / sizes["ways"],
           "entry_per_flow": sizes["entry"],
           "megaflow_bytes_per_flow": sizes.get("mf_bytes_per_flow"),
           "table_bytes": table, "fixed_bytes": fixed, "buckets": buckets}
    if kp_stats and kp_stats.get("entries"):
        out["entries_live"] = kp_stats["entries"]
        out["allocated_per_live_flow"] = (table + fixed) / kp_stats["entries"]
    return out


# --------------------------------------------------------------------------- report

def verdict(ok):
    return "PASS" if ok else "MISS"


def report(args, pps, sessions, mem, cpu_note, newflows=None):
    summary = {"goals": GOALS, "pps": {}, "checks": []}
    log("\n" + "=" * 78)
    log("Packets per second, 64-byte UDP, kube-proxy DNAT flow (switch side on core %d, "
        "generator on core %d)" % (SWITCH_CPU, GEN_CPU))
    log("medians of %d rounds x %.1f s; each value: pps at the sink.  kp-xdp: kp-switch on "
        "AF_XDP ports (%s), kp-afpkt: on AF_PACKET; ovs-afpkt / ovs-xdp: Open vSwitch "
        "userspace (netdev) on AF_PACKET / AF_XDP ports; kernel: the kernel's forwarding "
        "with iptables DNAT + conntrack; bare: AF_PACKET rx -> tx, no lookup"
        % (args.rounds, args.seconds, pps.kp_port_io.get("kp", "?") if pps else "?"))
    pair = (("kp", "kernel"), ("kp", "ovs-xdp"), ("kp", "ovs"), ("kp", "bare"),
            ("kp", "kp-afp"))
    goal_of = {"kernel": "kp_over_kernel", "ovs-xdp": "kp_over_ovs_xdp", "ovs": "kp_over_ovs",
               "bare": "kp_over_bare"}
    if pps:
        for layout, by_flows in pps.results.items():
            log("\nreceive layout %s: the kernel's receive work for port 1 on core %d%s"
                % (layout, SWITCH_CPU if layout == "rx-switch-core" else GEN_CPU,
                   " (RPS; AF_XDP's receive runs in the veth's NAPI before RPS, on the "
                   "generator's core either way)" if layout == "rx-switch-core" else ""))
            have = pps.engines
            pair_here = [(a, b) for a, b in pair if a in have and b in have]
            log("%-7s " % "flows" + " ".join("%10s" % ENGINE_TITLES[e] for e in have) +
                "  " + " ".join("%9s" % ("kp/" + ENGINE_TITLES[b]) for _, b in pair_here))
            summary["pps"][layout] = {}
            for flows, by in by_flows.items():
                m = {e: median(v) for e, v in by.items()}
                ratios = {b: (m[a] / m[b] if m[b] else float("nan")) for a, b in pair_here}
                log("%-7d " % flows + " ".join("%10.0f" % m[e] for e in have) + "  " +
                    " ".join("%9.2f" % ratios[b] for _, b in pair_here))
                n = min(len(v) for v in by.values())
                paired = {b: median([by["kp"][i] / by[b][i] for i in range(n) if by[b][i]])
                          for _, b in pair_here}
                summary["pps"][layout][str(flows)] = {
                    "median_pps": m, "runs_pps": by,
                    "kp_over": ratios, "paired_kp_over": paired}
                for b, g in goal_of.items():
                    if b not in ratios:
                        continue
                    summary["checks"].append({
                        "goal": "kp >= %.1fx %s, %d flows, %s" % (GOALS[g], ENGINE_TITLES[b],
                                                                 flows, layout),
                        "value": ratios[b], "pass": ratios[b] >= GOALS[g]})
            log("  paired per round (kp/peer within a round, median): " + "; ".join(
                "%s flows: %s" % (f, ", ".join("%s %.2f" % (ENGINE_TITLES[b], v)
                                              for b, v in d["paired_kp_over"].items()))
                for f, d in summary["pps"][layout].items()))
            log("CPU time per forwarded packet (ns; the switch process's user + system; "
                "kernel: softirq time of all cores; ovs-xdp: its PMD thread polls)")
            summary.setdefault("cpu_ns_per_packet", {})[layout] = {}
            for flows, by in pps.cpu_ns[layout].items():
                c = {e: median(v) for e, v in by.items()}
                log("%-7d " % flows + " ".join("%10.0f" % c[e] for e in have))
                summary["cpu_ns_per_packet"][layout][str(flows)] = {"median": c, "runs": by}
        summary["kp_port_io"] = pps.kp_port_io
        summary["pps_runs"] = pps.details
    if sessions and sessions.results:
        log("\nNew sessions per second (first packet of each new UDP flow counted at the "
            "pod): kp = kp_app + kp-switch making the sessions in its C data path (lb), "
            "kp-pi = kp_app + kp-switch in packet-in mode, ovs = kp_app + Open vSwitch "
            "making the sessions (ct), ovs-pi = kp_app + Open vSwitch in packet-in mode, "
            "kernel = the kernel's forwarding with kube-proxy's iptables DNAT + conntrack")
        log("%-10s %12s %10s %10s %16s %12s" % ("engine", "sessions/s", "delivered", "offered",
                                                 "controller CPU", "switch CPU"))
        sm = {}

        def cpu(runs, key):
            values = [d[key] for d in runs if d[key] is not None]
            return "%13.0f µs" % median(values) if values else "%16s" % "-"
        for e, runs in sessions.results.items():
            sm[e] = median([d["sessions_per_s"] for d in runs])
            log("%-10s %12.0f %10d %10d %s %s" % (
                e, sm[e], median([d["delivered"] for d in runs]), runs[0]["offered"],
                cpu(runs, "controller_cpu_us"), cpu(runs, "switch_cpu_us")[3:]))
        log("(CPU: user + system time per session that reached the pod; the kernel's is "
            "softirq time of the senders, not counted)")
        ratios = {"%s/%s" % (a, b): sm[a] / sm[b] for a, b in (
            ("kp", "ovs"), ("kp", "kernel"), ("ovs", "kernel"), ("kp", "kp-pi"),
            ("ovs", "ovs-pi"))
            if sm.get(a) is not None and sm.get(b)}
        log("  ".join("%s: %.2f" % kv for kv in ratios.items()))
        summary["sessions"] = {"median_sessions_per_s": sm, "runs": sessions.results,
                               "ratios": ratios,
                               "kp_over_ovs": ratios.get("kp/ovs")}
    if newflows and newflows.details:
        nm = {e: median(v) for e, v in newflows.results.items() if v}
        log("\nNew flows per second through a static DNAT flow (one frame per new UDP "
            "5-tuple, offered at %d/s)" % args.newflow_rate)
        for e, v in sorted(nm.items()):
            log("  %-10s %10.0f new flows/s   (runs: %s)"
                % (e, v, ", ".join("%.0f" % x for x in newflows.results[e])))
        if nm.get("ovs"):
            log("  kp/ovs: %.2f" % (nm["kp"] / nm["ovs"]))
        summary["new_flows"] = {"median_new_flows_per_s": nm, "runs": newflows.details,
                                "kp_over_ovs": nm["kp"] / nm["ovs"] if nm.get("ovs") else None}
    log("\nkp-switch flow cache memory (switch/csrc/flow_cache.h, sizes from the compiler)")
    s = mem["sizes"]
    log("  bucket %d B / %d ways = %.0f B per slot in the bucket line, + out-of-line entry "
        "%d B (key %d B, flow ids)" % (s["bucket"], s["ways"], mem["bucket_share_per_flow"],
                                       s["entry"], s["key"]))
    log("  = %.0f bytes per cached flow (goal <= %d); table of %d buckets: %.1f MiB, "
        "fixed part (program and IPv6 address pools, invalidation epochs, megaflow "
        "tier of %d x %d B): %.1f MiB"
        % (mem["bytes_per_cached_flow"], GOALS["cache_bytes_per_flow"], mem["buckets"],
           mem["table_bytes"] / 2**20, s.get("mf_entries", 0), s.get("mf_bytes_per_flow", 0),
           mem["fixed_bytes"] / 2**20))
    if "allocated_per_live_flow" in mem:
        log("  with %d live entries: %.0f bytes allocated per live flow"
            % (mem["entries_live"], mem["allocated_per_live_flow"]))
    summary["cache_memory"] = mem
    summary["checks"].append({"goal": "cache bytes per flow <= %d" % GOALS["cache_bytes_per_flow"],
                              "value": mem["bytes_per_cached_flow"],
                              "pass": mem["bytes_per_cached_flow"] <= GOALS["cache_bytes_per_flow"]})
    log("\n" + "-" * 78 + "\nSUMMARY")
    for layout, by_flows in summary["pps"].items():
        for flows, v in by_flows.items():
            log("  %-14s %5s flows: kp %.0f pps | " % (layout, flows, v["median_pps"]["kp"]) +
                " | ".join("kp/%s %.2f" % (ENGINE_TITLES[b], r) for b, r in v["kp_over"].items()))
    if "new_flows" in summary:
        nm = summary["new_flows"]["median_new_flows_per_s"]
        log("  new flows/s through a static flow: kp %.0f, ovs %.0f"
            % (nm.get("kp", 0), nm.get("ovs", 0)))
    if "sessions" in summary:
        sm = summary["sessions"]["median_sessions_per_s"]
        log("  new sessions/s: " + ", ".join("%s %.0f" % kv for kv in sm.items()))
    for c in summary["checks"]:
        log("  %s  %-32s %.2f" % (verdict(c["pass"]), c["goal"], c["value"]))
    log("  (verdicts on the ratio of medians)")
    if cpu_note:
        log("  note: " + cpu_note)
    log("-" * 78)
    return summary


# --------------------------------------------------------------------------- main

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
