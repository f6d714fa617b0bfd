"""Test helpers for kp-switch: a tiny OpenFlow 1.3 controller, private network
namespaces with veth pairs, and a kp-switch process.

- `TestController` listens on a free TCP port; the switch connects to it.  It speaks
  OpenFlow 1.3 with Ryu's parser classes: `send()` serializes a Ryu message,
  `request()` returns the replies with the same xid (multipart parts joined), `expect()`
  waits for an async message of a type (packet-in, flow-removed, port-status...).
- `Hosts` creates namespaces named kpt-<random>-<i> whose eth0's veth peer stays in the
  root namespace (a switch port); `close()` deletes them, and is always called.
- `SwitchProcess` runs `kp-switch` on those ports and stops it with SIGTERM (only the
  PID it started).
"""
import os
import queue
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from kp_lab.controller import free_port  # noqa: F401 (the tests take it from here)
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

VENV_BIN = os.path.dirname(sys.executable)
# The SCTP end the tests run in namespaces (crafted packets: no SCTP sockets here).
SCTP_AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                          "topologies", "kp_lab", "sctp_agent.py")


def sctp_agent():
    """sctp_agent.py as a module, loaded by its path (kp_lab's package would import
    Mininet)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("kp_sctp_agent", SCTP_AGENT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
KP_SWITCH = os.path.join(VENV_BIN, "kp-switch")


def switch_args():
    """Extra kp-switch arguments every SwitchProcess gets (KP_TEST_SWITCH_ARGS, e.g.
    "--threads 2": the OpenFlow suites on two datapath threads), and the number of
    datapath threads they ask for."""
    extra = os.environ.get("KP_TEST_SWITCH_ARGS", "").split()
    threads = int(extra[extra.index("--threads") + 1]) if "--threads" in extra else 1
    return extra, threads


def steer_thread(sport, dport, threads):
    """The datapath thread kp-switch's fanout gives a TCP/UDP/SCTP packet (csrc/steer.h,
    written again here): the larger port, mixed."""
    return (((max(sport, dport) * 0x9E3779B1) & 0xFFFFFFFF) >> 16) % threads


class FakeDatapath:
    """What Ryu's message classes need to serialize and parse: ofproto modules."""
    ofproto = ofp
    ofproto_parser = parser
    id = 1

    def set_xid(self, msg):
        return msg.xid


DP = FakeDatapath()


class Channel:
    """One OpenFlow connection (either side of the TCP connect)."""

    def __init__(self, sock):
        self.sock = sock
        self.inbox = queue.Queue()
        self.xid = 0x1000
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _read(self):
        try:
            while True:
                head = self._recv_exact(8)
                version, type_, length, xid = struct.unpack("!BBHI", head)
                body = self._recv_exact(length - 8)
                raw = head + body
                try:
                    msg = ofproto_parser.msg(DP, version, type_, length, xid, raw)
                except Exception:
                    msg = None
                self.inbox.put((type_, xid, msg, raw))
        except (EOFError, OSError):
            pass
        finally:
            self.closed.set()

    def next_xid(self):
        self.xid += 1
        return self.xid

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, msg):
        if msg.xid is None:
            msg.set_xid(self.next_xid())
        msg.serialize()
        self.sock.sendall(bytes(msg.buf))
        return msg.xid

    def _get(self, pred, timeout):
        """First inbox message satisfying pred, keeping the others in order."""
        deadline = time.monotonic() + timeout
        kept, found = [], None
        while found is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if pred(item):
                found = item
            else:
                kept.append(item)
        for item in kept:
            self.inbox.put(item)
        # keep order roughly: re-queued items go to the back; tests do not depend on it
        return found

    def request(self, msg, timeout=5.0):
        """Send; the replies with the same xid (all multipart parts), as Ryu objects.
        An error reply is returned as the OFPErrorMsg."""
        xid = self.send(msg)
        out = []
        while True:
            item = self._get(lambda it: it[1] == xid, timeout)
            if item is None:
                raise TimeoutError("no reply to %s xid %d" % (type(msg).__name__, xid))
            type_, _, m, raw = item
            out.append(m)
            if type_ == ofp.OFPT_MULTIPART_REPLY and m.flags & ofp.OFPMPF_REPLY_MORE:
                continue
            return out

    def stats(self, msg, timeout=5.0):
        """A multipart request -> the list of body items of all replies."""
        replies = self.request(msg, timeout)
        if isinstance(replies[0], parser.OFPErrorMsg):
            raise AssertionError("error reply type=%d code=%d" % (replies[0].type, replies[0].code))
        body = []
        for r in replies:
            body.extend(r.body if isinstance(r.body, list) else [r.body])
        return body

    def barrier(self, timeout=5.0):
        """Send a barrier; returns the errors that came back before its reply."""
        xid = self.send(parser.OFPBarrierRequest(DP))
        errors = []
        deadline = time.monotonic() + timeout
        while True:
            item = self._get(lambda it: it[1] == xid or it[0] == ofp.OFPT_ERROR,
                             deadline - time.monotonic())
            if item is None:
                raise TimeoutError("no barrier reply")
            if item[1] == xid and item[0] == ofp.OFPT_BARRIER_REPLY:
                return errors
            errors.append(item[2])

    def check(self, msg):
        """Send msg + barrier; return the OFPErrorMsg it caused (or None)."""
        xid = self.send(msg)
        errs = [e for e in self.barrier() if e is not None and e.xid == xid]
        return errs[0] if errs else None

    def expect(self, type_, timeout=5.0, pred=lambda m: True):
        item = self._get(lambda it: it[0] == type_ and pred(it[2]), timeout)
        if item is None:
            raise TimeoutError("no message of type %d" % type_)
        return item[2]

    def drain(self, type_):
        """Drop queued messages of a type; returns them."""
        out, kept = [], []
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            (out if item[0] == type_ else kept).append(item[2])
        for k in kept:
            self.inbox.put(k)
        return out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def handshake(ch, send_hello=True):
    """Exchange hellos (1.3), ask for features; returns the features reply."""
    if send_hello:
        ch.send(parser.OFPHello(DP))
    ch.expect(ofp.OFPT_HELLO)
    return ch.request(parser.OFPFeaturesRequest(DP))[0]


class TestController:
    __test__ = False  # not a pytest class
    """Listens on a free port; `accept()` returns a Channel after the handshake."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(4)

    @property
    def target(self):
        return "tcp:127.0.0.1:%d" % self.port

    def accept(self, timeout=15.0):
        self.lsock.settimeout(timeout)
        sock, _ = self.lsock.accept()
        sock.settimeout(None)
        ch = Channel(sock)
        ch.features = handshake(ch)
        return ch

    def close(self):
        self.lsock.close()


def connect(port, timeout=10.0):
    """A management connection to a switch's --listen port, handshaken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.settimeout(None)
    ch = Channel(sock)
    ch.features = handshake(ch)
    return ch


# -- OpenFlow message shortcuts ------------------------------------------------------

def flow_mod(match=None, actions=None, instructions=None, priority=100, table_id=0, command=None,
             **kw):
    if instructions is None:
        instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions or [])]
    return parser.OFPFlowMod(DP, table_id=table_id, priority=priority,
                             command=ofp.OFPFC_ADD if command is None else command,
                             match=match or parser.OFPMatch(), instructions=instructions, **kw)


def delete_all(table_id=ofp.OFPTT_ALL):
    return parser.OFPFlowMod(DP, table_id=table_id, command=ofp.OFPFC_DELETE,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


def out(port, max_len=ofp.OFPCML_NO_BUFFER):
    return parser.OFPActionOutput(port, max_len)


# -- namespaces ----------------------------------------------------------------------

def sh(*args, check=True, timeout=30):
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


class Host:
    def __init__(self, ns, port_if, mac, ip4, ip6):
        self.ns, self.port_if, self.mac, self.ip4, self.ip6 = ns, port_if, mac, ip4, ip6

    def run(self, *args, check=True, timeout=30):
        return sh("ip", "netns", "exec", self.ns, *args, check=check, timeout=timeout)

    def popen(self, *args):
        return subprocess.Popen(("ip", "netns", "exec", self.ns) + args,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ping(self, ip, count=1, interval=0.2, wait=2):
        r = self.run("ping", "-c", str(count), "-i", str(interval), "-W", str(wait), ip, check=False,
                     timeout=count * interval + wait + 10)
        return r.returncode == 0


class Hosts(list):
    """n namespaces kpt-<tag>-<i>; host i: eth0 = 10.<net>.0.(i+1)/24, its veth peer
    (in the root namespace, a switch port) named kq<tag><i>."""

    def __init__(self, n, net=78):
        super().__init__()
        self.tag = secrets.token_hex(3)
        try:
            for i in range(n):
                ns = "kpt-%s-%d" % (self.tag, i)
                port_if = "kq%s%d" % (self.tag, i)
                mac = "02:6b:71:%s:%s:%02x" % (self.tag[:2], self.tag[2:4], i + 1)
                sh("ip", "netns", "add", ns)
                h = Host(ns, port_if, mac, "10.%d.0.%d" % (net, i + 1), "fd00:%d::%d" % (net, i + 1))
                self.append(h)
                tmp = "kr%s%d" % (self.tag, i)
                sh("ip", "link", "add", port_if, "type", "veth", "peer", "name", tmp, "netns", ns)
                h.run("ip", "link", "set", tmp, "name", "eth0")
                h.run("ip", "link", "set", "eth0", "address", mac)
                h.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
                h.run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
                h.run("ip", "addr", "add", h.ip4 + "/24", "dev", "eth0")
                h.run("ip", "addr", "add", h.ip6 + "/64", "dev", "eth0", "nodad")
                h.run("ip", "link", "set", "lo", "up")
                h.run("ip", "link", "set", "eth0", "up")
                sh("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % port_if, check=False)
                sh("ip", "link", "set", port_if, "up")
        except BaseException:
            self.close()
            raise

    def close(self):
        for h in self:
            subprocess.run(("ip", "netns", "del", h.ns), capture_output=True)
            subprocess.run(("ip", "link", "del", h.port_if), capture_output=True)


def close_rig(channel, switch, controller, hosts):
    """Tear down a test rig in order (what never started is None): the channel, the
    switch process, the controller, then the namespaces."""
    if channel is not None:
        channel.close()
    if switch is not None:
        switch.stop()
    if controller is not None:
        controller.close()
    hosts.close()


class SwitchProcess:
    """A kp-switch process on the given interfaces."""

    def __init__(self, ifaces, controller=None, listen_port=None, dpid=1, log_path=None, extra=()):
        self.listen_port = listen_port or free_port()
        self.log_path = log_path or "/tmp/kp-switch-test-%d.log" % os.getpid()
        # KP_TEST_SWITCH_ARGS (e.g. "--threads 2") for every switch but one that says
        # otherwise itself
        env_args, _ = switch_args()
        if "--threads" in env_args and "--threads" in extra:
            i = env_args.index("--threads")
            env_args = env_args[:i] + env_args[i + 2:]
        extra = list(extra) + env_args
        args = [KP_SWITCH, "--dpid", str(dpid), "--listen", "ptcp:%d" % self.listen_port,
                "--log-file", self.log_path, "-v", *extra]
        if controller:
            args += ["--controller", controller]
        self.proc = subprocess.Popen(args + list(ifaces), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def stop(self, timeout=10):
        """SIGTERM the process; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""
