"""The declared table layout (kp_app.pipeline_layout) against what kp_app installs: a
cluster of two node switches and a fabric switch between them, with VIPs (ClusterIP,
NodePort, external IP, IPv6), pods, hosts, a session and a pod reaching another pod
directly, in each session mode. Every flow kp_app sends is of exactly one class the
layout declares for that switch's mode; on kp-switch's own flow tables (packet-in and lb
modes, the messages encoded and decoded as on the wire) so is every flow installed; and
every declared class is used by one of the modes, so the layout lists nothing that is
not there."""
import ipaddress
import struct

import pytest

from kp_app import frames, ofmsg, pipeline
from kp_app import pipeline_layout as layout
from kp_app.kubeproxy import KubeProxy
from kp_app.pipeline import FlowAdd, FlowDelete, PacketOut
from kp_switch import wire
from kp_switch.actions import Context
from kp_switch.tables import FlowTables

NODE_PORTS = {1: "eth1", 2: "eth2", 3: "eth3", 9: "uplink"}
# (dpid, port) <-> (dpid, port): nodes 1 and 2 each reach the fabric switch 3
WIRES = {(1, 9): (3, 1), (3, 1): (1, 9), (2, 9): (3, 2), (3, 2): (2, 9)}
GATEWAY_IP = {1: "10.0.1.1", 2: "10.0.2.1"}


class Cluster:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = {1: [], 2: [], 3: []}
        self.kp_switch = mode in (layout.PACKET_IN, layout.LB_MODE)
        self.tables = {dpid: FlowTables(5, 100000) for dpid in self.sent}
        self.probes = []
        self.proxy = KubeProxy(self._send)

    def _send(self, dpid, msgs) -> None:
        for msg in msgs:
            if isinstance(msg, PacketOut):
                for action in msg.actions:
                    far = WIRES.get((dpid, action[1])) if action[0] == "output" else None
                    if far is not None and frames.is_link_probe(msg.data):
                        self.probes.append((far, msg.data))
            elif isinstance(msg, (FlowAdd, FlowDelete)):
                # (the fabric switch is a node switch until its links are known)
                node = self.proxy.nodes.get(dpid)
                role = self.mode if node is None or node.transit_gateways is None \
                    else layout.TRANSIT
                self.sent[dpid].append((role, msg))
                if self.kp_switch:
                    self._install(dpid, msg)

    def _install(self, dpid, msg) -> None:
        fm = wire.decode(ofmsg.encode(msg, 1, kp_switch=True)).msg
        self.tables[dpid].flow_mod(fm, Context(lambda p: True, lambda g: False, 5), 0.0)

    def deliver_probes(self) -> None:
        while self.probes:
            (dpid, port), data = self.probes.pop(0)
            self.proxy.packet_in(dpid, port, data)

    def arp(self, dpid: int, port: int, mac: str, address: str) -> None:
        gateway = self.proxy.nodes[dpid].mac
        self.proxy.packet_in(dpid, port, frames.arp(2, mac, address, gateway, GATEWAY_IP[dpid]))

    def tcp(self, dpid, port, mac, src, dst, sport, dport, flags=frames.TCP_SYN) -> None:
        gateway = self.proxy.nodes[dpid].mac
        segment = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
        self.proxy.packet_in(dpid, port, frames._l3_frame(
            gateway, mac, ipaddress.ip_address(src), ipaddress.ip_address(dst), frames.TCP,
            segment))


def build(mode: str) -> Cluster:
    c = Cluster(mode)
    kp = c.proxy
    kp.set_conf(node_ip="10.0.1.1/24", node_ip6="fd00:1::1/64", dpid=1)
    kp.set_conf(node_ip="10.0.2.1/24", node_ip6="fd00:2::1/64", dpid=2)
    for dpid in (1, 2):
        kp.switch_connected(dpid, dict(NODE_PORTS), mode=mode)
    kp.switch_connected(3, {1: "s3-eth1", 2: "s3-eth2"}, mode=mode)
    c.deliver_probes()
    kp.add_vip("10.96.0.10/32", port=80, target_port=8080, protocol="tcp", node_port=30080,
               external_ips=["192.0.2.10"])
    kp.add_pods("10.96.0.10/32", 80, ["10.0.1.101", "10.0.2.102"])
    kp.add_vip("fd00:96::10/128", port=80, target_port=8080, protocol="tcp")
    kp.add_pods("fd00:96::10/128", 80, ["fd00:1::101"])
    # a VIP no switch compiles (ClientIP affinity): its sessions are the controller's
    kp.add_vip("10.96.0.11/32", port=80, target_port=8080, protocol="tcp",
               affinity_timeout=60)
    kp.add_pods("10.96.0.11/32", 80, ["10.0.1.101"])
    c.arp(1, 1, "00:00:00:00:01:01", "10.0.1.11")          # a client
    c.arp(1, 2, "00:00:00:00:01:65", "10.0.1.101")         # the pods
    c.arp(2, 2, "00:00:00:00:02:66", "10.0.2.102")
    c.tcp(1, 1, "00:00:00:00:01:01", "10.0.1.11", "10.96.0.11", 40000, 80)   # a session
    # a client that reaches the pod directly: its reply is no session's
    c.tcp(1, 2, "00:00:00:00:01:65", "10.0.1.101", "10.0.1.11", 8080, 40001,
          flags=frames.TCP_SYN | 0x10)
    return c


def kind(cookie: int) -> int:
    parts = pipeline.cookie_parts(cookie)
    assert parts is not None, hex(cookie)
    return parts[0]


def mode_of(c: Cluster, dpid: int) -> str:
    return layout.TRANSIT if dpid == 3 else c.mode


@pytest.fixture(scope="module")
def clusters():
    return {mode: build(mode) for mode in (layout.PACKET_IN, layout.CT, layout.LB_MODE)}


@pytest.mark.parametrize("mode", [layout.PACKET_IN, layout.CT, layout.LB_MODE])
def test_every_flow_sent_is_of_one_declared_class(clusters, mode):
    c = clusters[mode]
    for dpid, msgs in c.sent.items():
        for role, f in msgs:
            if isinstance(f, FlowAdd):
                found = layout.classes(f.table, f.priority, kind(f.cookie), role)
                assert len(found) == 1, (dpid, role, f, [x.name for x in found])


@pytest.mark.parametrize("mode", [layout.PACKET_IN, layout.LB_MODE])
def test_every_flow_installed_on_kp_switch_is_of_one_declared_class(clusters, mode):
    c = clusters[mode]
    for dpid, tables in c.tables.items():
        entries = list(tables.all_entries())
        assert entries
        for e in entries:
            found = layout.classes(e.table_id, e.priority, kind(e.cookie), mode_of(c, dpid))
            assert len(found) == 1, (dpid, e.table_id, e.priority, hex(e.cookie))


def test_every_declared_class_is_installed_in_some_mode(clusters):
    used = set()
    for c in clusters.values():
        for msgs in c.sent.values():
            for role, f in msgs:
                if isinstance(f, FlowAdd):
                    (found,) = layout.classes(f.table, f.priority, kind(f.cookie), role)
                    used.add(found.name)
    assert used == {c.name for c in layout.LAYOUT}


def test_the_layout_is_unambiguous_and_printable():
    names = [c.name for c in layout.LAYOUT]
    assert len(names) == len(set(names))
    for a in layout.LAYOUT:       # no two classes of one table share a priority and kind
        for b in layout.LAYOUT:
            if a is not b and a.table == b.table and a.modes & b.modes:
                overlap = range(max(a.priority, b.priority),
                                min(a.priority + a.span, b.priority + b.span) + 1)
                assert not (overlap and set(a.kinds) & set(b.kinds)), (a.name, b.name)
    text = layout.describe()
    assert all(f"[{c.name};" in text for c in layout.LAYOUT)
    assert all(name in text for name in layout.TABLE_NAMES.values())
