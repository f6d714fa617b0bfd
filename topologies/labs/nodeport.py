#!/usr/bin/env python3
"""NodePort over TCP and UDP: a Service reached at the node's own address.

Topology: `kpnode` (clients c1, c2; pods p1..p3) on kp-switch, controller kp_app.
Service:  10.96.0.40:80 (TCP and UDP) -> pods :8080, NodePort 30080; the node address
          is 10.0.0.1 (`ku conf node_ip 10.0.0.1`).

What it does, and what to look at:
  1. HTTP (TCP) to 10.0.0.1:30080 from both clients: spread over the pods like the
     ClusterIP. A TCP handshake only completes if the SYN-ACK comes back from exactly
     10.0.0.1:30080, so every answered GET proves the reply was SNATed to the node
     address and node port.
  2. UDP to 10.0.0.1:30080 from several source ports: look at "the client saw": every
     reply came from 10.0.0.1:30080 (the node address and node port), never from the pod;
     and the pods saw the clients' own addresses.
  3. The ClusterIP 10.96.0.40:80 of the same Service works alongside; `ku show sessions`
     shows each session with the address the client used (VIP column).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

VIP, PORT, NODE_IP, NODE_PORT, TARGET = '10.96.0.40', 80, '10.0.0.1', 30080, 8080


def scenario(s):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]

    s.section('configure')
    s.ku('conf', 'node_ip', NODE_IP)
    s.ku('vip', VIP + '/32', 'protocol', 'any', 'port', PORT, 'target_port', TARGET,
         'node_port', NODE_PORT)
    s.ku('pod', VIP + '/32', 'port', PORT, *[lab.ip(p) for p in pods])
    labkit.serve(lab, 'http', TARGET)
    labkit.serve(lab, 'udp', TARGET)

    s.section('TCP: HTTP to the node port %s:%d' % (NODE_IP, NODE_PORT))
    tcp = []
    for client in lab.clients:
        for r in labkit.http_gets(client, kp_lab.url_for(NODE_IP, NODE_PORT), 10):
            r['client'] = client.name
            tcp.append(r)
    tcp_ok = [r for r in tcp if r.get('ok')]
    tcp_seen = labkit.counts_of([r['body'] for r in tcp_ok])
    s.say('%d GETs, %d answered:' % (len(tcp), len(tcp_ok)))
    s.say(labkit.bar_chart(tcp_seen, order=pods))
    tcp_peers_ok = all(r['body']['peer'] == lab.ip(r['client']) for r in tcp_ok)
    report['tcp'] = {'requests': len(tcp), 'answered': len(tcp_ok), 'by_pod': dict(tcp_seen),
                     'pods_saw_client': tcp_peers_ok}
    check('TCP to the node port: every GET answered', len(tcp_ok) == len(tcp),
          '%d/%d' % (len(tcp_ok), len(tcp)))
    check('TCP to the node port reached every pod', set(tcp_seen) == set(pods), dict(tcp_seen))
    check('TCP: the pods saw the clients\' addresses', tcp_peers_ok)

    s.section('UDP: datagrams to %s:%d from 12 source ports' % (NODE_IP, NODE_PORT))
    udp = labkit.parallel([
        (lambda c=c, p=p: kp_lab.start_udp_requests(c, NODE_IP, NODE_PORT, count=3,
                                                     interval=0.1, src_port=p))
        for c in lab.clients for p in range(42000, 42006)])
    replies = [(c.name, r) for c, res in zip([c for c in lab.clients for _ in range(6)], udp)
               for r in res['replies'] if 'name' in r]
    seen_from = labkit.Counter('%s:%d' % (r['from'], r['from_port']) for _, r in replies)
    udp_seen = labkit.counts_of([r for _, r in replies])
    s.say('%d datagrams answered of %d' % (len(replies), 3 * len(udp)))
    s.say('the client saw the replies come from: %s' % dict(seen_from))
    s.say('the pods that answered:')
    s.say(labkit.bar_chart(udp_seen, order=pods))
    peers_ok = all(r['peer'] == lab.ip(c) for c, r in replies)
    report['udp'] = {'datagrams': 3 * len(udp), 'answered': len(replies),
                     'reply_sources': dict(seen_from), 'by_pod': dict(udp_seen),
                     'pods_saw_client': peers_ok}
    check('UDP to the node port: every datagram answered', len(replies) == 3 * len(udp),
          '%d/%d' % (len(replies), 3 * len(udp)))
    check('UDP: the client saw the node address and node port as its peer',
          set(seen_from) == {'%s:%d' % (NODE_IP, NODE_PORT)}, dict(seen_from))
    check('UDP: each flow stayed on one pod',
          all(len({r['name'] for r in res['replies'] if 'name' in r}) == 1 for res in udp))
    check('UDP: the pods saw the clients\' addresses', peers_ok)

    s.section('the same Service by its ClusterIP %s:%d' % (VIP, PORT))
    cip = kp_lab.http_get(lab.clients[0], kp_lab.url_for(VIP, PORT))
    cip_udp = kp_lab.udp_request(lab.clients[0], VIP, PORT)
    via = [(r['from'], r['from_port']) for r in cip_udp['replies'] if 'from' in r]
    s.say('HTTP answered by %s; UDP reply from %s' % (
        (cip.get('body') or {}).get('name'), via))
    report['clusterip'] = {'http_ok': bool(cip.get('ok')), 'udp_reply_from': via}
    check('the ClusterIP works alongside (TCP and UDP, reply from the VIP)',
          cip.get('ok') and via == [(VIP, PORT)], cip.get('error') or via)
    s.ku('show', 'sessions', 'limit', 6)
    s.ku('show', 'vip', 'verbose')


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'NodePort over TCP and UDP on %s',
                          switch, cli, out, clients=2, pods=3)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
