#!/usr/bin/env python3
"""Session stickiness and the idle timeout.

Topology: `kpnode` (clients c1, c2; pods p1..p4) on kp-switch, controller kp_app.
Service:  10.96.0.20:5000 (TCP and UDP) -> pods p1..p3 :5000; p4 joins half-way.

What it does, and what to look at:
  1. `ku conf timeout 2`: sessions end after 2 s without a packet.
  2. One long TCP connection from c1 (a line every 0.4 s for 4 s) and 16 UDP flows from
     c2, each from its own fixed source port (41000..41015, a datagram every 0.4 s).
  3. Half-way, `ku pod ... 10.0.0.104` adds p4: the new-connection table changes, but
     every session already running keeps its pod (look at "stayed on its pod").
  4. The traffic stops; within about the timeout (plus the switch's one-second expiry
     granularity) the flows expire and `GET /v1/sessions` (`ku show sessions`) drops to 0.
  5. The same 16 source ports send again: each is a new session (the Service's NEW
     counter goes up by 16) and picks through the new table, so some flows now land on
     p4 -- and only on p4: Maglev moved nothing else.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP, PORT = '10.96.0.20', 5000
TIMEOUT = 2
SRC_PORTS = list(range(41000, 41016))


def scenario(s):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]
    first, newcomer = pods[:3], pods[3]
    c1, c2 = lab.clients

    s.section('configure: idle timeout %d s, a Service on pods %s' % (TIMEOUT, ' '.join(first)))
    s.ku('conf', 'node_ip', '10.0.0.1', 'timeout', TIMEOUT)
    s.ku('vip', VIP + '/32', 'protocol', 'any', 'port', PORT, 'target_port', PORT)
    s.ku('pod', VIP + '/32', 'port', PORT, *[lab.ip(p) for p in first])
    labkit.serve(lab, 'tcp', PORT)
    labkit.serve(lab, 'udp', PORT)

    s.section('sessions running while %s joins' % newcomer)
    long_tcp = kp_lab.start_tcp_session(c1, VIP, PORT, count=10, interval=0.4)
    flows = [kp_lab.start_udp_requests(c2, VIP, PORT, count=8, interval=0.4, src_port=p)
             for p in SRC_PORTS]
    time.sleep(1.2)
    running = s.sessions(prefix=VIP + '/32', port=PORT)['count']
    s.ku('pod', VIP + '/32', 'port', PORT, lab.ip(newcomer))
    tcp = long_tcp.result()
    udp = [f.result() for f in flows]
    stopped_at = time.monotonic()
    tcp_pods = [r['name'] for r in tcp['replies']]
    before = {}
    udp_stayed = 0
    for port, result in zip(SRC_PORTS, udp):
        names = [r['name'] for r in result['replies'] if 'name' in r]
        if result.get('ok') and len(set(names)) == 1:
            udp_stayed += 1
        before[port] = names[0] if names else None
    s.say('sessions listed before %s joined: %d' % (newcomer, running))
    s.say('long TCP connection, 10 lines: %s' % ' '.join(tcp_pods))
    s.say('UDP flows by pod (every datagram of a flow went to the same pod):')
    s.say(labkit.bar_chart(labkit.Counter(before.values()), order=pods))
    report.update(sessions_while_running=running, tcp_replies=tcp_pods,
                  udp_first_pods={str(k): v for k, v in before.items()},
                  udp_flows_stayed=udp_stayed, udp_flows=len(SRC_PORTS))
    check('the long TCP connection stayed on its pod while %s joined' % newcomer,
          tcp.get('ok') and len(set(tcp_pods)) == 1 and tcp_pods[0] in first,
          tcp_pods if tcp.get('ok') else tcp.get('error'))
    check('every UDP flow stayed on its pod while %s joined' % newcomer,
          udp_stayed == len(SRC_PORTS), '%d/%d%s' % (udp_stayed, len(SRC_PORTS), ''.join(
              '; %s' % r.get('error') for r in udp[:1] if not r.get('ok'))))

    s.section('idle: waiting for the sessions to expire')
    s.ku('show', 'sessions', 'limit', 5)
    new_before = s.vip(VIP + '/32', PORT)['counters']['new_sessions']
    answer, _ = s.wait_sessions(lambda a: a['count'] == 0, timeout=TIMEOUT + 8,
                                prefix=VIP + '/32', port=PORT)
    expired_after = round(time.monotonic() - stopped_at, 1)
    s.say('sessions: %d, %.1f s after the last packet (timeout %d s)'
          % (answer['count'], expired_after, TIMEOUT))
    s.ku('show', 'sessions')
    report.update(sessions_after_idle=answer['count'], expired_after_s=expired_after)
    check('all sessions expired after %d s idle' % TIMEOUT, answer['count'] == 0,
          '%d left after %.1f s' % (answer['count'], expired_after))
    check('not before the timeout', expired_after >= TIMEOUT - 0.5, '%.1f s' % expired_after)

    s.section('the same source ports again: new sessions, picked by the new table')
    again = labkit.parallel([
        (lambda p=p: kp_lab.start_udp_requests(c2, VIP, PORT, count=1, src_port=p))
        for p in SRC_PORTS])
    after = {p: (r['replies'][0]['name'] if r['replies'] and 'name' in r['replies'][0]
                 else None) for p, r in zip(SRC_PORTS, again)}
    moved = {p: (before[p], after[p]) for p in SRC_PORTS if before[p] != after[p]}
    new_after = s.vip(VIP + '/32', PORT)['counters']['new_sessions']
    for p, (a, b) in sorted(moved.items()):
        s.say('  source port %d: %s -> %s' % (p, a, b))
    s.say('%d of %d flows picked another pod (ideal for 3 -> 4 pods: about 1/4)'
          % (len(moved), len(SRC_PORTS)))
    s.say(labkit.bar_chart(labkit.Counter(after.values()), order=pods))
    report.update(udp_pods_after={str(k): v for k, v in after.items()},
                  moved=len(moved), new_sessions_added=new_after - new_before)
    check('every flow was answered again', all(after.values()), after)
    check('each one was a new session (NEW +%d)' % len(SRC_PORTS),
          new_after - new_before == len(SRC_PORTS), '+%d' % (new_after - new_before))
    check('flows that moved all moved to the new pod %s' % newcomer,
          all(b == newcomer for _, b in moved.values()), moved)


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'session stickiness and the idle timeout on %s',
                          switch, cli, out, clients=2, pods=4)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
