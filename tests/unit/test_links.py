"""Link discovery (kp_app.links, KubeProxy's fabric): only this controller's fresh probes
make links, and links that no probe confirms go."""
import pytest

from kp_app import frames
from kp_app.kubeproxy import KubeProxy
from kp_app.links import LINK_TIMEOUT, PROBE_INTERVAL, PROBE_MAX_AGE, LinkProbes
from kp_app.node import gateway_mac
from kp_app.pipeline import PacketOut

FABRIC = 100


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def two_nodes():
    """Nodes 1 and 2 (host ports 1, 2; uplink 3) joined by a fabric switch (ports 1, 2)."""
    sent = {}
    clock = Clock()
    kp = KubeProxy(lambda dpid, msgs: sent.setdefault(dpid, []).extend(msgs), clock=clock)
    kp.sent, kp.clock = sent, clock
    for n in (1, 2):
        kp.set_conf(node_ip=f"10.0.{n}.1/24", dpid=n)
        kp.switch_connected(n, {1: f"s{n}-eth1", 2: f"s{n}-eth2", 3: f"s{n}-eth3"})
    kp.switch_connected(FABRIC, {1: "f0-eth1", 2: "f0-eth2"})
    return kp


def probes_out(msgs):
    return {m.actions: m.data for m in msgs if isinstance(m, PacketOut)
            and frames.is_link_probe(m.data)}


def deliver(kp, sender_dpid, sender_port, receiver_dpid, receiver_port):
    """The probe kp sent out of the sender's port arrives at the receiver's."""
    data = probes_out(kp.sent[sender_dpid])[(("output", sender_port),)]
    kp.packet_in(receiver_dpid, receiver_port, data)


def test_probes_sent_arriving_at_another_switch_make_a_link():
    kp = two_nodes()
    deliver(kp, 1, 3, FABRIC, 1)
    assert kp.links == {(1, 3): (FABRIC, 1), (FABRIC, 1): (1, 3)}


def test_a_probe_forged_by_a_host_makes_no_link():
    kp = two_nodes()
    forged = LinkProbes(b"a host's guess of the secret....").probe(
        gateway_mac(2), 2, 3, kp.clock.now)
    kp.packet_in(1, 1, forged)                       # in at node 1's host port 1
    unsigned = frames.link_probe(gateway_mac(2), 2, 3, b"", kp.clock.now)
    kp.packet_in(1, 1, unsigned[:-16] + bytes(16))   # a tag of zeros
    assert kp.links == {} and kp.probes.refused == 2
    assert 1 not in kp.nodes[1].switch_ports         # still a host port: hosts learned
    assert kp.nodes[1].transit_gateways is None


def test_a_probe_sent_again_later_or_back_where_it_came_from_makes_no_link():
    kp = two_nodes()
    captured = probes_out(kp.sent[2])[(("output", 1),)]    # a host on node 2's port 1 saw it
    kp.packet_in(2, 1, captured)                            # ...and sends it straight back
    kp.clock.now += PROBE_MAX_AGE + 1
    kp.packet_in(1, 1, captured)                            # ...or later, elsewhere
    assert kp.links == {} and kp.probes.refused == 2


def test_links_no_probe_confirms_go_and_confirmed_ones_stay():
    kp = two_nodes()
    deliver(kp, 1, 3, FABRIC, 1)
    deliver(kp, 2, 3, FABRIC, 2)
    assert len(kp.links) == 4
    routes_before = list(kp.nodes[1].routes)
    assert routes_before
    # Round after round, only node 1's uplink probe gets through.
    for _ in range(int(LINK_TIMEOUT // PROBE_INTERVAL) + 1):
        kp.clock.now += PROBE_INTERVAL
        for msgs in kp.sent.values():
            msgs.clear()
        kp.periodic()
        assert probes_out(kp.sent[1]).keys() == {(("output", p),) for p in (1, 2, 3)}
        deliver(kp, 1, 3, FABRIC, 1)
    assert kp.links == {(1, 3): (FABRIC, 1), (FABRIC, 1): (1, 3)}
    assert kp.nodes[1].routes == []       # node 2 is no longer reachable through the fabric


def test_refused_probes_are_logged_once_per_interval_with_their_count(caplog):
    kp = two_nodes()
    forged = LinkProbes(b"x" * 32).probe(gateway_mac(2), 2, 3, kp.clock.now)
    for _ in range(50):
        kp.packet_in(1, 1, forged)
    kp.clock.now += 10.0
    kp.packet_in(1, 1, forged)
    lines = [r.getMessage() for r in caplog.records if "refused a link probe" in r.getMessage()]
    assert len(lines) == 2 and "forged or altered" in lines[0]
    assert "(50 refused since the last such line)" in lines[1]
    assert kp.probes.refused == 51


def test_the_probe_interval_sets_how_old_a_probe_and_how_quiet_a_link_may_be():
    fast = LinkProbes(b"k" * 32, interval=1.0)
    assert (fast.interval, fast.max_age, fast.link_timeout) == (1.0, 1.0, 3.5)
    probe = fast.probe("02:00:00:00:00:01", 1, 2, 100.0)
    assert fast.sender(probe, (2, 1), 100.9) == (1, 2)
    assert fast.sender(probe, (2, 1), 101.5) is None and fast.refused == 1     # stale
    fast.confirm((1, 2), (2, 1), 100.0)
    links = {(1, 2): (2, 1), (2, 1): (1, 2)}
    assert fast.alive(links, 103.4) == links and fast.alive(links, 103.6) == {}
    default = LinkProbes(b"k" * 32)
    assert (default.max_age, default.link_timeout) == (PROBE_MAX_AGE, LINK_TIMEOUT)
    with pytest.raises(ValueError):
        LinkProbes(interval=0.1)
