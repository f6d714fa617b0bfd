#!/usr/bin/env python3
"""The kp demo: a kube-proxy Service on one node, on the bundled switch, end to end.

What it builds: `ryu-manager kp_app` (the controller, REST on 127.0.0.1:8080 when free)
and the `kpnode` topology on kp-switch: one node switch s1 (node address 10.0.0.1),
clients c1, c2 (10.0.0.11, .12) and pods p1..p3 (10.0.0.101..103).

What it configures, with `ku` (the commands are printed as it goes):
  a web Service: ClusterIP 10.96.0.10:80 -> pods :8080, NodePort 30080 (TCP)
  an echo Service on the same address: 10.96.0.10:5000 -> pods :5000 (TCP)

What it shows, and what to look at:
  1. HTTP to the ClusterIP from both clients: each GET is a new connection, and the
     Maglev new-connection table spreads them over the pods. Look at the bar chart:
     roughly a third each. The pods see the clients' real addresses (DNAT only), and the
     per-pod counters of the controller agree with what the clients saw.
  2. One long TCP connection (a line every 0.25 s for 2 s) stays on its pod while other
     new connections keep spreading: the session table keeps the choice.
  3. NodePort: HTTP to the node's own address 10.0.0.1:30080 reaches the same pods.
  4. `ku show` and `ku show vip verbose`: the counters per Service and per pod, and the
     switch's flow-cache figures.
  5. The SUMMARY block: one PASS/FAIL line per claim; the exit code is 0 only if all
     passed. Everything is torn down at the end, also on ^C.

Run it:  /work/main/.venv/bin/python topologies/labs/demo.py   (as root; ./run demo)
         ... --cli   to stay in the Mininet CLI afterwards (try `c1 curl 10.96.0.10`)
         ... --switch ovs   to run the same on Open vSwitch
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP = '10.96.0.10'
WEB_PORT, ECHO_PORT, NODE_PORT = 80, 5000, 30080
NODE_IP, NODE_IP6 = '10.0.0.1', 'fd00::1'


def scenario(s, requests_per_client=20):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]
    pod_by_ip = s.pod_names_by_ip()

    s.section('1. configure kp with ku')
    s.ku('conf', 'node_ip', NODE_IP, 'node_ip6', NODE_IP6)
    s.ku('vip', VIP + '/32', 'protocol', 'tcp', 'port', WEB_PORT, 'target_port', 8080,
         'node_port', NODE_PORT)
    s.ku('pod', VIP + '/32', 'port', WEB_PORT, *[lab.ip(p) for p in pods])
    s.ku('vip', VIP + '/32', 'protocol', 'tcp', 'port', ECHO_PORT, 'target_port', ECHO_PORT)
    s.ku('pod', VIP + '/32', 'port', ECHO_PORT, *[lab.ip(p) for p in pods])
    s.say('    (pods run an HTTP server on :8080 and a line echo server on :5000)')
    labkit.serve(lab, 'http', 8080)
    labkit.serve(lab, 'tcp', ECHO_PORT)

    s.section('2. HTTP to the ClusterIP %s:%d from both clients' % (VIP, WEB_PORT))
    results = []
    for client in lab.clients:
        got = labkit.http_gets(client, kp_lab.url_for(VIP, WEB_PORT), requests_per_client)
        for r in got:
            r['client'] = client.name
        results += got
    ok = [r for r in results if r.get('ok')]
    seen = labkit.counts_of([r['body'] for r in ok])
    s.say('%d GETs, %d answered; which pod answered:' % (len(results), len(ok)))
    s.say(labkit.bar_chart(seen, order=pods, expected=1.0 / len(pods)))
    report['clusterip'] = {'requests': len(results), 'answered': len(ok),
                           'by_pod': dict(seen)}
    check('every HTTP GET to the ClusterIP was answered', len(ok) == len(results),
          '%d/%d' % (len(ok), len(results)))
    check('every pod got a share (each >= 1/3 of an even share)',
          set(seen) == set(pods) and min(seen.values()) >= len(ok) / len(pods) / 3,
          dict(seen))
    wrong_peer = [r for r in ok if r['body']['peer'] != lab.ip(r['client'])]
    check('the pods saw the clients\' real addresses (DNAT only)', not wrong_peer,
          wrong_peer[:2] or '%d/%d' % (len(ok), len(ok)))
    web = s.vip(VIP + '/32', WEB_PORT)
    by_counter = {pod_by_ip.get(p['address'], p['address']): p['new_sessions']
                  for p in web['pods']}
    report['clusterip']['counters_by_pod'] = by_counter
    flows = labkit.sessions_of([r['body'] for r in ok])
    check('the controller\'s per-pod counters agree with the clients',
          by_counter == {p: flows.get(p, 0) for p in pods}, by_counter)

    s.section('3. one long TCP connection to %s:%d' % (VIP, ECHO_PORT))
    long_conn = kp_lab.start_tcp_session(lab.clients[0], VIP, ECHO_PORT, count=8,
                                         interval=0.25)
    time.sleep(0.5)
    during = s.sessions(prefix=VIP + '/32', port=ECHO_PORT)
    short = labkit.parallel([lambda: kp_lab.start_tcp_session(lab.clients[1], VIP, ECHO_PORT,
                                                              count=1)] * 12)
    long_result = long_conn.result()
    long_pods = [r['name'] for r in long_result['replies']]
    short_pods = labkit.counts_of([r['replies'][0] for r in short if r['replies']])
    s.say('the long connection (8 lines over 2 s) was answered by: %s' % ' '.join(long_pods))
    s.say('12 short connections meanwhile went to:')
    s.say(labkit.bar_chart(short_pods, order=pods))
    s.say('sessions listed while it was open: %d' % during['count'])
    report['long_tcp'] = {'replies': long_pods, 'short_by_pod': dict(short_pods),
                          'sessions_listed_during': during['count']}
    check('the long TCP connection stayed on one pod',
          long_result.get('ok') and len(set(long_pods)) == 1, long_pods)
    check('short connections meanwhile still spread over pods', len(short_pods) >= 2,
          dict(short_pods))
    check('the controller listed the open session', during['count'] >= 1,
          during['sessions'][:1])

    s.section('4. NodePort: HTTP to the node address %s:%d' % (NODE_IP, NODE_PORT))
    np_results = labkit.http_gets(lab.clients[1], kp_lab.url_for(NODE_IP, NODE_PORT), 9)
    np_ok = [r for r in np_results if r.get('ok')]
    np_seen = labkit.counts_of([r['body'] for r in np_ok])
    s.say('%d GETs from c2, %d answered; which pod answered:' % (len(np_results), len(np_ok)))
    s.say(labkit.bar_chart(np_seen, order=pods))
    report['nodeport'] = {'requests': len(np_results), 'answered': len(np_ok),
                          'by_pod': dict(np_seen)}
    check('NodePort %s:%d answered every GET' % (NODE_IP, NODE_PORT),
          len(np_ok) == len(np_results), '%d/%d' % (len(np_ok), len(np_results)))
    check('NodePort reached more than one pod', len(np_seen) >= 2, dict(np_seen))

    s.section('5. what the controller saw')
    show = s.ku('show')
    verbose = s.ku('show', 'vip', 'verbose')
    counters = s.get('/counters')
    caches = counters.get('switches', {})
    report['show'] = s.get('/show')
    report['switch_cache'] = caches
    check('ku show / ku show vip verbose list the Service',
          VIP in show.stdout and VIP in verbose.stdout and 'POD' in verbose.stdout,
          'per-pod rows shown' if 'POD' in verbose.stdout else verbose.stdout[:200])
    if s.switch_kind == 'kpswitch':
        check('the switch reported its flow-cache figures', any(caches.values()),
              {d: {k: c.get(k) for k in ('hits', 'misses', 'entries')} for d, c in caches.items()})


def run(switch='kpswitch', cli=False, out=None, requests_per_client=20):
    """Run the demo; returns its report (JSON-able), 'passed' is the verdict."""
    return labkit.run_lab(lambda s: scenario(s, requests_per_client),
                          'kp demo (ClusterIP, stickiness, NodePort) on %s',
                          switch, cli, out, prefer_default_ports=True, plain_names=True,
                          clients=2, pods=3)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
