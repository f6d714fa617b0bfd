"""New TCP connections per second through one ClusterIP while 1, 1,000 and 10,000
Services are installed (issue #18): kp_app + kp-switch (lb mode), and the kernel's
forwarding with kube-proxy's rules, in its iptables mode (a KUBE-SERVICES rule per
Service, KUBE-SVC chains of `statistic` rules, KUBE-SEP DNAT chains) and in its nftables
mode (one verdict map from address . protocol . port to the Service's chain, `numgen`
over its endpoints). Every Service has three endpoints; the measured one has real pods,
the others addresses nobody answers for.

Each measurement is `tcp-connects` from a client namespace (kp_lab's agent): one
connection per request, a real handshake every time, one after the other, for a few
seconds; the rate, and the connections that failed. The client is one Python process on
a shared core, so a rate near its own ceiling says "the data path kept up", not how far
it could go: the ratios that matter are each engine's at 10,000 Services against its own
at 1, and kp's against the kernel's at each scale (kube-proxy's rule for the measured
Service is in the middle of KUBE-SERVICES, where a linear scan pays half the chain).

Open vSwitch (ct mode) is measured at 1 Service only: ct mode programs each VIP's
new-connection table as flows (1,024 a VIP here), 10 million at 10,000 Services.

Run by bench/run.py (`./run bench`, `--skip-scale` leaves it out).
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "topologies"))

import kp_lab                                   # noqa: E402
from programming import _service                # noqa: E402

VIP, PORT = "10.96.0.10", 5000
SCALES = (1, 1_000, 10_000)
PODS = ("10.0.1.101", "10.0.1.102", "10.0.1.103")   # the kernel peers' pods
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, method: str = "GET", body=None):
    req = urllib.request.Request(url, method=method, headers={"Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with DIRECT.open(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def others(count: int) -> list:
    """The Services besides the measured one: `count` of them, three endpoints each."""
    return [o for i in range(count) for o in _service(i, 3, "10.2")]


class NsHost:
    """A network namespace this bench made, as kp_lab's traffic helpers take a host."""

    def __init__(self, name: str) -> None:
        self.name = self.ns = name

    def popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.ns] + list(cmd), **kw)

    def run(self, *cmd, check=True, stdin=None):
        return subprocess.run(["ip", "netns", "exec", self.ns] + list(cmd), check=check,
                              capture_output=True, text=True, input=stdin, timeout=300)


def connections(client, seconds: float) -> dict:
    r = kp_lab.start_tcp_connects(client, VIP, PORT, seconds=seconds).result()
    answered, failed = r.get("answered", 0), r.get("failed", 0) if "failed" in r else 1
    return {"rate": answered / max(r.get("seconds", seconds), 1e-9), "answered": answered,
            "failed": failed, "errors": r.get("errors", [])[:3] or
            ([r["error"]] if r.get("error") else [])}


# -- kp_app + a switch --------------------------------------------------------------------

class KpEngine:
    """kp_app with the kpnode topology on `switch`; Services applied over REST."""

    def __init__(self, switch: str, log) -> None:
        self.switch, self.log = switch, log
        self.ctl = kp_lab.ControllerProcess()
        self.ctl.start()
        self.ctl.wait_ready()
        self.lab = kp_lab.build_net("kpnode", switch=switch, controller_port=self.ctl.of_port,
                                    clients=1, pods=3)
        api = self.ctl.url("/v1")
        http(api + "/conf", "PUT", {"node_ip": "10.0.0.1"})
        http(api + "/vips", "POST", {"prefix": VIP + "/32", "port": PORT, "target_port": PORT,
                                     "protocol": "tcp"})
        http(api + "/vips/%s/32/%d/pods" % (VIP, PORT), "POST",
             {"addresses": [self.lab.ip(p.name) for p in self.lab.pods]})
        for pod in self.lab.pods:
            kp_lab.start_tcp_server(pod, PORT, name=pod.name)
        self.client = self.lab.clients[0]
        self.installed = 0

    def install(self, count: int) -> float:
        """`count` other Services, the whole manifest as one apply job with prune (as
        `kubectl get svc,endpointslices -A -o json | ku apply --prune -f -` feeds it):
        seconds until the job is done."""
        api = self.ctl.url("/v1")
        t0 = time.monotonic()
        job = http(api + "/kubernetes/apply?prune=true&wait=false", "POST",
                   {"apiVersion": "v1", "kind": "List", "items": others(count)})
        while job["state"] == "running":
            time.sleep(0.2)
            job = http(api + "/jobs/%d" % job["job"])
        if job["state"] != "done":
            raise RuntimeError("apply of %d Services failed: %s" % (count, job.get("error")))
        self.installed = count
        return time.monotonic() - t0

    def close(self) -> None:
        try:
            self.lab.close()
        finally:
            self.ctl.stop()


# -- the kernel with kube-proxy's rules --------------------------------------------------

class KernelEngine:
    """client ns -- router ns (kube-proxy's rules) -- pods ns; `mode` iptables or nft."""

    def __init__(self, mode: str, log) -> None:
        self.mode, self.log = mode, log
        tag = "kpsc%d" % (os.getpid() % 10000)
        self.names = [tag + "-c", tag + "-r", tag + "-p"]
        self.links = []
        cli, rt, pods = self.names
        for ns in self.names:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self._ns(ns, "ip", "link", "set", "lo", "up")
        for a, b, a_ns, b_ns in ((tag + "c0", tag + "c1", cli, rt), (tag + "p0", tag + "p1", pods, rt)):
            subprocess.run(["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer",
                            "name", b, "netns", b_ns], check=True)
        self._ns(cli, "ip", "addr", "add", "10.0.0.11/24", "dev", tag + "c0")
        self._ns(rt, "ip", "addr", "add", "10.0.0.1/24", "dev", tag + "c1")
        self._ns(rt, "ip", "addr", "add", "10.0.1.1/24", "dev", tag + "p1")
        for address in PODS:
            self._ns(pods, "ip", "addr", "add", address + "/24", "dev", tag + "p0")
        for ns, dev in ((cli, "c0"), (rt, "c1"), (rt, "p1"), (pods, "p0")):
            self._ns(ns, "ip", "link", "set", tag + dev, "up")
        self._ns(cli, "ip", "route", "add", "default", "via", "10.0.0.1")
        self._ns(pods, "ip", "route", "add", "default", "via", "10.0.1.1")
        self._ns(rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.client, self.pods = NsHost(cli), NsHost(pods)
        self.server = kp_lab.start_tcp_server(self.pods, PORT, name="pods")
        self.installed = 0
        self.install(0)

    def _ns(self, ns, *cmd, stdin=None):
        return subprocess.run(["ip", "netns", "exec", ns] + list(cmd), check=True,
                              capture_output=True, text=True, input=stdin, timeout=600)

    def install(self, count: int) -> float:
        """The rules for the measured Service and `count` others, loaded whole (as
        kube-proxy's full sync does): seconds taken."""
        services = [("%d.%d.%d.%d" % (10, 100 + i // 65536, (i // 256) % 256, i % 256),
                     ["10.2.%d.%d" % ((3 * i + j) // 256 % 256, (3 * i + j) % 256)
                      for j in range(3)], 80) for i in range(count)]
        services.insert(count // 2, (VIP, list(PODS), PORT))
        text = self._iptables(services) if self.mode == "iptables" else self._nft(services)
        t0 = time.monotonic()
        if self.mode == "iptables":
            self._ns(self.names[1], "iptables-restore", stdin=text)
        else:
            self._ns(self.names[1], "nft", "-f", "-", stdin=text)
        self.installed = count
        return time.monotonic() - t0

    @staticmethod
    def _iptables(services) -> str:
        lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
                 ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]"]
        rules = ["-A PREROUTING -j KUBE-SERVICES"]
        for i, (ip, eps, port) in enumerate(services):
            lines.append(":KUBE-SVC-%d - [0:0]" % i)
            rules.append("-A KUBE-SERVICES -d %s/32 -p tcp -m tcp --dport %d -j KUBE-SVC-%d"
                         % (ip, port, i))
            for j, ep in enumerate(eps):
                lines.append(":KUBE-SEP-%d-%d - [0:0]" % (i, j))
                left = len(eps) - j
                chance = ("-m statistic --mode random --probability %.11f " % (1 / left)
                          if left > 1 else "")
                rules.append("-A KUBE-SVC-%d %s-j KUBE-SEP-%d-%d" % (i, chance, i, j))
                rules.append("-A KUBE-SEP-%d-%d -p tcp -m tcp -j DNAT --to-destination %s:%d"
                             % (i, j, ep, port))
        return "\n".join(lines + rules + ["COMMIT", ""])

    @staticmethod
    def _nft(services) -> str:
        out = ["flush ruleset", "table ip kube-proxy {"]
        out.append("  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;")
        out.append("    elements = { " + ", ".join(
            "%s . tcp . %d : goto svc-%d" % (ip, port, i)
            for i, (ip, _, port) in enumerate(services)) + " } }")
        for i, (_, eps, port) in enumerate(services):
            out.append("  chain svc-%d { numgen random mod %d vmap { %s } }" % (
                i, len(eps), ", ".join("%d : goto sep-%d-%d" % (j, i, j)
                                       for j in range(len(eps)))))
            for j, ep in enumerate(eps):
                out.append("  chain sep-%d-%d { meta l4proto tcp dnat to %s:%d }"
                           % (i, j, ep, port))
        out.append("  chain services { ip daddr . meta l4proto . th dport vmap @service-ips }")
        out.append("  chain nat-prerouting { type nat hook prerouting priority dstnat; "
                   "jump services }")
        out.append("}")
        return "\n".join(out) + "\n"

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            for ns in self.names:
                subprocess.run(["ip", "netns", "del", ns], check=False)


# -- the run -------------------------------------------------------------------------------

def run(log, seconds: float = 4.0, rounds: int = 2, scales=SCALES) -> dict:
    """{engine: {scale: {rate, failed, ...}}}: each engine's scales measured up, then
    down again (`rounds` passes, alternating), the best rate of each kept."""
    results = {}
    makers = [("kp", lambda: KpEngine("kpswitch", log)),
              ("iptables", lambda: KernelEngine("iptables", log)),
              ("nftables", lambda: KernelEngine("nft", log)),
              ("ovs", lambda: KpEngine("ovs", log))]
    for name, make in makers:
        engine_scales = (1,) if name == "ovs" else scales
        try:
            engine = make()
        except Exception as e:       # a peer that cannot run here is reported, not fatal
            why = (getattr(e, "stderr", None) or "").strip()
            log("  %-8s could not start: %s%s" % (name, e, " (%s)" % why if why else ""))
            continue
        try:
            mine = results[name] = {}
            order = list(engine_scales)
            for r in range(rounds):
                for scale in (order if r % 2 == 0 else order[::-1]):
                    took = engine.install(scale - 1)
                    connections(engine.client, 1.0)          # warm: ARP, caches
                    m = connections(engine.client, seconds)
                    m["install_s"] = took
                    best = mine.get(scale)
                    if best is None or m["rate"] > best["rate"]:
                        mine[scale] = dict(m, failed=m["failed"] + (best or {}).get("failed", 0))
                    elif m["failed"]:
                        best["failed"] += m["failed"]
                    log("  %-8s %6d Services: %6.0f connections/s, %d failed (installed in "
                        "%.1f s)%s" % (name, scale, m["rate"], m["failed"], took,
                                       "  " + "; ".join(m["errors"]) if m["errors"] else ""))
        finally:
            engine.close()
    return results


def summary(results: dict, log) -> dict:
    """kp's rate at its largest scale against its smallest, and against each peer at each
    scale; the verdicts of issue #18."""
    kp = results.get("kp", {})
    out = {}
    if kp:
        low, high = min(kp), max(kp)
        out["kp_10k_vs_1"] = kp[high]["rate"] / max(kp[low]["rate"], 1e-9)
        log("  kp at %d Services / kp at %d: %.2f (goal >= 0.90)" % (high, low, out["kp_10k_vs_1"]))
    for peer in ("iptables", "nftables", "ovs"):
        for scale, m in sorted(results.get(peer, {}).items()):
            if scale in kp:
                ratio = kp[scale]["rate"] / max(m["rate"], 1e-9)
                out["kp_vs_%s_%d" % (peer, scale)] = ratio
                log("  kp / %-8s at %6d Services: %.2f%s" % (
                    peer, scale, ratio, " (goal >= 1.0)" if peer == "iptables" else ""))
    out["failed"] = {e: sum(m["failed"] for m in r.values()) for e, r in results.items()}
    log("  failed connections: " + ", ".join("%s %d" % kv for kv in out["failed"].items()))
    return out
