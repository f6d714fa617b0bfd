#!/usr/bin/env python3
"""The cluster: three nodes, one Service, pods on any node.

Topology: `kpcluster nodes=3 pods=2 clients=1` on kp-switch: node switches s1..s3
(dpid 1..3) joined by a fabric switch f0; on node n: client n<n>c1 (10.0.<n>.11), pods
n<n>p1, n<n>p2 (10.0.<n>.101, .102), node address 10.0.<n>.1. One controller, kp_app,
for all four switches: it finds the links between them itself (its own link probes) and
routes between the node subnets.

What it configures: each node's address and pod subnet (`ku conf node_ip 10.0.1.1/24
node_ip6 fd00:0:0:1::1/64 dpid 1`, ...), a Service 10.96.0.50:80 (TCP and UDP) ->
pods :8080 with NodePort 30080 whose pods are on nodes 2 and 3 only, and a Service
10.96.0.51:80 whose only pod is n1p2.

What it shows, and what to look at:
  1. A pod on node 1 (n1p1) reaches the ClusterIP: node 1 picks a pod on node 2 or 3,
     DNATs, routes it over the fabric, and un-NATs the reply: the pod saw the ClusterIP
     as its peer (UDP "from"), the serving pods saw n1p1's own address, and the sessions
     (`ku show sessions`) are all on dpid 1.
  2. NodePort on every node: the client n1c1 (and n3c1) reach 10.0.<n>.1:30080 for each
     n; the reply always comes back from the node it entered (10.0.<n>.1:30080), and a
     pod on another node than the entry node sees the entry node's address as its peer
     (SNAT, so that the reply returns through the entry node).
  3. Hairpin: n1p2 asks for its own Service 10.96.0.51 and is chosen itself: it works,
     because node 1 SNATs the request to its own address.
  4. The same 5-tuple picks the same pod on every node: the client n1c1 sends flows to
     the ClusterIP (entering node 1), and n2c1 and n3c1 send the very same 5-tuples
     (n1c1's source address and ports, as an upstream router spreading flows over the
     nodes would deliver them) into nodes 2 and 3. Compare the session lists by dpid:
     each 5-tuple has the same pod on all three nodes (same keyed hash, same table).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP, HAIRPIN_VIP, PORT, TARGET, NODE_PORT = '10.96.0.50', '10.96.0.51', 80, 8080, 30080
NODES = (1, 2, 3)
SAME_TUPLE_PORTS = list(range(45000, 45016))


def node_ip(n):
    return '10.0.%d.1' % n


def node_of(host_name):
    return int(host_name[1:].split('c')[0].split('p')[0])


def scenario(s):
    lab, report, check = s.lab, s.report, s.checks.check
    h = lab.host
    pods = [p.name for p in lab.pods]                 # n1p1 n1p2 n2p1 ...
    service_pods = [p for p in pods if node_of(p) in (2, 3)]
    by_ip = s.pod_names_by_ip()

    s.section('configure each node, then the Services')
    for n in NODES:
        s.ku('conf', 'node_ip', '%s/24' % node_ip(n), 'node_ip6', 'fd00:0:0:%d::1/64' % n,
             'dpid', n, echo=(n == 1))
    s.say('    (and the same for dpid 2 and 3)')
    s.ku('vip', VIP + '/32', 'protocol', 'any', 'port', PORT, 'target_port', TARGET,
         'node_port', NODE_PORT)
    s.ku('pod', VIP + '/32', 'port', PORT, *[lab.ip(p) for p in service_pods])
    s.ku('vip', HAIRPIN_VIP + '/32', 'protocol', 'tcp', 'port', PORT, 'target_port', TARGET)
    s.ku('pod', HAIRPIN_VIP + '/32', 'port', PORT, lab.ip('n1p2'))
    labkit.serve(lab, 'http', TARGET)
    labkit.serve(lab, 'udp', TARGET)

    started = time.monotonic()
    routed = False
    while time.monotonic() - started < 20 and not routed:
        routed = all(kp_lab.ping(h('n1c1'), lab.ip('n%dc1' % n), timeout=1) for n in (2, 3))
    s.say('node subnets routed after %.1f s' % (time.monotonic() - started))
    check('kp_app found the links and routes between node subnets (ping n1c1 -> n2c1, n3c1)',
          routed)

    # 1 -------------------------------------------------------------------------------
    s.section('1. a pod on node 1 (n1p1) -> ClusterIP %s:%d, pods on nodes 2 and 3'
              % (VIP, PORT))
    gets = labkit.http_gets(h('n1p1'), kp_lab.url_for(VIP, PORT), 12)
    ok = [r['body'] for r in gets if r.get('ok')]
    seen = labkit.counts_of(ok)
    sweep = labkit.udp_sweep(h('n1p1'), VIP, PORT, range(46000, 46008))
    udp = [r for r in sweep.values() if r]
    sources = sorted({'%s:%d' % (r['from'], r['from_port']) for r in udp})
    s.say('HTTP: %d/%d answered' % (len(ok), len(gets)))
    s.say(labkit.bar_chart(seen, order=service_pods))
    s.say('UDP: %d/%d answered, from %s; the pods saw %s' % (
        len(udp), len(sweep), sources, sorted({r['peer'] for r in ok + udp})))
    sessions = s.sessions(prefix=VIP + '/32', port=PORT)['sessions']
    mine = [x for x in sessions if x['client'].startswith(lab.ip('n1p1') + ':')]
    report['pod_to_clusterip'] = {
        'http_answered': len(ok), 'http_requests': len(gets), 'by_pod': dict(seen),
        'udp_answered': len(udp), 'udp_reply_sources': sources,
        'peers_seen_by_pods': sorted({r['peer'] for r in ok + udp}),
        'session_dpids': sorted({x['dpid'] for x in mine})}
    check('1: every request from n1p1 to the ClusterIP was answered',
          len(ok) == len(gets) and len(udp) == len(sweep),
          'http %d/%d udp %d/%d' % (len(ok), len(gets), len(udp), len(sweep)))
    check('1: answered by pods on nodes 2 and 3',
          {node_of(p) for p in seen} == {2, 3} and set(seen) <= set(service_pods), dict(seen))
    check('1: n1p1 saw the ClusterIP as its peer (reply un-NATed on node 1)',
          sources == ['%s:%d' % (VIP, PORT)], sources)
    check('1: the serving pods saw n1p1\'s own address',
          {r['peer'] for r in ok + udp} == {lab.ip('n1p1')},
          report['pod_to_clusterip']['peers_seen_by_pods'])
    check('1: the sessions are on node 1 (dpid 1)',
          report['pod_to_clusterip']['session_dpids'] == [1],
          report['pod_to_clusterip']['session_dpids'])

    # 2 -------------------------------------------------------------------------------
    s.section('2. NodePort on every node: 10.0.<n>.1:%d' % NODE_PORT)
    rows, np_report, bad_peers, bad_sources, unanswered = [], {}, [], [], 0
    for client in ('n1c1', 'n3c1'):
        for n in NODES:
            first = 47000 + 100 * node_of(client) + 10 * n     # no port reused across sweeps
            sweep = labkit.udp_sweep(h(client), node_ip(n), NODE_PORT, range(first, first + 8))
            got = [r for r in sweep.values() if r]
            unanswered += len(sweep) - len(got)
            http = labkit.http_gets(h(client), kp_lab.url_for(node_ip(n), NODE_PORT), 4)
            unanswered += sum(not r.get('ok') for r in http)
            replies = got + [r['body'] for r in http if r.get('ok')]
            srcs = sorted({'%s:%d' % (r['from'], r['from_port']) for r in got})
            if srcs != ['%s:%d' % (node_ip(n), NODE_PORT)]:
                bad_sources.append((client, n, srcs))
            for r in replies:
                remote = node_of(r['name']) != n
                want = node_ip(n) if remote else lab.ip(client)
                if remote and r['peer'] != want:
                    bad_peers.append((client, n, r['name'], r['peer']))
            served = labkit.counts_of(replies)
            peers = sorted({r['peer'] for r in replies})
            rows.append('  %-5s -> %-10s  %2d answers  reply from %-16s  pods %-28s  pods saw %s'
                        % (client, node_ip(n), len(replies), ','.join(srcs),
                           ' '.join('%s:%d' % kv for kv in sorted(served.items())),
                           ' '.join(peers)))
            np_report['%s->node%d' % (client, n)] = {'answers': len(replies),
                                                      'reply_sources': srcs,
                                                      'by_pod': dict(served),
                                                      'peers_seen_by_pods': peers}
    s.say('\n'.join(rows))
    reached = {p for v in np_report.values() for p in v['by_pod']}
    report['nodeport'] = np_report
    check('2: NodePort on every node answered every request', unanswered == 0,
          '%d unanswered' % unanswered)
    check('2: the reply came back from the node entered (10.0.<n>.1:%d)' % NODE_PORT,
          not bad_sources, bad_sources[:3])
    check('2: pods on both serving nodes were reached', {node_of(p) for p in reached} == {2, 3},
          sorted(reached))
    check('2: a pod on another node saw the entry node\'s address', not bad_peers,
          bad_peers[:3])

    # 3 -------------------------------------------------------------------------------
    s.section('3. hairpin: n1p2 -> its own Service %s:%d' % (HAIRPIN_VIP, PORT))
    hp = [kp_lab.http_get(h('n1p2'), kp_lab.url_for(HAIRPIN_VIP, PORT)) for _ in range(3)]
    hp_ok = [r['body'] for r in hp if r.get('ok')]
    s.say('answered %d/3 by %s; the pod saw its peer as %s' % (
        len(hp_ok), sorted({b['name'] for b in hp_ok}), sorted({b['peer'] for b in hp_ok})))
    report['hairpin'] = {'answered': len(hp_ok), 'by': sorted({b['name'] for b in hp_ok}),
                         'peer_seen': sorted({b['peer'] for b in hp_ok}),
                         'error': next((r.get('error') for r in hp if not r.get('ok')), None)}
    check('3: hairpin works (n1p2 served its own request)',
          len(hp_ok) == 3 and {b['name'] for b in hp_ok} == {'n1p2'},
          report['hairpin'])

    # 4 -------------------------------------------------------------------------------
    s.section('4. the same 5-tuples entering nodes 1, 2 and 3')
    labkit.udp_sweep(h('n1c1'), VIP, PORT, SAME_TUPLE_PORTS)
    for sender in ('n2c1', 'n3c1'):
        labkit.udp_spoof(h(sender), lab.ip('n1c1'), SAME_TUPLE_PORTS, VIP, PORT)
    time.sleep(0.5)
    sessions = s.sessions(limit=2000, prefix=VIP + '/32', port=PORT)['sessions']
    picks = {}
    for x in sessions:
        addr, port = x['client'].rsplit(':', 1)
        if addr == lab.ip('n1c1') and int(port) in SAME_TUPLE_PORTS:
            picks.setdefault(int(port), {})[x['dpid']] = by_ip.get(
                x['pod'].rsplit(':', 1)[0], x['pod'])
    s.say('  client 10.0.1.11:port -> %s:%d   pod chosen on dpid 1 / 2 / 3' % (VIP, PORT))
    for port in SAME_TUPLE_PORTS:
        row = picks.get(port, {})
        s.say('  %-22d %s' % (port, '  '.join('%-5s' % row.get(d, '-') for d in NODES)))
    complete = [p for p in SAME_TUPLE_PORTS if set(picks.get(p, {})) == set(NODES)]
    agree = [p for p in complete if len(set(picks[p].values())) == 1]
    report['same_tuple'] = {'flows': len(SAME_TUPLE_PORTS), 'seen_on_all_nodes': len(complete),
                            'same_pod_everywhere': len(agree),
                            'picks': {str(p): {str(d): v for d, v in picks[p].items()}
                                      for p in picks}}
    check('4: each 5-tuple made a session on all three nodes',
          len(complete) == len(SAME_TUPLE_PORTS),
          '%d/%d' % (len(complete), len(SAME_TUPLE_PORTS)))
    check('4: and picked the same pod on every node', complete and len(agree) == len(complete),
          '%d/%d agree' % (len(agree), len(complete)))

    s.section('the controller\'s view')
    s.ku('show')
    s.ku('show', 'sessions', 'limit', 8)


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'a three-node cluster on %s',
                          switch, cli, out, topo='kpcluster', nodes=3, pods=2, clients=1)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
