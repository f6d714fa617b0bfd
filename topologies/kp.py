"""kp's Mininet custom file: the kp-switch Switch class and the kp topologies.

Run it with ``mn`` (Debian's /usr/bin/python3, which does not see the venv, so this file
imports only Mininet, the standard library and kp_proto/node_announcement.py by its path)
against plain ``ryu-manager kp_app``, with nothing configured by hand: each node switch
announces its node address and pod subnet (see "Node addresses" below). From the
repository root, as root, with the venv active (``source .venv/bin/activate``), in one
terminal::

    ryu-manager kp_app

and in another, one of (kp-switch, then Open vSwitch's userspace datapath)::

    mn --custom topologies/kp.py --topo kpnode,clients=2,pods=3 \\
       --switch kpswitch --controller remote,ip=127.0.0.1,port=6653 --test pingall
    mn --custom topologies/kp.py --topo kpnode,clients=2,pods=3 \\
       --switch ovs,datapath=user --controller remote,ip=127.0.0.1,port=6653 --test pingall

Expect ``*** Results: 0% dropped (20/20 received)``: the 5 hosts of node 0 reach each
other. For a cluster, the same with ``--topo kpcluster,nodes=3,pods=2``: ``0% dropped
(72/72 received)``, 9 hosts on 3 nodes, the traffic between nodes routed by kp_app
across the fabric switch f0; ``--topo kpcluster,nodes=4,pods=3``: ``0% dropped (240/240
received)``. Leave out ``--test pingall`` for Mininet's CLI. ``ku conf`` then shows each
node's address, marked announced (``ku conf node_ip ... dpid N`` still overrides it).
pingall is IPv4; the hosts have their IPv6 addresses and routes too (``n1c1 ping
fd00:0:0:2::101``). For TCP and UDP through Open vSwitch's userspace datapath the hosts
also need ``ethtool -K <intf> tx off`` (see ``tx_offload_off``); kp-switch needs no such
thing, on either of its port backends (``--switch kpswitch,port_io=afxdp`` or
``port_io=afpacket``; by default kp-switch takes AF_XDP where every port allows it).

``--switch ovs`` here is this file's ``OVSNodeSwitch``, not Mininet's own: ``mn --custom``
merges the file's ``switches`` into Mininet's, and this one is exported as ``ovs``. It is
Mininet's OVSSwitch in every way but one: the bridge's ``other_config:dp-desc`` (the
OpenFlow description Open vSwitch sends) carries the node announcement after the switch
name.

Beware: when anything in ``mn`` fails (or on ^C outside its CLI) it runs ``mn -c``, which
kills processes and deletes interfaces and bridges by name pattern, other people's
included; on a shared machine use the labs (``kp_lab.build_net``, ``./run demo``), which
only ever stop what they started, or the wrapper in tests/integration/test_mn_pingall.py.
The Python runtime that labs and tests use (controller process, OVS service, traffic
helpers) is ``kp_lab``, which loads this very file, so there is one definition of every
class below.

Contract names: ``topos = {'kpnode': KpNodeTopo, 'kpcluster': KpClusterTopo}``,
``switches = {'kpswitch': KpSwitch, 'ovs': OVSNodeSwitch}``, ``hosts = {'kphost': KpHost}``.

Address plan
============

A "node" is one Kubernetes node: one OpenFlow switch with its pods and clients behind
it. ``kpnode`` is node 0; in ``kpcluster`` the nodes are numbered 1..N. For node n and
host number h (clients h = 10 + i for client i, pods h = 100 + j for pod j; i, j from 1):

=================  ===============================  =================================
what               IPv4                             IPv6
=================  ===============================  =================================
node subnet        10.0.n.0/24                      fd00:0:0:n::/64  (n=0: fd00::/64)
node (gateway)     10.0.n.1  (no host has it; the   fd00:0:0:n::1    (node 0: fd00::1)
                   controller answers ARP for it)   (the controller answers ND)
client i           10.0.n.(10+i)   e.g. 10.0.0.11   fd00:0:0:n::(10+i)  e.g. fd00::11
pod j              10.0.n.(100+j)  e.g. 10.0.0.101  fd00:0:0:n::(100+j) e.g. fd00::101
ClusterIPs         10.96.0.0/16                     fd00:96::/112
=================  ===============================  =================================

IPv6 host numbers are written with the same decimal digits as IPv4 (client 1 is
fd00::11, pod 1 fd00::101), and so is n in the IPv6 node subnet (node 12: fd00:0:0:12::/64).
Every host has a default route via its node address, in both families, so ClusterIPs,
NodePorts and other nodes are reached through the node. IPv6 addresses are ``nodad``;
router advertisements and autoconfiguration are off in the hosts.

MAC addresses are fixed: ``00:00:00:NN:HH:LL`` with NN = n, and HHLL = h, all in
decimal digits: client 1 of node 0 is 00:00:00:00:00:11, pod 1 of node 0
00:00:00:00:01:01, pod 2 of node 3 00:00:00:03:01:02.

Hosts and switches
------------------

``kpnode,clients=C,pods=P``: switch ``s1`` (dpid 1), hosts ``c1..cC`` then ``p1..pP``.
Switch ports: c1..cC are ports 1..C, p1..pP are ports C+1..C+P.

``kpcluster,nodes=N,pods=P,clients=1``: node switches ``s1..sN`` (dpid n), on node n
the hosts ``n<n>c<i>`` (clients) and ``n<n>p<j>`` (pods); a fabric switch ``f0`` (dpid
256 = 0x100, also an OpenFlow switch of the controller) joins the nodes. Node switch
ports: clients 1..C, pods C+1..C+P, the uplink to the fabric C+P+1. Fabric port n goes
to node switch s<n>. Traffic between nodes is routed by the controller (10.0.m.0/24 and
fd00:0:0:m::/64 live behind fabric port m).

Both topologies take ``prefix=''``: a string put in front of the *switch* names only
(``prefix=kpt7`` gives ``kpt7s1``), so that concurrent runs do not collide on the
root-namespace interface names (``s1-eth1``) or OVS bridge names. Hosts live in their
own namespaces and keep their plain names. Dpids do not depend on the prefix.

``topo.plan()`` returns all of the above as plain data (JSON-able).

Node addresses
--------------

Each node switch gets ``node_ip='10.0.n.1/24', node_ip6='fd00:0:0:n::1/64'`` (node 0:
``10.0.0.1/24``, ``fd00::1/64``) from the topology, and announces them to the controller
in its OpenFlow description (OFPMP_DESC ``dp_desc``, e.g. ``kpt3s1 kp-node
ipv4=10.0.1.1/24 ipv6=fd00:0:0:1::1/64``; the format is kp_proto/node_announcement.py):
KpSwitch passes them to kp-switch as ``--node-ip``/``--node-ip6``, OVSNodeSwitch writes
them into the bridge's ``other_config:dp-desc``. kp_app takes them as if ``ku conf node_ip
10.0.n.1/24 node_ip6 fd00:0:0:n::1/64 dpid n`` had been typed, except that what is
typed wins. The fabric switch announces nothing.

KpSwitch
--------

Runs the bundled switch on the Mininet interfaces of the switch, in the root namespace::

    kp-switch --dpid <dpid as int> --controller tcp:<ip>:<port>
              [--node-ip <node_ip>] [--node-ip6 <node_ip6>] --listen ptcp:<port>
              --log-file /tmp/kp-switch-<name>.log <intf for port 1> <intf for port 2> ...

(``logDir=`` or ``logFile=`` move the log; kp_lab puts it in a directory per lab.)

The binary is ``$KP_SWITCH``, else ``kp-switch`` on PATH, else ``<repo>/.venv/bin/kp-switch``.
The listen port is Mininet's ``listenPort`` when it gives one (``mn`` gives 6654, 6655...),
else 6634 + the switch's index in this process (0, 1, ...). ``connected()`` needs
nothing from the switch beyond that contract: its process is alive, its listen port
answers an OpenFlow 1.3 HELLO/FEATURES_REQUEST with the right dpid, and it holds an
established TCP connection to the controller.
"""

import importlib.util
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

from mininet.log import debug, error, info, warn
from mininet.node import Host, OVSSwitch, Switch
from mininet.topo import Topo

# `mn --custom` exec()s this file without __file__; the code object knows its file.
KP_CUSTOM_FILE = os.path.abspath(sys._getframe(0).f_code.co_filename)
KP_REPO = os.path.dirname(os.path.dirname(KP_CUSTOM_FILE))


def _load_node_announcement():
    """kp's node announcement format (one definition, kp_proto/node_announcement.py):
    kp_proto's module where it imports (the venv), else that file by its path
    (``mn`` runs Debian's python3, which does not see the venv)."""
    try:
        from kp_proto import node_announcement
        return node_announcement
    except ImportError:
        pass
    path = os.path.join(KP_REPO, 'kp_proto', 'node_announcement.py')
    try:
        spec = importlib.util.spec_from_file_location('kp_node_announcement', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (OSError, ImportError, AttributeError) as e:
        # SystemExit, not an Exception: mn answers those with `mn -c` (see KpSwitchMissing).
        raise SystemExit('kp.py: cannot load %s (%s): keep kp.py in the kp repository'
                         % (path, e))
    return module


node_announcement = _load_node_announcement()

# ---------------------------------------------------------------------------
# The address plan

SERVICE_CIDR4 = '10.96.0.0/16'
SERVICE_CIDR6 = 'fd00:96::/112'
FABRIC_DPID = 0x100
CLIENT_BASE = 10
POD_BASE = 100


def kp_node_subnet4(node):
    return '10.0.%d.0/24' % node


def kp_node_subnet6(node):
    return str(ipaddress.ip_network('fd00:0:0:%d::/64' % node))


def kp_addr4(node, h):
    """IPv4 address of host number h (1 is the node itself) on node `node`."""
    return '10.0.%d.%d' % (node, h)


def kp_addr6(node, h):
    """IPv6 address of host number h on node `node`, h in decimal digits."""
    return str(ipaddress.ip_address('fd00:0:0:%d::%d' % (node, h)))


def kp_node_ip4(node):
    """The node's address on its pod subnet, as kp_app takes it: '10.0.n.1/24'."""
    return '%s/24' % kp_addr4(node, 1)


def kp_node_ip6(node):
    return '%s/64' % kp_addr6(node, 1)


def kp_mac(node, h):
    return '00:00:00:%02d:%02d:%02d' % (node, h // 100, h % 100)


def kp_host_params(node, h, role):
    """The Mininet host parameters of host number h on node `node` (see the plan)."""
    if not (0 <= node <= 99 and 2 <= h <= 254):
        raise ValueError('host %d on node %d is outside the address plan' % (h, node))
    return {
        'cls': KpHost,
        'ip': '%s/24' % kp_addr4(node, h),
        'mac': kp_mac(node, h),
        'ip6': '%s/64' % kp_addr6(node, h),
        'gw4': kp_addr4(node, 1),
        'gw6': kp_addr6(node, 1),
        'kp_node': node,
        'kp_role': role,
    }


def kp_dpid(n):
    """Mininet wants the dpid as a hex string."""
    return '%016x' % n


# ---------------------------------------------------------------------------
# Hosts

def kp_configure_host(host):
    """Give `host` its IPv6 address and both default routes (idempotent).

    Mininet sets the MAC and the IPv4 address; this does what a Topo cannot express."""
    p = host.params
    intf = host.defaultIntf()
    if intf is None or 'ip6' not in p:
        return
    cmds = [
        'sysctl -qw net.ipv6.conf.all.disable_ipv6=0',
        'sysctl -qw net.ipv6.conf.default.disable_ipv6=0',
        'sysctl -qw net.ipv6.conf.%s.disable_ipv6=0' % intf,
        'sysctl -qw net.ipv6.conf.all.accept_ra=0',
        'sysctl -qw net.ipv6.conf.%s.accept_ra=0' % intf,
        'sysctl -qw net.ipv6.conf.%s.autoconf=0' % intf,
        'ip -6 addr replace %s dev %s nodad' % (p['ip6'], intf),
        'ip route replace default via %s dev %s' % (p['gw4'], intf),
        'ip -6 route replace default via %s dev %s' % (p['gw6'], intf),
    ]
    out = host.cmd(' ; '.join(cmds) + ' ; echo kp-config-done')
    if 'kp-config-done' not in out or 'rror' in out:
        warn('*** %s: address configuration said: %s\n' % (host, out.strip()))


class KpHost(Host):
    """A Host that also takes ip6=, gw4=, gw6= (see the address plan)."""

    def config(self, ip6=None, gw4=None, gw6=None, **params):
        r = super(KpHost, self).config(**params)
        if ip6:
            kp_configure_host(self)
        return r


def kp_post_start(net):
    """(Re)apply the IPv6 addresses and default routes of every kp host of `net`.

    KpHost already does it while Mininet configures the hosts; this is for hosts built
    with another class (``mn --host ...``), and is harmless to repeat."""
    for host in net.hosts:
        if 'ip6' in host.params:
            kp_configure_host(host)


def tx_offload_off(hosts):
    """ONLY for Open vSwitch's userspace datapath, which forwards veth packets with a
    partial checksum unfinished: make the hosts finish their checksums. Never needed
    (and never done) for kp-switch."""
    for host in hosts:
        for intf in host.intfList():
            if str(intf) != 'lo':
                host.cmd('ethtool -K %s tx off' % intf)


# ---------------------------------------------------------------------------
# Topologies

class _KpTopo(Topo):
    def plan(self):
        """The topology and its addresses as plain data."""
        switches = {}
        for sw in self.switches():
            info_ = self.nodeInfo(sw)
            ports = {self.port(sw, nbr)[0]: nbr for nbr in self.g[sw]}
            switches[sw] = {'dpid': int(info_['dpid'], 16), 'role': info_.get('kp_role'),
                            'ports': dict(sorted(ports.items()))}
        hosts = {}
        for h in self.hosts():
            p = self.nodeInfo(h)
            sw = next(iter(self.g[h]))
            hosts[h] = {'role': p['kp_role'], 'node': p['kp_node'],
                        'ip': p['ip'].split('/')[0], 'ip6': p['ip6'].split('/')[0],
                        'mac': p['mac'], 'gw4': p['gw4'], 'gw6': p['gw6'],
                        'switch': sw, 'port': self.port(sw, h)[0]}
        return {'switches': switches, 'hosts': hosts,
                'service_cidrs': [SERVICE_CIDR4, SERVICE_CIDR6]}

    def _add_node(self, node, sw_name, clients, pods, host_fmt):
        # node_ip/node_ip6: what the switch announces to kp_app (KpSwitch, OVSNodeSwitch).
        sw = self.addSwitch(sw_name, dpid=kp_dpid(max(node, 1)), kp_role='node',
                            kp_node=node, node_ip=kp_node_ip4(node),
                            node_ip6=kp_node_ip6(node))
        for i in range(1, clients + 1):
            name = host_fmt % ('c', i)
            self.addHost(name, **kp_host_params(node, CLIENT_BASE + i, 'client'))
            self.addLink(name, sw)
        for j in range(1, pods + 1):
            name = host_fmt % ('p', j)
            self.addHost(name, **kp_host_params(node, POD_BASE + j, 'pod'))
            self.addLink(name, sw)
        return sw


class KpNodeTopo(_KpTopo):
    """One node: switch s1 (dpid 1), clients c1..cC, pods p1..pP on 10.0.0.0/24, fd00::/64."""

    def build(self, clients=2, pods=3, prefix=''):
        clients, pods = int(clients), int(pods)
        if not (0 <= clients <= 89 and 0 <= pods <= 154):
            raise ValueError('kpnode: clients must be 0..89 and pods 0..154')
        self._add_node(0, '%ss1' % prefix, clients, pods, '%s%d')


class KpClusterTopo(_KpTopo):
    """N nodes s1..sN (dpid n), each with its clients and pods, joined by fabric f0."""

    def build(self, nodes=3, pods=2, clients=1, prefix=''):
        nodes, pods, clients = int(nodes), int(pods), int(clients)
        if not (1 <= nodes <= 99 and 0 <= clients <= 89 and 0 <= pods <= 154):
            raise ValueError('kpcluster: nodes must be 1..99, clients 0..89, pods 0..154')
        fabric = self.addSwitch('%sf0' % prefix, dpid=kp_dpid(FABRIC_DPID), kp_role='fabric')
        for n in range(1, nodes + 1):
            sw = self._add_node(n, '%ss%d' % (prefix, n), clients, pods,
                                'n%d%%s%%d' % n)
            self.addLink(sw, fabric)


# ---------------------------------------------------------------------------
# A raw OpenFlow 1.3 probe (pure Python, no Ryu)

OFP13 = 4
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 1, 2, 3
OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 5, 6


def of13_features(host, port, timeout=1.0):
    """HELLO + FEATURES_REQUEST to an OpenFlow 1.3 switch listening on host:port.

    Returns the datapath id (int), or None if nothing answered like a 1.3 switch."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        sock.sendall(struct.pack('!BBHI', OFP13, OFPT_HELLO, 8, 1) +
                     struct.pack('!BBHI', OFP13, OFPT_FEATURES_REQUEST, 8, 2))
        buf = b''
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            while len(buf) >= 8:
                version, mtype, length, xid = struct.unpack('!BBHI', buf[:8])
                if length < 8:
                    return None
                if len(buf) < length:
                    break
                msg, buf = buf[:length], buf[length:]
                if mtype == OFPT_ERROR:
                    return None
                if mtype == OFPT_ECHO_REQUEST:
                    sock.sendall(struct.pack('!BBHI', OFP13, OFPT_ECHO_REPLY, length, xid) +
                                 msg[8:])
                if mtype == OFPT_FEATURES_REPLY and version == OFP13 and length >= 32:
                    return struct.unpack('!Q', msg[8:16])[0]
            data = sock.recv(4096)
            if not data:
                return None
            buf += data
    except OSError:
        return None
    finally:
        sock.close()
    return None


def _socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                link = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            except OSError:
                continue
            if link.startswith('socket:['):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def kp_tcp_connections(pid, state='01'):
    """(local_port, remote_port) of the TCP sockets of `pid` in `state` ('01'
    established, '0A' listening), read from /proc: needs no ss/netstat."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ('tcp', 'tcp6'):
        try:
            with open('/proc/%d/net/%s' % (pid, table)) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == state and fields[9] in inodes:
                found.append((int(fields[1].rsplit(':', 1)[1], 16),
                              int(fields[2].rsplit(':', 1)[1], 16)))
    return found


# ---------------------------------------------------------------------------
# The switch

def kp_switch_binary():
    """$KP_SWITCH, else kp-switch on PATH, else <repo>/.venv/bin/kp-switch, else None."""
    env = os.environ.get('KP_SWITCH')
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which('kp-switch')
    if found:
        return found
    venv = os.path.join(KP_REPO, '.venv', 'bin', 'kp-switch')
    return venv if os.access(venv, os.X_OK) else None


class KpSwitchMissing(SystemExit):
    """kp-switch is not installed. A SystemExit, like Mininet's own pathCheck(), because
    ``mn`` answers any Exception with its name-pattern cleanup (``mn -c``), which would
    also kill other people's switches and namespaces on a shared machine."""


class KpSwitch(Switch):
    """The bundled userspace OpenFlow 1.3 switch, kp-switch, in the root namespace.

    port_io= ('auto', 'afxdp', 'afpacket'; ``--switch kpswitch,port_io=afxdp``) is
    kp-switch's ``--ports``: unset, kp-switch's default, auto (AF_XDP where every port
    takes it)."""

    dpidLen = 16
    isSetup = False
    _next_index = 0
    stop_timeout = 5.0

    def __init__(self, name, logFile=None, logDir='/tmp', node_ip=None, node_ip6=None,
                 port_io=None, **params):
        Switch.__init__(self, name, **params)
        if port_io not in (None, 'auto', 'afxdp', 'afpacket'):
            raise ValueError("kpswitch: port_io must be auto, afxdp or afpacket, not %r"
                             % (port_io,))
        self.node_ip, self.node_ip6 = node_ip, node_ip6
        self.port_io = port_io
        self.index = KpSwitch._next_index
        KpSwitch._next_index += 1
        self.listen = self.listenPort or (6634 + self.index)
        self.logFile = logFile or os.path.join(logDir, 'kp-switch-%s.log' % name)
        self.proc = None
        self.controllers = []

    @classmethod
    def setup(cls):
        if not kp_switch_binary():
            error('*** kp-switch not found ($KP_SWITCH, PATH, <repo>/.venv/bin).\n'
                  '*** Install it with: ./run setup\n')
            raise KpSwitchMissing('kp-switch not found; install it with ./run setup')

    def port_intfs(self):
        """The data interfaces in OpenFlow port order (port 1 first)."""
        return [str(i) for i in self.intfList() if self.ports.get(i) and not i.IP()]

    def start(self, controllers):
        binary = kp_switch_binary()
        if not binary:
            raise KpSwitchMissing('kp-switch not found; install it with ./run setup')
        intfs = self.port_intfs()
        for intf in intfs:
            # Quiet ports: no IPv6 link-local chatter from the root namespace.
            self.cmd('ip link set %s up ; sysctl -qw net.ipv6.conf.%s.disable_ipv6=1'
                     % (intf, intf))
        self.controllers = list(controllers)
        cmd = [binary, '--dpid', str(int(self.dpid, 16))]
        if controllers:
            c = controllers[0]
            if len(controllers) > 1:
                warn('*** %s: kp-switch takes one controller; using %s\n' % (self, c))
            cmd += ['--controller', 'tcp:%s:%d' % (c.IP(), c.port)]
        for option, value in (('--node-ip', self.node_ip), ('--node-ip6', self.node_ip6)):
            if value:
                cmd += [option, value]
        if self.port_io:
            cmd += ['--ports', self.port_io]
        cmd += ['--listen', 'ptcp:%d' % self.listen, '--log-file', self.logFile] + intfs
        debug('*** %s: %s\n' % (self, ' '.join(cmd)))
        with open(self.logFile, 'ab') as log:
            # Its own session: a ^C in the Mininet CLI is not meant for the switch.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, start_new_session=True)
        info('(kp-switch pid %d) ' % self.proc.pid)

    def stop(self, deleteIntfs=True):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                warn('*** %s: kp-switch pid %d ignored SIGTERM; SIGKILL\n' % (self, proc.pid))
                proc.kill()
                proc.wait()
        super(KpSwitch, self).stop(deleteIntfs)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def connected(self):
        if not self.running():
            return False
        if of13_features('127.0.0.1', self.listen, timeout=1.0) != int(self.dpid, 16):
            return False
        if not self.controllers:
            return True
        want = {c.port for c in self.controllers}
        return any(rport in want for _, rport in kp_tcp_connections(self.proc.pid))

    def dpctl(self, *args):
        """ovs-ofctl against the switch's listen port."""
        return self.cmd('ovs-ofctl -O OpenFlow13', args[0],
                        'tcp:127.0.0.1:%d' % self.listen, *args[1:])


class OVSNodeSwitch(OVSSwitch):
    """Mininet's OVSSwitch, and the node addresses the topology gives it (node_ip=,
    node_ip6=) announced to the controller: Open vSwitch sends the bridge's
    ``other_config:dp-desc`` as its OpenFlow description, which OVSSwitch sets to the
    switch name; here it is the name then the announcement (kp_proto.node_announcement).
    Without node addresses (the fabric switch, other topologies) it is OVSSwitch."""

    def __init__(self, name, node_ip=None, node_ip6=None, **params):
        OVSSwitch.__init__(self, name, **params)
        try:
            announcement = node_announcement.format_announcement(node_ip, node_ip6)
            self.dp_desc = (node_announcement.with_announcement(name, announcement)
                            if announcement else None)
        except ValueError as e:
            # SystemExit, not an Exception: mn answers those with `mn -c`.
            raise SystemExit('%s: node_ip/node_ip6: %s' % (name, e))

    def bridgeOpts(self):
        opts = OVSSwitch.bridgeOpts(self)
        if not self.dp_desc:
            return opts
        # ovs-vsctl reads a value with spaces as a double-quoted string; the command line
        # goes through a shell (Switch.cmd, or batchStartup's shell=True).
        ours = ' other-config:dp-desc=%s' % shlex.quote('"%s"' % self.dp_desc)
        plain = ' other-config:dp-desc=%s' % self.name
        if opts.endswith(plain):
            return opts[:-len(plain)] + ours
        return opts + ours


topos = {'kpnode': KpNodeTopo, 'kpcluster': KpClusterTopo}
# 'ovs' replaces Mininet's own under `mn --custom` (which merges this dict into its
# switches): plain `--switch ovs,datapath=user` then announces the node addresses.
switches = {'kpswitch': KpSwitch, 'ovs': OVSNodeSwitch}
hosts = {'kphost': KpHost}
