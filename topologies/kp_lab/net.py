"""A kp Mininet network with a remote controller, built and always torn down.

    with build_net('kpnode', switch='ovs', controller_port=c.of_port, pods=3) as lab:
        lab.host('c1'), lab.switch('s1'), lab.plan['hosts']['p1']['ip'] ...

close() stops the traffic processes started in the hosts, the switches, the hosts and
their namespaces, deletes the root-namespace interfaces the net made, and checks that
nothing is left (``leftovers()``). SIGTERM is turned into SystemExit while a lab is open
(SIGINT already raises KeyboardInterrupt), and an atexit hook closes what is still open.
"""
import atexit
import logging
import os
import re
import signal
import subprocess
import threading
import weakref

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController

from . import ovs as ovs_service
from . import procs, traffic
from .controller import free_port_range
from .topo import TOPOS, KpHost, KpSwitch, kp_post_start, tx_offload_off

log = logging.getLogger('kp_lab.net')
SWITCH_KINDS = ('kpswitch', 'ovs')
_open_labs = weakref.WeakSet()


class KpOVSSwitch(OVSSwitch):
    """Open vSwitch with the userspace datapath (no kernel module here), OpenFlow 1.3."""

    def __init__(self, name, **params):
        params.setdefault('datapath', 'user')
        params.setdefault('protocols', 'OpenFlow13')
        params.setdefault('failMode', 'secure')
        OVSSwitch.__init__(self, name, **params)


def choose_prefix(base='kpt'):
    """A switch-name prefix ('kpt417') no interface or OVS bridge here uses yet, so that
    concurrent labs never touch each other's root-namespace names."""
    taken = set(procs.root_interfaces())
    if ovs_service.ovs_running():
        taken |= set(ovs_service.ovs_bridges())
    start = os.getpid() % 1000
    for i in range(1000):
        prefix = '%s%d' % (base, (start + i) % 1000)
        pattern = re.compile(re.escape(prefix) + r'[a-z]')
        if not any(pattern.match(name) for name in taken):
            return prefix
    raise RuntimeError('no free kpt prefix')


class LabError(RuntimeError):
    pass


class KpLab:
    """One kp topology on Mininet, its switches connected to a remote controller."""

    def __init__(self, topo_name='kpnode', switch='kpswitch', controller_port=6653,
                 controller_ip='127.0.0.1', prefix=None, wait_timeout=30, **topo_args):
        if topo_name not in TOPOS:
            raise ValueError('unknown topology %r (have %s)' % (topo_name, sorted(TOPOS)))
        if switch not in SWITCH_KINDS:
            raise ValueError('switch must be one of %s, not %r' % (SWITCH_KINDS, switch))
        self.topo_name, self.switch_kind = topo_name, switch
        self.controller_ip, self.controller_port = controller_ip, controller_port
        self.wait_timeout = wait_timeout
        self.prefix = choose_prefix() if prefix is None else prefix
        self.topo = TOPOS[topo_name](prefix=self.prefix, **topo_args)
        self.plan = self.topo.plan()
        self.net = None
        self.closed = False
        self._namespaces = {}     # host name -> netns id
        self._pids = {}           # node name -> shell pid
        self._switch_pids = {}    # switch name -> kp-switch pid
        self._old_sigterm = None

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
            switch_cls = KpSwitch
            listen = free_port_range(len(self.topo.switches()))
        self.net = Mininet(topo=None, switch=switch_cls, host=KpHost, controller=None,
                           build=False, autoSetMacs=False, listenPort=listen)
        self.net.addController('ctl0', controller=RemoteController, ip=self.controller_ip,
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
        if not self.net.waitConnected(timeout=self.wait_timeout, delay=0.2):
            late = [s.name for s in self.net.switches if not s.connected()]
            raise LabError('switches %s did not connect to %s:%d within %ss%s'
                           % (late, self.controller_ip, self.controller_port,
                              self.wait_timeout, self._switch_logs(late)))

    def _switch_logs(self, names):
        text = ''
        for sw in self.net.switches:
            if sw.name in names and isinstance(sw, KpSwitch):
                try:
                    with open(sw.logFile, errors='replace') as f:
                        text += '\n--- %s (%s) ---\n%s' % (sw.name, sw.logFile,
                                                          ''.join(f.readlines()[-30:]))
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
        if current is _raise_system_exit:
            return
        self._old_sigterm = current
        signal.signal(signal.SIGTERM, _raise_system_exit)

    def _restore_signal_handler(self):
        if self._old_sigterm is not None and not _open_labs and \
                threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

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
              **topo_args):
    """Build and start a kp topology; returns a started KpLab (a context manager).

    topo_name: 'kpnode' (clients=, pods=) or 'kpcluster' (nodes=, pods=, clients=).
    switch: 'kpswitch' (the bundled kp-switch) or 'ovs' (Open vSwitch, userspace datapath;
    started if not running, and the hosts get tx checksum offload off).
    prefix: put in front of the switch names; None picks a free 'kpt<N>' (use '' for the
    plain names of the demo: s1, f0). Raises if a switch does not connect in wait_timeout
    seconds, after tearing everything down."""
    if loglevel:
        setLogLevel(loglevel)
    return KpLab(topo_name, switch, controller_port, controller_ip, prefix, wait_timeout,
                 **topo_args).start()


def kp_switch_works(timeout=10.0):
    """Check kp-switch's command-line contract without a controller or a network:
    start it on one veth of a throw-away pair, expect its listen port to answer an
    OpenFlow 1.3 FEATURES_REQUEST with its dpid, then expect a clean exit on SIGTERM.
    Returns (ok, detail)."""
    import tempfile
    import time
    from .controller import free_port
    from .topo import kp_switch_binary, of13_features

    binary = kp_switch_binary()
    if not binary:
        return False, 'kp-switch is not installed (./run setup)'
    prefix = choose_prefix('kpp')
    a, b = prefix + 'a0', prefix + 'b0'
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
