"""kp_app's programming as it goes on the wire, decoded by kp-switch and applied to its
flow tables: what a VIP's or a pod's deletes leave behind, by OpenFlow 1.3's own delete
rules (cookie mask, non-strict match), not by what kp_app meant them to do."""
import ipaddress
import struct

from kp_app import frames, ofmsg, pipeline
from kp_app.kubeproxy import KubeProxy
from kp_app.pipeline import FlowAdd, FlowDelete
from kp_switch import wire
from kp_switch.actions import Context
from kp_switch.tables import FlowTables

CLIENT_MAC, CLIENT_PORT = "00:00:00:00:00:11", 1
PODS = ["10.0.0.101", "10.0.0.102"]


class Rig:
    """One KubeProxy whose switch 1 is a kp-switch flow table set."""

    def __init__(self):
        self.tables = FlowTables(3, 10000)
        self.proxy = KubeProxy(self._send)
        self.proxy.set_conf(node_ip="10.0.0.1/24")
        self.proxy.switch_connected(1)

    def _send(self, dpid, msgs):
        for msg in msgs:
            if isinstance(msg, (FlowAdd, FlowDelete)):
                fm = wire.decode(ofmsg.encode(msg, 1, kp_switch=True)).msg
                self.tables.flow_mod(fm, Context(lambda p: True, lambda g: False, 3), 0.0)

    def flows(self, kind):
        return [e for e in self.tables.all_entries()
                if pipeline.cookie_parts(e.cookie)[0] == kind]

    def replies_of(self, pod):
        return rig_replies(self.tables.all_entries(), pod)

    def session(self, port: int) -> str:
        """A client's first TCP packet to the VIP's `port`: the pod it went to."""
        gateway = self.proxy.nodes[1].mac
        self.proxy.packet_in(1, CLIENT_PORT, frames.arp(2, CLIENT_MAC, "10.0.0.11", gateway,
                                                        "10.0.0.1"))
        for i, pod in enumerate(PODS):
            self.proxy.packet_in(1, 2 + i, frames.arp(2, f"00:00:00:00:01:0{i}", pod, gateway,
                                                      "10.0.0.1"))
        syn = struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 5 << 4, frames.TCP_SYN, 65535, 0, 0)
        self.proxy.packet_in(1, CLIENT_PORT, frames._l3_frame(
            gateway, CLIENT_MAC, ipaddress.ip_address("10.0.0.11"),
            ipaddress.ip_address("10.96.0.10"), frames.TCP, syn))
        (session,) = self.proxy.nodes[1].sessions
        return str(session.pod)


def two_vips_sharing_pods():
    rig = Rig()
    for port in (80, 81):
        rig.proxy.add_vip("10.96.0.10/32", port=port, target_port=8080, protocol="tcp")
        rig.proxy.add_pods("10.96.0.10/32", port, PODS)
    return rig


def test_deleting_one_of_two_vips_keeps_the_reply_flows_they_share():
    rig = two_vips_sharing_pods()
    shared = {pod: rig.replies_of(pod) for pod in PODS}
    assert [len(f) for f in shared.values()] == [3, 3]  # table 0; local / routed in SESSIONS
    rig.proxy.del_vip("10.96.0.10/32", 81)
    # The same entries: not deleted and added again (a gap, counters and caches reset).
    assert {pod: rig.replies_of(pod) for pod in PODS} == shared
    assert len(rig.flows(pipeline.KIND_VIP)) == 1
    rig.proxy.del_vip("10.96.0.10/32", 80)
    assert not rig.flows(pipeline.KIND_REPLY_MISS) and not rig.flows(pipeline.KIND_VIP)


def test_a_pods_reply_flows_go_with_its_last_vip_and_nothing_else_does():
    rig = two_vips_sharing_pods()
    kept = rig.session(81)
    gone = next(p for p in PODS if p != kept)
    before = list(rig.tables.all_entries())
    rig.proxy.del_pods("10.96.0.10/32", 80, [gone], flush=True)
    assert list(rig.tables.all_entries()) == before     # VIP 81 still has the pod
    rig.proxy.del_pods("10.96.0.10/32", 81, [gone], flush=True)
    after = list(rig.tables.all_entries())
    assert not rig.replies_of(gone)
    assert after == [e for e in before if e not in rig_replies(before, gone)]
    assert len(rig.flows(pipeline.KIND_FORWARD) + rig.flows(pipeline.KIND_REVERSE)) == 2


def rig_replies(entries, pod):
    return [e for e in entries if pipeline.cookie_parts(e.cookie)[0] == pipeline.KIND_REPLY_MISS
            and dict(e.match.to_user_items()).get("ipv4_src") == pod]
