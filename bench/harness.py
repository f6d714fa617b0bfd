"""The bench's own harness (bench/run.py and its sections): where things run (the
switch on one core, the generator on the other), processes and namespaces it made and
removes, Open vSwitch's daemon and bridges, kp-switch started for a section."""
import ipaddress
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

from kp_lab.controller import free_port  # noqa: F401 (the sections take it from here)
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


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")
