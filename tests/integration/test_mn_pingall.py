"""Plain ``mn --custom topologies/kp.py ... --test pingall`` against plain ``ryu-manager
kp_app``, as topologies/kp.py's docstring tells a user to run it: 0 % dropped, with no
``ku conf`` at all (the switches announce their node addresses), on kp-switch and on
Open vSwitch.

``/usr/bin/mn`` answers any exception (and ^C) with ``mn -c``, which kills processes and
deletes interfaces by name pattern, other people's too. So mn runs under
``/usr/bin/python3 -c MN_WRAPPER``, which replaces that cleanup with one that stops only
this run's own network (``Mininet.stop``), then runs /usr/bin/mn unchanged. The switch
names carry a reserved prefix, mn's listen ports are free ones, and after each run the
test checks that no process, interface or bridge of the run is left.
"""
import json
import os
import re
import subprocess
import sys

import pytest

kp_lab = pytest.importorskip("kp_lab")

KP_PY = os.path.join(os.path.dirname(kp_lab.topo.KP_FILE), 'kp.py')
MN = '/usr/bin/mn'
MN_TIMEOUT = 240

MN_WRAPPER = r'''
import json, runpy, sys
import mininet.clean
import mininet.net

nets = []


def stop_own_network(*args, **kwargs):
    """In place of mn -c: stop only the networks this process built."""
    while nets:
        net = nets.pop()
        try:
            net.stop()
        except Exception as e:  # noqa: BLE001 - report, go on stopping
            print('KP-STOP-FAILED %r' % (e,), flush=True)


mininet.clean.cleanup = stop_own_network          # mn does `from mininet.clean import cleanup`
mininet.clean.Cleanup.cleanup = classmethod(lambda cls: stop_own_network())
_build = mininet.net.Mininet.build


def build(self):
    nets.append(self)
    _build(self)
    pids = {n.name: n.pid for n in self.hosts + self.switches + self.controllers}
    print('KP-PIDS ' + json.dumps(pids), flush=True)


mininet.net.Mininet.build = build
_start = mininet.net.Mininet.start


def start(self):
    # Before waiting for the switches to connect (mn --test waits for ever).
    for sw in self.switches:
        sw_start = sw.start

        def started(controllers, sw=sw, sw_start=sw_start):
            sw_start(controllers)
            proc = getattr(sw, 'proc', None)
            if proc is not None:
                print('KP-PIDS ' + json.dumps({sw.name + '-kp-switch': proc.pid}), flush=True)
                print('KP-LOGS ' + json.dumps({sw.name: sw.logFile}), flush=True)
        sw.start = started
    _start(self)


mininet.net.Mininet.start = start
_stop = mininet.net.Mininet.stop


def stop(self):
    if self in nets:           # stopped once, by mn or by us
        nets.remove(self)
        _stop(self)


mininet.net.Mininet.stop = stop
sys.argv = ['mn'] + sys.argv[1:]
try:
    runpy.run_path('/usr/bin/mn', run_name='__main__')
finally:
    stop_own_network()
'''


def run_mn(args, timeout=MN_TIMEOUT):
    """Run mn (wrapped) with `args`; (returncode, output, pids it reported)."""
    proc = subprocess.Popen(['/usr/bin/python3', '-c', MN_WRAPPER] + args,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT: mn's KeyboardInterrupt path, which calls the (replaced) cleanup.
        proc.send_signal(2)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        out += '\n[test] mn did not finish within %ss' % timeout
    pids = {}
    for line in out.splitlines():
        if line.startswith('KP-PIDS '):
            pids.update(json.loads(line[len('KP-PIDS '):]))
    return proc.returncode, out, pids


def switch_port_io_of(out):
    """{kp-switch name: the port I/O its log's last start line names, e.g. {'afxdp
    native copy'}} for the kp-switches of an mn run's output."""
    found = {}
    for line in out.splitlines():
        if line.startswith('KP-LOGS '):
            for name, path in json.loads(line[len('KP-LOGS '):]).items():
                with open(path, errors='replace') as f:
                    starts = re.findall(r' kp_switch: ports (.*)$', f.read(), re.M)
                found[name] = set(re.findall(r'\d+=\S+ \(([^)]+)\)', starts[-1])) \
                    if starts else set()
    return found


def leftovers(prefix, pids):
    pattern = re.compile(re.escape(prefix) + r'[a-z]\d+')
    left = {'interfaces': [n for n in kp_lab.procs.root_interfaces() if pattern.match(n)],
            'bridges': [], 'processes': sorted(n for n, p in pids.items()
                                               if kp_lab.procs.pid_alive(p))}
    if kp_lab.ovs_running():
        left['bridges'] = [b for b in kp_lab.ovs_bridges() if pattern.match(b)]
    return left


def remove_leftovers(prefix):
    """After a failed run only: this run's own interfaces and bridges (its reserved
    prefix), so that the next test starts clean."""
    pattern = re.compile(re.escape(prefix) + r'[a-z]\d+$')
    if kp_lab.ovs_running():
        for bridge in kp_lab.ovs_bridges():
            if pattern.match(bridge):
                subprocess.run(['ovs-vsctl', '--if-exists', 'del-br', bridge],
                               capture_output=True, timeout=30)
    for name in kp_lab.procs.root_interfaces():
        if re.match(re.escape(prefix) + r'[a-z]\d+(-eth\d+)?$', name):
            subprocess.run(['ip', 'link', 'del', name], capture_output=True, timeout=10)


def mn_switch_arg(switch_kind, port_io=None):
    # Exactly what the docstring of topologies/kp.py tells a user.
    if switch_kind == 'kpswitch' and port_io:
        return 'kpswitch,port_io=%s' % port_io
    return {'kpswitch': 'kpswitch', 'ovs': 'ovs,datapath=user'}[switch_kind]


@pytest.mark.parametrize('topo', [
    'kpnode,clients=2,pods=3',
    'kpcluster,nodes=3,pods=2',
    'kpcluster,nodes=4,pods=3',
])
@pytest.mark.both_port_io
def test_mn_pingall_drops_nothing_with_plain_kp_app(switch_kind, switch_port_io, controller,
                                                    topo):
    """mn --custom topologies/kp.py --topo TOPO --switch kpswitch|ovs,datapath=user
    --controller remote,... --test pingall: 0 % dropped, nothing configured by hand."""
    held = kp_lab.reserve_prefix('kpm')
    prefix = held.prefix
    listen = kp_lab.free_port_range(8)
    args = ['--custom', KP_PY, '--topo', '%s,prefix=%s' % (topo, prefix),
            '--switch', mn_switch_arg(switch_kind, switch_port_io),
            '--controller', 'remote,ip=127.0.0.1,port=%d' % controller.of_port,
            '--listenport', str(listen), '--test', 'pingall']
    pids = {}
    try:
        code, out, pids = run_mn(args)
        results = re.findall(r'Results: (\d+)% dropped \((\d+)/(\d+) received\)', out)
        assert results, 'mn printed no pingall result:\n%s' % out[-4000:]
        dropped, received, sent = map(int, results[-1])
        assert (dropped, received) == (0, sent), out[-4000:]
        assert code == 0, out[-4000:]
        if switch_port_io:     # on the backend mn was told (port_io=), not a fallback
            modes = switch_port_io_of(out)
            assert modes and all(m and {x.split()[0] for x in m} == {switch_port_io}
                                 for m in modes.values()), modes
        assert 'KP-STOP-FAILED' not in out and 'Caught exception' not in out, out[-4000:]
        # kp_app learned every node's address from its switch, with no `ku conf`.
        nodes = json.loads(subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), 'ku'), '--api',
             controller.url(''), '--json', 'conf'], capture_output=True, text=True,
            timeout=30).stdout or '{}')
        assert nodes.get('nodes') is not None, nodes
        for dpid, node in nodes['nodes'].items():
            assert node['announced'] == ['node_ip', 'node_ip6'], (dpid, node)
        n_nodes = 1 if topo.startswith('kpnode') else int(re.search(r'nodes=(\d+)',
                                                                     topo).group(1))
        assert len(nodes['nodes']) == n_nodes, nodes
        assert leftovers(prefix, pids) == {'interfaces': [], 'bridges': [],
                                           'processes': []}
    finally:
        if any(leftovers(prefix, pids).values()):
            remove_leftovers(prefix)
        held.release()
