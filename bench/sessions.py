"""Section 2 of ./run bench (bench/run.py): new sessions per second to a VIP through
kp_app with kp-switch, Open vSwitch (ct and packet-in) and the kernel's iptables path."""
import json
import os
import select
import signal
import subprocess
import sys
import time

from harness import (GEN_CPU, GW_MAC, OvsBridge, OvsDaemon, POD_PORT, REPO, VENV_BIN, VIP, VIP_PORT,
                     cpu_seconds, free_port, http, log, read_counter, router_namespace,
                     start_kp_switch, wait_listening)


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
