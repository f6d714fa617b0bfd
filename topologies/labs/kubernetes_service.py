#!/usr/bin/env python3
"""A Kubernetes Service applied with `ku apply -f`, then following its endpoints.

Topology: `kpnode` (clients c1, c2; pods p1..p3 at 10.0.0.101..103) on kp-switch,
controller kp_app; the node address is 10.0.0.1.
Manifest: manifests/shop.yaml, the Service shop/web (ClusterIP 10.96.0.50:80, NodePort
          30080, targetPort "http") and its EndpointSlice (port "http" = 8080, pods
          p1..p3), as `kubectl get svc,endpointslices -o yaml` gives them.

What it does, and what to look at:
  1. `ku apply -f shop.yaml`: one VIP, created with three pods; its target port is the
     EndpointSlice's 8080 (the Service only named it). HTTP to the ClusterIP and to the
     NodePort reaches every pod.
  2. p3 stops being ready (its endpoint says ready: false) and the file is applied
     again: the VIP is *updated*, not replaced: "-10.0.0.103". New connections go to p1
     and p2 only; `ku show vip verbose` shows p3 draining, with its sessions.
  3. p3 is ready again: "+10.0.0.103", and it gets new connections again.
  4. `ku show services`, then `ku delete -f shop.yaml`: the Service's VIP is gone.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labkit  # noqa: E402
from labkit import kp_lab  # noqa: E402

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'manifests', 'shop.yaml')
VIP, PORT, NODE_IP, NODE_PORT, TARGET = '10.96.0.50', 80, '10.0.0.1', 30080, 8080
P3_READY = '- addresses: [10.0.0.103]\n  conditions: {ready: true}'
P3_NOT_READY = '- addresses: [10.0.0.103]\n  conditions: {ready: false}'


def reached(lab, address, port, per_client=8, used=None):
    """The pods that answered HTTP GETs from both clients, counted; and all answered?
    `used` collects the (client, source port) of each connection, and those already in
    it are not counted: a client that reuses a source port is still in its old session
    (on a draining pod too), so only new 5-tuples show where new connections go."""
    results = [r for c in lab.clients
               for r in labkit.http_gets(c, kp_lab.url_for(address, port), per_client)]
    answered = [r['body'] for r in results if r.get('ok')]
    used = set() if used is None else used
    new = [b for b in answered if (b['peer'], b['peer_port']) not in used]
    used.update((b['peer'], b['peer_port']) for b in answered)
    return labkit.counts_of(new), len(answered) == len(results)


def scenario(s):
    with open(MANIFEST) as f:
        manifest = f.read()
    assert P3_READY in manifest
    with tempfile.TemporaryDirectory(prefix='kp-lab-') as tmp:
        not_ready = os.path.join(tmp, 'shop-p3-not-ready.yaml')
        with open(not_ready, 'w') as f:
            f.write(manifest.replace(P3_READY, P3_NOT_READY))
        steps(s, not_ready)


def steps(s, not_ready):
    lab, report, check = s.lab, s.report, s.checks.check
    pods = [p.name for p in lab.pods]
    s.section('apply the Service and its EndpointSlice')
    s.ku('conf', 'node_ip', NODE_IP)
    applied = s.ku('apply', '-f', MANIFEST).stdout
    labkit.serve(lab, 'http', TARGET)
    vip = s.vip(VIP + '/32', PORT)
    report['vip'] = {k: vip[k] for k in ('target_port', 'node_port', 'service')}
    check('apply created the VIP with its three pods',
          'created' in applied and len(vip['pods']) == 3, ' '.join(applied.split()))
    check('the named target port resolved to the EndpointSlice\'s port',
          vip['target_port'] == TARGET, vip['target_port'])
    used = set()
    seen, all_ok = reached(lab, VIP, PORT, per_client=12, used=used)
    node_seen, node_ok = reached(lab, NODE_IP, NODE_PORT, per_client=4)
    s.say('ClusterIP %s:%d, by pod:' % (VIP, PORT))
    s.say(labkit.bar_chart(seen, order=pods))
    report['before'] = {'clusterip': dict(seen), 'nodeport': dict(node_seen)}
    check('the ClusterIP reaches every pod', all_ok and set(seen) == set(pods), dict(seen))
    check('the NodePort reaches the Service', node_ok and node_seen, dict(node_seen))

    s.section('p3 is no longer ready: apply again')
    updated = s.ku('apply', '-f', not_ready).stdout
    seen, all_ok = reached(lab, VIP, PORT, per_client=12, used=used)
    s.say('new connections (new source ports), by pod:')
    s.say(labkit.bar_chart(seen, order=pods))
    s.ku('show', 'vip', 'verbose')
    states = {p['address']: p['state'] for p in s.vip(VIP + '/32', PORT)['pods']}
    report['p3_not_ready'] = {'clusterip': dict(seen), 'states': states}
    check('apply updated the VIP: p3 out, nothing replaced',
          'updated' in updated and '-10.0.0.103' in updated and 'replaced' not in updated,
          ' '.join(updated.split()))
    check('new connections avoid p3', all_ok and set(seen) == {'p1', 'p2'}, dict(seen))
    check('p3 drains: it keeps its open sessions until they are idle',
          states.get('10.0.0.103') == 'draining', states)

    s.section('p3 is ready again: apply the first file')
    back = s.ku('apply', '-f', MANIFEST).stdout
    seen, all_ok = reached(lab, VIP, PORT, per_client=12, used=used)
    s.say(labkit.bar_chart(seen, order=pods))
    report['p3_ready'] = {'clusterip': dict(seen)}
    check('apply added p3 back', '+10.0.0.103' in back, ' '.join(back.split()))
    check('p3 gets new connections again', all_ok and set(seen) == set(pods), dict(seen))

    s.section('delete the Service')
    s.ku('show', 'services')
    s.ku('delete', '-f', MANIFEST)
    left = s.get('/vips')
    report['after_delete'] = {'vips': len(left)}
    check('delete removed the Service\'s VIP', left == [], left)


def run(switch='kpswitch', cli=False, out=None):
    return labkit.run_lab(scenario, 'a Kubernetes Service applied with ku on %s',
                          switch, cli, out, clients=2, pods=3)


def main(argv=None):
    return labkit.lab_main(run, __doc__, argv)


if __name__ == '__main__':
    sys.exit(main())
