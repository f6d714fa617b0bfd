"""Section 3 of ./run bench (bench/run.py): new flows per second through one static
wildcard DNAT flow, kp-switch against Open vSwitch."""
import json
import os
import subprocess
import time

from harness import (GEN_CPU, GW_MAC, KpCacheStats, OvsBridge, POD_IP, POD_MAC, POD_PORT, VIP,
                     VIP_PORT, free_port, log, read_counter, sh, start_kp_switch)


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
