"""The kp topologies on Mininet: addressing, L2 reachability, clean teardown.

The controller here is Ryu's simple_switch_13 (an L2 learning switch), so only same-
subnet traffic is expected to work; kp_app's own tests cover the node address, ClusterIPs
and routing between nodes.
"""
import json
import os
import subprocess

import pytest

kp_lab = pytest.importorskip("kp_lab")


@pytest.fixture
def controller_app():
    return 'ryu.app.simple_switch_13'


def host_state(host):
    """The host's addresses, MAC and default routes, read with `ip -j`."""
    intf = str(host.defaultIntf())
    addrs = json.loads(host.cmd('ip -j addr show dev %s' % intf))[0]
    routes4 = json.loads(host.cmd('ip -j -4 route show default'))
    routes6 = json.loads(host.cmd('ip -j -6 route show default'))
    return {
        'mac': addrs['address'],
        'ip': sorted(a['local'] for a in addrs['addr_info'] if a['family'] == 'inet'),
        'ip6': sorted(a['local'] for a in addrs['addr_info']
                      if a['family'] == 'inet6' and a.get('scope') == 'global'),
        'gw4': [r.get('gateway') for r in routes4],
        'gw6': [r.get('gateway') for r in routes6],
    }


def assert_plan_applied(lab):
    for name, want in lab.plan['hosts'].items():
        got = host_state(lab.host(name))
        assert got == {'mac': want['mac'], 'ip': [want['ip']], 'ip6': [want['ip6']],
                       'gw4': [want['gw4']], 'gw6': [want['gw6']]}, name


def assert_ports_as_planned(lab):
    """OpenFlow port n of every switch is the interface the plan says, on both switches."""
    for sw, info in lab.plan['switches'].items():
        want = {port: '%s-eth%d' % (sw, port) for port in info['ports']}
        assert lab.of_ports(sw[len(lab.prefix):]) == want, sw
        for port, peer in info['ports'].items():
            link = lab.net[sw].connectionsTo(lab.net[peer])[0]
            assert str(link[0]) == want[port], (sw, port, peer)


def assert_nothing_left(lab):
    left = lab.leftovers()
    assert left == {'interfaces': [], 'bridges': [], 'processes': [], 'namespaces': []}


# --------------------------------------------------------------------------- no network

def test_address_plan_of_kpnode():
    plan = kp_lab.KpNodeTopo(clients=2, pods=3).plan()
    assert plan['switches'] == {'s1': {'dpid': 1, 'role': 'node',
                                       'ports': {1: 'c1', 2: 'c2', 3: 'p1', 4: 'p2', 5: 'p3'}}}
    assert plan['hosts']['c1'] == {
        'role': 'client', 'node': 0, 'ip': '10.0.0.11', 'ip6': 'fd00::11',
        'mac': '00:00:00:00:00:11', 'gw4': '10.0.0.1', 'gw6': 'fd00::1',
        'switch': 's1', 'port': 1}
    p3 = plan['hosts']['p3']
    assert (p3['ip'], p3['ip6'], p3['mac'], p3['port']) == (
        '10.0.0.103', 'fd00::103', '00:00:00:00:01:03', 5)
    assert plan['service_cidrs'] == ['10.96.0.0/16', 'fd00:96::/112']


def test_address_plan_of_kpcluster():
    plan = kp_lab.KpClusterTopo(nodes=3, pods=2, prefix='x').plan()
    assert sorted(plan['switches']) == ['xf0', 'xs1', 'xs2', 'xs3']
    assert plan['switches']['xf0'] == {'dpid': 0x100, 'role': 'fabric',
                                       'ports': {1: 'xs1', 2: 'xs2', 3: 'xs3'}}
    assert plan['switches']['xs2'] == {'dpid': 2, 'role': 'node',
                                       'ports': {1: 'n2c1', 2: 'n2p1', 3: 'n2p2', 4: 'xf0'}}
    pod = plan['hosts']['n3p2']
    assert (pod['ip'], pod['ip6'], pod['mac'], pod['gw4'], pod['gw6']) == (
        '10.0.3.102', 'fd00:0:0:3::102', '00:00:00:03:01:02', '10.0.3.1', 'fd00:0:0:3::1')
    assert plan['hosts']['n1c1']['ip'] == '10.0.1.11'


def test_custom_file_loads_like_mn_does():
    """`mn --custom` exec()s the file under Debian's python3, without the venv or
    __file__; it must define the contract names from Mininet and the stdlib alone."""
    script = (
        "import sys\n"
        "f = sys.argv[1]; d = {}\n"
        "exec(compile(open(f).read(), f, 'exec'), d, d)\n"
        "assert sorted(d['topos']) == ['kpcluster', 'kpnode'], d['topos']\n"
        "assert sorted(d['switches']) == ['kpswitch', 'ovs']\n"
        "from mininet.util import buildTopo, customClass\n"
        "from mininet.node import OVSSwitch\n"
        "t = buildTopo(d['topos'], 'kpnode,clients=1,pods=2')\n"
        "assert customClass(d['switches'], 'kpswitch').__name__ == 'KpSwitch'\n"
        "assert issubclass(d['switches']['ovs'], OVSSwitch)\n"
        "assert d['node_announcement'].format_announcement('10.0.1.1/24') == \\\n"
        "    'kp-node ipv4=10.0.1.1/24'\n"
        "assert t.nodeInfo('s1')['node_ip'] == '10.0.0.1/24'\n"
        "assert t.nodeInfo('s1')['node_ip6'] == 'fd00::1/64'\n"
        "print(sorted(t.plan()['hosts']), d['KP_CUSTOM_FILE'] == f)\n")
    kp_file = os.path.join(os.path.dirname(kp_lab.topo.KP_FILE), 'kp.py')
    out = subprocess.run(['/usr/bin/python3', '-I', '-c', script, kp_file],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['c1', 'p1', 'p2'] True"


# --------------------------------------------------------------------------- on Mininet

@pytest.mark.both_port_io
def test_kpnode_addresses_ping_and_teardown(kpnode, switch_kind):
    lab = kpnode
    assert sorted(h.name for h in lab.hosts) == ['c1', 'c2', 'p1', 'p2', 'p3']
    assert lab.switch('s1').dpid == '%016x' % 1
    assert_plan_applied(lab)
    assert_ports_as_planned(lab)
    # Same subnet, through the switch, both families.
    p1, p3 = lab.host('p1'), lab.host('p3')
    assert kp_lab.ping(p1, lab.ip('c1'), count=2)
    assert kp_lab.ping(p1, lab.ip('c1', 6), count=2)
    assert kp_lab.ping(p3, lab.ip('c2'), count=1)
    assert kp_lab.ping(p3, lab.ip('c2', 6), count=1)
    # Nobody has the node address: the controller (kp_app) answers for it.
    assert not kp_lab.ping(p1, '10.0.0.1', count=1, timeout=1)
    lab.close()
    assert_nothing_left(lab)


def test_kpcluster_builds_and_tears_down(lab_factory, switch_kind):
    lab = lab_factory('kpcluster', nodes=2, pods=1)
    assert sorted(s.name[len(lab.prefix):] for s in lab.net.switches) == ['f0', 's1', 's2']
    assert lab.switch('f0').dpid == '%016x' % 0x100
    assert_plan_applied(lab)
    assert_ports_as_planned(lab)
    # Within a node it is one L2 segment.
    assert kp_lab.ping(lab.host('n1p1'), lab.ip('n1c1'), count=1)
    assert kp_lab.ping(lab.host('n2p1'), lab.ip('n2c1', 6), count=1)
    lab.close()
    assert_nothing_left(lab)
