#!/usr/bin/env python3
"""Scaling pods up and down: how few flows move with the Maglev new-connection table.

Topology: `kpnode` (clients c1, c2; pods p1..p4) on kp-switch, controller kp_app.
Service:  10.96.0.30:53 (UDP) -> pods :5353, new-connection table of 1024 slots.

A fixed set of flows -- 240 UDP 5-tuples, 120 source ports on each client -- is sent
three times, and each time every flow is a *new* session (the idle timeout is 1 s and
the lab waits for `GET /v1/sessions` to drop to 0 in between), so each time the
new-connection table alone decides where each 5-tuple goes:

  A. pods p1 p2 p3           (the starting assignment)
  B. p4 added   (3 -> 4)     ideal: 1/4 of the flows move, all of them to p4
  C. p2 removed (4 -> 3)     ideal: the flows on p2 (about 1/4) move, no other flow moves

What to look at: "moved" against "ideal" for each change, where the movers went, and
the bar charts before and after. For comparison, `hash mod N` would move about 3/4 of
the flows at each step. The per-pod NEW counters of `ku show vip verbose` add up to the
three rounds.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402

VIP, PORT, TARGET = '10.96.0.30', 53, 5353
PORTS = list(range(43000, 43120))


def scenario(s):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]
    ip = {p: lab.ip(p) for p in pods}
    c1, c2 = lab.clients
    flows = [(c.name, p) for c in (c1, c2) for p in PORTS]

    s.section('configure: idle timeout 1 s, a UDP Service on p1 p2 p3')
    s.ku('conf', 'node_ip', '10.0.0.1', 'timeout', 1)
    s.ku('vip', VIP + '/32', 'protocol', 'udp', 'port', PORT, 'target_port', TARGET)
    s.ku('pod', VIP + '/32', 'port', PORT, ip['p1'], ip['p2'], ip['p3'])
    labkit.serve(lab, 'udp', TARGET)

    def round_(label):
        started = time.monotonic()
        seen = {}
        for client in (c1, c2):
            for port, reply in labkit.udp_sweep(client, VIP, PORT, PORTS).items():
                seen[(client.name, port)] = reply['name'] if reply else None
        counts = labkit.Counter(v for v in seen.values() if v)
        s.say('%s: %d of %d flows answered in %.1f s' % (
            label, sum(counts.values()), len(flows), time.monotonic() - started))
        s.say(labkit.bar_chart(counts, order=pods))
        answer, waited = s.wait_sessions(lambda a: a['count'] == 0, timeout=8,
                                         prefix=VIP + '/32', port=PORT)
        s.say('    (sessions expired %.1f s later: %d left)' % (waited, answer['count']))
        check('%s: every flow answered' % label, all(seen.values()),
              '%d/%d' % (sum(counts.values()), len(flows)))
        check('%s: the sessions expired before the next round' % label,
              answer['count'] == 0, '%d left' % answer['count'])
        return seen, dict(counts)

    def compare(label, before, after, ideal, allowed_target=None, removed=None):
        moved = [f for f in flows if before[f] != after[f]]
        frac = len(moved) / len(flows)
        where = labkit.Counter('%s->%s' % (before[f], after[f]) for f in moved)
        s.say('%s: %d of %d flows moved (%.1f%%; ideal %.1f%%, hash mod N ~75%%): %s' % (
            label, len(moved), len(flows), 100 * frac, 100 * ideal, dict(where)))
        stray = [f for f in moved if (allowed_target and after[f] != allowed_target) or
                 (removed and before[f] != removed)]
        out = {'moved': len(moved), 'flows': len(flows), 'fraction': round(frac, 3),
               'ideal': ideal, 'moves': dict(where), 'unnecessary_moves': len(stray)}
        check('%s: moved %.1f%%, close to the ideal %.0f%% (within 10-40%%)'
              % (label, 100 * frac, 100 * ideal), 0.10 <= frac <= 0.40, dict(where))
        check('%s: at most 5%% of flows moved that had no reason to' % label,
              len(stray) <= 0.05 * len(flows), '%d unnecessary moves' % len(stray))
        return out

    s.section('A. three pods')
    a, counts_a = round_('A (p1 p2 p3)')

    s.section('B. scale up: add p4')
    s.ku('pod', VIP + '/32', 'port', PORT, ip['p4'])
    b, counts_b = round_('B (p1 p2 p3 p4)')
    up = compare('3 -> 4 pods', a, b, 1 / 4, allowed_target='p4')

    s.section('C. scale down: remove p2')
    s.ku('pod', VIP + '/32', 'port', PORT, ip['p2'], 'del')
    c, counts_c = round_('C (p1 p3 p4)')
    down = compare('4 -> 3 pods', b, c, 1 / 4, removed='p2')
    check('no flow went to the removed pod p2', 'p2' not in counts_c, counts_c)

    s.section('the controller\'s counters')
    s.ku('show', 'vip', 'verbose')
    vip = s.vip(VIP + '/32', PORT)
    by_ip = s.pod_names_by_ip()
    counted = {by_ip[p['address']]: p['new_sessions'] for p in vip['pods']}
    expected = {p: counts_a.get(p, 0) + counts_b.get(p, 0) + counts_c.get(p, 0)
                for p in counted}
    check('per-pod NEW counters add up to the three rounds', counted == expected,
          {'counters': counted, 'rounds': expected})
    report.update(flows=len(flows), rounds={'A': counts_a, 'B': counts_b, 'C': counts_c},
                  scale_up=up, scale_down=down, counters_by_pod=counted)

    s.section('result')
    s.say('  change        moved    ideal   unnecessary')
    for label, r in (('3 -> 4 pods', up), ('4 -> 3 pods', down)):
        s.say('  %-12s %5.1f%%   %5.1f%%   %d' % (label, 100 * r['fraction'], 100 * r['ideal'],
                                               r['unnecessary_moves']))


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'Maglev: scaling pods up and down on %s',
                          switch, cli, out, clients=2, pods=4)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
