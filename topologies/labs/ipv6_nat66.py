#!/usr/bin/env python3
"""IPv6: a ClusterIP with NAT66.

Topology: `kpnode` (clients c1, c2 at fd00::11, fd00::12; pods p1..p3 at fd00::101..103)
on kp-switch, controller kp_app; the node address is fd00::1.
Service:  ClusterIP [fd00:96::10]:80 (a /128 in the IPv6 service range) -> pods' IPv6
          addresses :8080, NAT66; and [fd00:96::10]:53 over UDP -> pods :5353.

What it does, and what to look at:
  1. `ku vip fd00:96::10/128 ... nat66`: the VIP and its pods are IPv6; a pod of the
     other family would be refused.
  2. HTTP over IPv6 from both clients to http://[fd00:96::10]/: spread over the pods
     (bar chart); the pods saw the clients' IPv6 addresses.
  3. UDP over IPv6: each reply reaches the client from [fd00:96::10]:53 -- the client
     only ever sees the VIP, the reply was un-NATed (SNAT66) on the way back.
  4. `ku show vip verbose` lists the IPv6 Service with its counters.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP6 = 'fd00:96::10'


def scenario(s):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]
    ip6 = {p: lab.ip(p, 6) for p in pods}

    s.section('configure (IPv6)')
    s.ku('conf', 'node_ip', '10.0.0.1', 'node_ip6', 'fd00::1')
    s.ku('vip', VIP6 + '/128', 'protocol', 'tcp', 'port', 80, 'target_port', 8080, 'nat66')
    s.ku('pod', VIP6 + '/128', 'port', 80, *ip6.values())
    s.ku('vip', VIP6 + '/128', 'protocol', 'udp', 'port', 53, 'target_port', 5353, 'nat66')
    s.ku('pod', VIP6 + '/128', 'port', 53, *ip6.values())
    wrong = s.ku('pod', VIP6 + '/128', 'port', 80, lab.ip(pods[0], 4), check=False)
    check('an IPv4 pod for the IPv6 VIP is refused', wrong.returncode != 0,
          (wrong.stderr or wrong.stdout).strip())
    labkit.serve(lab, 'http', 8080)
    labkit.serve(lab, 'udp', 5353)

    s.section('HTTP over IPv6 to http://[%s]:80/' % VIP6)
    results = []
    for client in lab.clients:
        for r in labkit.http_gets(client, kp_lab.url_for(VIP6, 80), 15):
            r['client'] = client.name
            results.append(r)
    ok = [r for r in results if r.get('ok')]
    seen = labkit.counts_of([r['body'] for r in ok])
    s.say('%d GETs, %d answered:' % (len(results), len(ok)))
    s.say(labkit.bar_chart(seen, order=pods, expected=1.0 / len(pods)))
    wrong_peer = [r['body'] for r in ok if r['body']['peer'] != lab.ip(r['client'], 6)]
    report['http6'] = {'requests': len(results), 'answered': len(ok), 'by_pod': dict(seen),
                       'peers': sorted({r['body']['peer'] for r in ok})}
    check('every HTTP GET over IPv6 was answered', len(ok) == len(results),
          '%d/%d' % (len(ok), len(results)))
    check('the GETs reached every pod', set(seen) == set(pods), dict(seen))
    check('the pods saw the clients\' IPv6 addresses', not wrong_peer,
          wrong_peer[:2] or report['http6']['peers'])

    s.section('UDP over IPv6 to [%s]:53' % VIP6)
    sweep = labkit.udp_sweep(lab.clients[0], VIP6, 53, range(44000, 44012))
    answered = [r for r in sweep.values() if r]
    sources = labkit.Counter('[%s]:%d' % (r['from'], r['from_port']) for r in answered)
    udp_seen = labkit.counts_of(answered)
    s.say('%d of %d flows answered; the replies came from %s' % (
        len(answered), len(sweep), dict(sources)))
    s.say(labkit.bar_chart(udp_seen, order=pods))
    report['udp6'] = {'flows': len(sweep), 'answered': len(answered),
                      'reply_sources': dict(sources), 'by_pod': dict(udp_seen)}
    check('every UDP flow over IPv6 was answered', len(answered) == len(sweep),
          '%d/%d' % (len(answered), len(sweep)))
    check('the client saw [%s]:53 as the peer (NAT66 both ways)' % VIP6,
          set(sources) == {'[%s]:53' % VIP6}, dict(sources))

    s.section('the controller\'s view')
    s.ku('show', 'vip', 'verbose')
    vip = s.vip(VIP6 + '/128', 80)
    report['vip'] = {'nat': vip['nat'], 'new_sessions': vip['counters']['new_sessions']}
    check('the Service is NAT66 and counted every connection',
          vip['nat'] == 'nat66' and vip['counters']['new_sessions'] == sum(
              labkit.sessions_of([r['body'] for r in ok]).values()), report['vip'])


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'IPv6 ClusterIP with NAT66 on %s',
                          switch, cli, out, clients=2, pods=3)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
