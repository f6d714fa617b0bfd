#!/usr/bin/env python3
"""ClusterIP load balancing: how new connections spread over a Service's pods.

Topology: `kpnode` (clients c1, c2; pods p1..p3) on kp-switch, controller kp_app.
Service:  ClusterIP 10.96.0.10:80 (TCP) -> pods :8080, configured with `ku`.

What it does: each client makes 30 HTTP GETs to 10.96.0.10:80, each a new TCP
connection from a new source port. The first packet of each connection goes up to the
controller, which picks a pod through the Service's Maglev new-connection table (1024
slots, each pod owning about a third) and installs the session's flows (DNAT to the pod
on the way in, SNAT back to the ClusterIP on the way out).

What to look at:
  - the bar charts, per client and overall: every pod gets roughly a third;
  - the pods saw the clients' own addresses (only the destination is translated);
  - `ku show vip verbose`: the controller's per-pod NEW counters are exactly the
    counts the clients saw (one new session per connection).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP, PORT = '10.96.0.10', 80


def scenario(s, requests_per_client):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]

    s.section('configure')
    s.ku('conf', 'node_ip', '10.0.0.1')
    s.ku('vip', VIP + '/32', 'protocol', 'tcp', 'port', PORT, 'target_port', 8080)
    s.ku('pod', VIP + '/32', 'port', PORT, *[lab.ip(p) for p in pods])
    labkit.serve(lab, 'http', 8080)

    s.section('%d HTTP GETs from each client to %s:%d' % (requests_per_client, VIP, PORT))
    total, per_client, wrong_peer, failed, bodies = {}, {}, [], 0, []
    for client in lab.clients:
        results = labkit.http_gets(client, kp_lab.url_for(VIP, PORT), requests_per_client)
        ok = [r['body'] for r in results if r.get('ok')]
        bodies += ok
        failed += len(results) - len(ok)
        wrong_peer += [b for b in ok if b['peer'] != lab.ip(client.name)]
        seen = labkit.counts_of(ok)
        per_client[client.name] = dict(seen)
        s.say('from %s (%s):' % (client.name, lab.ip(client.name)))
        s.say(labkit.bar_chart(seen, order=pods))
        for name, n in seen.items():
            total[name] = total.get(name, 0) + n
    answered = sum(total.values())
    s.say('overall:')
    s.say(labkit.bar_chart(total, order=pods, expected=1.0 / len(pods)))
    shares = {p: round(total.get(p, 0) / answered, 3) if answered else 0 for p in pods}
    report.update(requests=requests_per_client * len(lab.clients), answered=answered,
                  by_pod={p: total.get(p, 0) for p in pods}, by_client=per_client,
                  shares=shares)
    check('every GET was answered', failed == 0, '%d failed' % failed)
    check('every pod got between 0.4x and 2x an even share',
          all(0.4 / len(pods) <= x <= 2.0 / len(pods) for x in shares.values()), shares)
    check('the pods saw the clients\' real addresses', not wrong_peer,
          wrong_peer[:2] or 'all %d' % answered)

    s.section('the controller\'s view')
    s.ku('show', 'vip', 'verbose')
    vip = s.vip(VIP + '/32', PORT)
    by_ip = s.pod_names_by_ip()
    counted = {by_ip[p['address']]: p['new_sessions'] for p in vip['pods']}
    report['counters_by_pod'] = counted
    report['vip_counters'] = vip['counters']
    flows = labkit.sessions_of(bodies)
    report['flows'] = sum(flows.values())
    check('per-pod new-session counters equal the flows the clients saw',
          counted == {p: flows.get(p, 0) for p in pods}, counted)
    check('the Service counted one new session per flow (5-tuple)',
          vip['counters']['new_sessions'] == sum(flows.values()),
          '%d new sessions, %d flows' % (vip['counters']['new_sessions'], sum(flows.values())))


def run(switch='kpswitch', cli=False, out=None, requests_per_client=30):
    return labkit.run_lab(lambda s: scenario(s, requests_per_client),
                          'ClusterIP load balancing on %s',
                          switch, cli, out, clients=2, pods=3)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
