"""Run kp's labs where the resolver cannot be reached: run as root under
``unshare --mount --net`` (test_no_name_lookups.py does), never on its own.

In its private network namespace it makes a resolver that swallows every query: the
default route goes out of a veth to a neighbour that is not there (a permanent
neighbour entry, so no ARP and no ICMP error comes back), so a lookup waits its full
timeout; nothing leaves the namespace. In its private mount namespace (which the
Mininet hosts share) /etc/resolv.conf names that resolver, with ``options timeout:5
attempts:2``, and /etc/hosts knows only localhost (as on a fresh machine; the machine's
own files are untouched). Then it

1. checks that a lookup really is that slow, here and inside a Mininet host (controls);
2. runs the demo and the NodePort lab, as a user would;
3. builds a kpnode lab itself and times the start of each agent server;

and prints one JSON line with what it saw, including how many packets went to the
resolver's veth: any name lookup by kp_app, ku, kp-switch or the labs would add some.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'topologies'))

RESOLVER = '10.255.255.1'
VETH, PEER = 'kpdnsa', 'kpdnsb'
RESOLV_CONF = 'nameserver %s\noptions timeout:5 attempts:2\n' % RESOLVER
LOOKUP = ['getent', 'hosts', 'kp-no-such-name.invalid']


def sh(*cmd):
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=30)


def isolate():
    """The blackhole resolver and the files that name it (see the module docstring)."""
    outer = os.environ.get('KP_OUTER_NETNS')     # the network namespace of who ran us
    if not outer or os.readlink('/proc/self/ns/net') == outer:
        raise SystemExit('blackhole_resolver.py: not in a network namespace of its own; '
                         'run it under unshare --mount --net')
    sh('ip', 'link', 'set', 'lo', 'up')
    sh('ip', 'link', 'add', VETH, 'type', 'veth', 'peer', 'name', PEER)
    for dev in (VETH, PEER):
        sh('sysctl', '-qw', 'net.ipv6.conf.%s.disable_ipv6=1' % dev)   # no chatter
        sh('ip', 'link', 'set', dev, 'up')
    sh('ip', 'addr', 'add', '10.255.255.2/24', 'dev', VETH)
    sh('ip', 'neigh', 'replace', RESOLVER, 'lladdr', '02:00:00:00:00:01', 'dev', VETH,
       'nud', 'permanent')
    sh('ip', 'route', 'add', 'default', 'via', RESOLVER, 'dev', VETH)
    sh('mount', '--make-rprivate', '/')
    sh('mount', '-t', 'sysfs', 'sysfs', '/sys')          # this namespace's interfaces
    os.makedirs('/run/kp-lab', exist_ok=True)
    sh('mount', '-t', 'tmpfs', 'tmpfs', '/run/kp-lab')   # its own prefix locks
    files = tempfile.mkdtemp(prefix='kp-blackhole-')
    for name, text in (('resolv.conf', RESOLV_CONF), ('hosts', '127.0.0.1 localhost\n')):
        path = os.path.join(files, name)
        with open(path, 'w') as f:
            f.write(text)
        sh('mount', '--bind', path, '/etc/' + name)


def to_resolver():
    with open('/sys/class/net/%s/statistics/tx_packets' % VETH) as f:
        return int(f.read())


def timed(cmd, timeout):
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return {'returncode': out.returncode, 'seconds': round(time.monotonic() - started, 2),
            'tail': (out.stdout + out.stderr)[-3000:]}


def lab_servers():
    """A kpnode lab of our own: a lookup from a host is slow; the agent servers start
    at once all the same."""
    import kp_lab
    seen = {}
    with kp_lab.ControllerProcess('kp_app') as ctl:
        with kp_lab.build_net('kpnode', controller_port=ctl.of_port, clients=1,
                              pods=1) as lab:
            p1 = lab.host('p1')
            started = time.monotonic()
            p1.cmd('timeout 60 ' + ' '.join(LOOKUP))
            seen['host_lookup_seconds'] = round(time.monotonic() - started, 2)
            for kind, port in (('http', 8080), ('tcp', 5000), ('udp', 5001)):
                started = time.monotonic()
                kp_lab.start_server(p1, kind, port)
                seen['%s_server_start_seconds' % kind] = round(time.monotonic() - started, 2)
            got = kp_lab.http_get(lab.host('c1'), kp_lab.url_for(lab.ip('p1'), 8080))
            seen['http_get_ok'] = bool(got.get('ok'))
    return seen


def main():
    isolate()
    report = {'resolv_conf': open('/etc/resolv.conf').read()}
    before = to_resolver()
    started = time.monotonic()
    subprocess.run(LOOKUP, capture_output=True, timeout=120)
    report['lookup_seconds'] = round(time.monotonic() - started, 2)
    report['lookup_packets'] = to_resolver() - before
    before = to_resolver()
    python = sys.executable
    labs = os.path.join(REPO, 'topologies', 'labs')
    report['demo'] = timed([python, os.path.join(labs, 'demo.py')], 600)
    report['nodeport'] = timed([python, os.path.join(labs, 'nodeport.py')], 600)
    report.update(lab_servers())
    report['packets_to_resolver'] = to_resolver() - before
    print('KP-REPORT ' + json.dumps(report), flush=True)


if __name__ == '__main__':
    main()
