"""A kp Mininet network with a remote controller, built and always torn down.

    with build_net('kpnode', switch='ovs', controller_port=c.of_port, pods=3) as lab:
        lab.host('c1'), lab.switch('s1'), lab.plan['hosts']['p1']['ip'] ...

close() stops the traffic processes started in the hosts, the switches, the hosts and
their namespaces, deletes the root-namespace interfaces the net made, and checks that
nothing is left (``leftovers()``). SIGTERM is turned into SystemExit while a lab is open
(SIGINT already raises KeyboardInterrupt), and an atexit hook closes what is still open.
"""
import atexit
import functools
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import tempfile
import threading
import weakref

from mininet.log import warn, setLogLevel
from mininet.net import Mininet
from mininet.node import RemoteController

from . import ovs as ovs_service
from . import procs, traffic
from .controller import free_port, free_port_range
from .topo import TOPOS, KpHost, KpSwitch, OVSNodeSwitch, kp_post_start, tx_offload_off

log = logging.getLogger('kp_lab.net')
SWITCH_KINDS = ('kpswitch', 'ovs')
_open_labs = weakref.WeakSet()
_saved_sigterm = []   # the SIGTERM handler to put back when the last lab closes


class ListeningController(RemoteController):
    """RemoteController whose check that the controller listens is a plain connect().

    Mininet's own runs `echo A | telnet ip port` and decodes what comes back as UTF-8;
    the controller's OpenFlow HELLO (random xid bytes) sometimes is not, and the lab
    fails with UnicodeDecodeError."""

    def checkListening(self):
        try:
            socket.create_connection((self.ip, self.port), timeout=2).close()
        except OSError:
            warn('Unable to contact the remote controller at %s:%d\n' % (self.ip, self.port))


class KpOVSSwitch(OVSNodeSwitch):
    """Open vSwitch with the userspace datapath (no kernel module here), OpenFlow 1.3,
    announcing its node addresses as `mn --switch ovs` does with topologies/kp.py."""

    def __init__(self, name, **params):
        params.setdefault('datapath', 'user')
        params.setdefault('protocols', 'OpenFlow13')
        params.setdefault('failMode', 'secure')
        OVSNodeSwitch.__init__(self, name, **params)


def _first_contact(sw):
    """At a lab's start: has the switch reached its controller? Open vSwitch writes a
    controller's is_connected into its database seconds after the connection is up (4-5 s
    here), while the connection and the controller's first flows are there at once: a
    new bridge (fail mode secure, so no flows of its own) that holds flows was
    programmed by its controller. (Only at start: later, flows outlive a connection.)"""
    if isinstance(sw, KpOVSSwitch) and 'cookie=' in sw.cmd(
            'ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', sw.name):
        return True
    return sw.connected()


class LabError(RuntimeError):
    pass


LOCK_DIR = '/run/kp-lab'


class PrefixReservation:
    """A switch-name prefix held with an flock on /run/kp-lab/<prefix>.lock, so that
    concurrent labs (other pytest sessions, other people's labs) never pick the same
    root-namespace interface or OVS bridge names. Released by release() or at exit."""

    def __init__(self, prefix, fd):
        self.prefix, self.fd = prefix, fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock(prefix):
    import fcntl
    os.makedirs(LOCK_DIR, exist_ok=True)
    fd = os.open(os.path.join(LOCK_DIR, '%s.lock' % (prefix or '-plain-')),
                 os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return PrefixReservation(prefix, fd)


def _taken_names():
    taken = set(procs.root_interfaces())
    if ovs_service.ovs_running():
        taken |= set(ovs_service.ovs_bridges())
    return taken


def reserve_prefix(base='kpt', prefix=None):
    """Reserve `prefix`, or (None) a free '<base><N>' that no interface or OVS bridge
    here uses yet. Raises LabError if `prefix` is held by another lab."""
    if prefix is not None:
        held = _lock(prefix)
        if held is None:
            raise LabError('switch-name prefix %r is in use by another lab' % prefix)
        return held
    taken = _taken_names()
    for n in random.sample(range(1000), 1000):
        candidate = '%s%d' % (base, n)
        pattern = re.compile(re.escape(candidate) + r'[a-z]')
        if any(pattern.match(name) for name in taken):
            continue
        held = _lock(candidate)
        if held is not None:
            return held
    raise LabError('no free %s<N> prefix' % base)


def choose_prefix(base='kpt'):
    """A prefix free right now (not kept reserved; build_net reserves its own)."""
    held = reserve_prefix(base)
    held.release()
    return held.prefix


class KpLab:
    """One kp topology on Mininet, its switches connected to a remote controller."""

    def __init__(self, topo_name='kpnode', switch='kpswitch', controller_port=6653,
                 controller_ip='127.0.0.1', prefix=None, wait_timeout=30, keep_logs=False,
                 port_io=None, **topo_args):
        if topo_name not in TOPOS:
            raise ValueError('unknown topology %r (have %s)' % (topo_name, sorted(TOPOS)))
        if switch not in SWITCH_KINDS:
            raise ValueError('switch must be one of %s, not %r' % (SWITCH_KINDS, switch))
        self.topo_name, self.switch_kind = topo_name, switch
        self.port_io = port_io    # kp-switch's --ports (None: its default, auto)
        self.controller_ip, self.controller_port = controller_ip, controller_port
        self.wait_timeout = wait_timeout
        self.reservation = reserve_prefix(prefix=prefix)
        self.prefix = self.reservation.prefix
        try:
            self.topo = TOPOS[topo_name](prefix=self.prefix, **topo_args)
            self.plan = self.topo.plan()
        except BaseException:
            self.reservation.release()
            raise
        self.net = None
        self.closed = False
        self.keep_logs = keep_logs
        self.log_dir = None
        self._namespaces = {}     # host name -> netns id
        self._pids = {}           # node name -> shell pid
        self._switch_pids = {}    # switch name -> kp-switch pid

    # -- lookups ------------------------------------------------------------------

    def host(self, name):
        return self.net[name]

    def switch(self, name):
        """A switch by its plan name without the prefix ('s1', 'f0')."""
        return self.net[self.prefix + name]

    @property
    def hosts(self):
        return self.net.hosts

    def ip(self, name, family=4):
        h = self.plan['hosts'][name]
        return h['ip'] if family == 4 else h['ip6']

    def of_ports(self, name):
        """{OpenFlow port number: interface name} as the switch `name` (plan name, e.g.
        's1') reports them over OpenFlow 1.3 (ovs-ofctl show)."""
        sw = self.switch(name)
        target = ('tcp:127.0.0.1:%d' % sw.listen) if isinstance(sw, KpSwitch) else sw.name
        out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'show', target],
                             capture_output=True, text=True, timeout=15)
        if out.returncode:
            raise LabError('ovs-ofctl show %s: %s' % (target, out.stderr.strip()))
        return {int(m.group(1)): m.group(2)
                for m in re.finditer(r'^\s*(\d+)\(([^)]+)\):', out.stdout, re.M)}

    def hosts_by_role(self, role):
        return [self.net[n] for n, h in sorted(self.plan['hosts'].items()) if h['role'] == role]

    @property
    def pods(self):
        return self.hosts_by_role('pod')

    @property
    def clients(self):
        return self.hosts_by_role('client')

    # -- life cycle -----------------------------------------------------------------

    def start(self):
        self._install_signal_handler()
        _open_labs.add(self)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self):
        if self.switch_kind == 'ovs':
            ovs_service.ensure_ovs()
            switch_cls, listen = KpOVSSwitch, None
        else:
            KpSwitch.checkSetup()
            self.log_dir = tempfile.mkdtemp(prefix='kp-lab-%s-' % (self.prefix or 'net'))
            switch_cls = functools.partial(KpSwitch, logDir=self.log_dir, port_io=self.port_io)
            listen = free_port_range(len(self.topo.switches()))
        self.net = Mininet(topo=None, switch=switch_cls, host=KpHost, controller=None,
                           build=False, autoSetMacs=False, listenPort=listen)
        self.net.addController('ctl0', controller=ListeningController, ip=self.controller_ip,
                               port=self.controller_port)
        self.net.topo = self.topo
        self.net.build()
        for node in self.net.hosts + self.net.switches + self.net.controllers:
            self._pids[node.name] = node.pid
        for host in self.net.hosts:
            self._namespaces[host.name] = procs.netns_of(host.pid)
        self.net.start()
        for sw in self.net.switches:
            if isinstance(sw, KpSwitch) and sw.proc:
                self._switch_pids[sw.name] = sw.proc.pid
        kp_post_start(self.net)
        if self.switch_kind == 'ovs':
            tx_offload_off(self.net.hosts)
        if not self._wait_first_contact(self.wait_timeout):
            late = [s.name for s in self.net.switches if not _first_contact(s)]
            raise LabError('switches %s did not connect to %s:%d within %ss%s'
                           % (late, self.controller_ip, self.controller_port,
                              self.wait_timeout, self.switch_logs(late)))

    def _wait_first_contact(self, timeout):
        """Mininet's waitConnected, with _first_contact: True once every switch is."""
        waiting = list(self.net.switches)
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = [sw for sw in waiting if not _first_contact(sw)]
            if not waiting:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def switch_port_io(self):
        """{switch name: the port I/O each kp-switch says its ports run on, e.g.
        {'afxdp native copy'}}, from the start line of its log."""
        found = {}
        for sw in self.net.switches:
            if not isinstance(sw, KpSwitch):
                continue
            try:
                with open(sw.logFile, errors='replace') as f:
                    text = f.read()
            except OSError:
                text = ''
            starts = re.findall(r' kp_switch: ports (.*)$', text, re.M)
            found[sw.name] = set(re.findall(r'\d+=\S+ \(([^)]+)\)', starts[-1])) \
                if starts else set()
        return found

    def switch_logs(self, names=None, lines=30):
        """The tails of the kp-switch logs (of `names`, default all), as one text."""
        text = ''
        for sw in self.net.switches if self.net else []:
            if (names is None or sw.name in names) and isinstance(sw, KpSwitch):
                try:
                    with open(sw.logFile, errors='replace') as f:
                        text += '\n--- %s (%s) ---\n%s' % (sw.name, sw.logFile,
                                                          ''.join(f.readlines()[-lines:]))
                except OSError:
                    pass
        return text

    def close(self):
        """Stop everything this lab made; safe to call twice or after a failed start."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.net is not None:
                traffic.stop_host_processes(self.net.hosts)
                try:
                    self.net.stop()
                finally:
                    # RemoteController.stop() does nothing: end its shell ourselves.
                    for ctl in self.net.controllers:
                        ctl.terminate()
                    self._delete_leftover_interfaces()
        finally:
            _open_labs.discard(self)
            self._restore_signal_handler()
            self.reservation.release()
            if self.log_dir and not self.keep_logs:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def _delete_leftover_interfaces(self):
        for name in self._own_interfaces():
            subprocess.run(['ip', 'link', 'del', name], capture_output=True, timeout=10)

    def _own_interfaces(self):
        if self.prefix:
            pattern = re.compile(re.escape(self.prefix) + r'[a-z]\d+(-eth\d+)?$')
            return [n for n in procs.root_interfaces() if pattern.match(n)]
        names = set(self.topo.switches())
        return [n for n in procs.root_interfaces()
                if n in names or n.split('-eth')[0] in names]

    def leftovers(self):
        """What this lab left behind (all empty after a good close())."""
        left = {'interfaces': self._own_interfaces(), 'bridges': [], 'processes': [],
                'namespaces': []}
        if self.switch_kind == 'ovs' and ovs_service.ovs_running():
            mine = set(self.topo.switches())
            left['bridges'] = [b for b in ovs_service.ovs_bridges() if b in mine]
        for name, pid in list(self._pids.items()) + list(self._switch_pids.items()):
            if procs.pid_alive(pid):
                left['processes'].append((name, pid))
        root = procs.netns_of(os.getpid())
        for name, ns in self._namespaces.items():
            if ns and ns != root and procs.pids_in_netns(ns):
                left['namespaces'].append((name, ns))
        return left

    # -- signals --------------------------------------------------------------------

    def _install_signal_handler(self):
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current is not _raise_system_exit:
            _saved_sigterm[:] = [current]
            signal.signal(signal.SIGTERM, _raise_system_exit)

    def _restore_signal_handler(self):
        if _saved_sigterm and not _open_labs and \
                threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _saved_sigterm.pop())

    def __enter__(self):
        return self if self.net is not None else self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return '<KpLab %s on %s prefix=%r>' % (self.topo_name, self.switch_kind, self.prefix)


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


@atexit.register
def _close_open_labs():
    for lab in list(_open_labs):
        try:
            lab.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception('closing %r at exit', lab)


def build_net(topo_name='kpnode', switch='kpswitch', controller_port=6653,
              controller_ip='127.0.0.1', prefix=None, wait_timeout=30, loglevel=None,
              keep_logs=False, port_io=None, **topo_args):
    """Build and start a kp topology; returns a started KpLab (a context manager).

    topo_name: 'kpnode' (clients=, pods=) or 'kpcluster' (nodes=, pods=, clients=).
    switch: 'kpswitch' (the bundled kp-switch) or 'ovs' (Open vSwitch, userspace datapath;
    started if not running, and the hosts get tx checksum offload off).
    prefix: put in front of the switch names; None picks a free 'kpt<N>' (use '' for the
    plain names of the demo: s1, f0). Raises if a switch does not connect in wait_timeout
    seconds, after tearing everything down. kp-switch logs go to a directory per lab
    (``lab.log_dir``), removed by close() unless keep_logs. port_io: kp-switch's --ports
    (None: its default, auto)."""
    if loglevel:
        setLogLevel(loglevel)
    return KpLab(topo_name, switch, controller_port, controller_ip, prefix, wait_timeout,
                 keep_logs, port_io, **topo_args).start()


def kp_switch_works(timeout=10.0):
    """Check kp-switch's command-line contract without a controller or a network:
    start it on one veth of a throw-away pair, expect its listen port to answer an
    OpenFlow 1.3 FEATURES_REQUEST with its dpid, then expect a clean exit on SIGTERM.
    Returns (ok, detail)."""
    import time
    from .topo import kp_switch_binary, of13_features

    binary = kp_switch_binary()
    if not binary:
        return False, 'kp-switch is not installed (./run setup)'
    held = reserve_prefix('kpp')
    a, b = held.prefix + 'a0', held.prefix + 'b0'
    fd, log_file = tempfile.mkstemp(prefix='kp-switch-probe-', suffix='.log')
    os.close(fd)
    listen = free_port()
    dpid = 0x2a
    proc = None
    try:
        subprocess.run(['ip', 'link', 'add', a, 'type', 'veth', 'peer', 'name', b],
                       check=True, capture_output=True, timeout=10)
        subprocess.run(['ip', 'link', 'set', a, 'up'], capture_output=True, timeout=10)
        cmd = [binary, '--dpid', str(dpid), '--controller', 'tcp:127.0.0.1:%d' % free_port(),
               '--listen', 'ptcp:%d' % listen, '--log-file', log_file, a]
        with open(log_file, 'ab') as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        answered = None
        while time.monotonic() < deadline and proc.poll() is None:
            answered = of13_features('127.0.0.1', listen, timeout=0.5)
            if answered is not None:
                break
            time.sleep(0.2)
        if answered != dpid:
            return False, ('kp-switch %s; its listen port answered dpid %r, not %r'
                           % ('exited with %s' % proc.returncode if proc.poll() is not None
                              else 'is running', answered, dpid)
                           + _tail(log_file))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            return False, 'kp-switch did not exit within 5s of SIGTERM' + _tail(log_file)
        return True, 'kp-switch answered FEATURES_REQUEST and exited on SIGTERM (%s)' % (
            proc.returncode)
    except (OSError, subprocess.SubprocessError) as e:
        return False, 'kp-switch probe failed: %s%s' % (e, _tail(log_file))
    finally:
        if proc is not None:
            procs.stop_process(proc, 2)
        subprocess.run(['ip', 'link', 'del', a], capture_output=True, timeout=10)
        held.release()
        try:
            os.unlink(log_file)
        except OSError:
            pass


def _tail(path, lines=15):
    try:
        with open(path, errors='replace') as f:
            text = ''.join(f.readlines()[-lines:])
    except OSError:
        return ''
    return '\n--- log ---\n' + text if text else ''
