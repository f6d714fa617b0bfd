"""Section 1 of ./run bench (bench/run.py): packets per second through one switch with
1 and 10,000 DNAT flows, every engine, both receive layouts, and CPU time per packet."""
import json
import os
import subprocess
import sys
import time

from harness import (CLIENT_IP, ENGINES, GEN_CPU, GW_MAC, KpCacheStats, LAYOUTS, OvsBridge, POD_IP,
                     POD_MAC, POD_PORT, SPORT0, SWITCH_CPU, VIP, VIP_PORT, add_flows, count_flows,
                     cpu_seconds, free_port, log, read_counter, router_namespace, sh,
                     start_kp_switch)


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
