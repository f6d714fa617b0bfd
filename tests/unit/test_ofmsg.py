"""kp_app's own OpenFlow encoding against Ryu's, byte for byte: every message a real
scenario makes (sessions over IPv4 and IPv6, TCP and UDP, NodePort, prefixes, refusals,
deletes, stats), and random flows over every field and action kp uses."""
import ipaddress
import random
import struct
import types

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_app import frames, ofmsg
from kp_app.kubeproxy import KubeProxy
from kp_app.node import gateway_mac
from kp_app.pipeline import (CacheStatsRequest, FlowAdd, FlowDelete, FlowStatsRequest,
                             PacketOut, SetCacheBuckets)
from kp_switch import wire

DATAPATH = types.SimpleNamespace(ofproto=ofp, ofproto_parser=parser)
GW = gateway_mac(1)


def ryu_actions(actions):
    out = []
    for action in actions:
        if action[0] == "output":
            max_len = ofp.OFPCML_NO_BUFFER if action[1] == ofp.OFPP_CONTROLLER else 0
            out.append(parser.OFPActionOutput(action[1], max_len))
        else:
            out.append(parser.OFPActionSetField(**{action[1]: action[2]}))
    return out


def ryu_encoding(msg, xid):
    """The same message as Ryu builds and serializes it: the reference."""
    if isinstance(msg, FlowAdd):
        instructions = []
        if msg.actions:
            instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                             ryu_actions(msg.actions)))
        if msg.goto is not None:
            instructions.append(parser.OFPInstructionGotoTable(msg.goto))
        ryu = parser.OFPFlowMod(
            DATAPATH, cookie=msg.cookie, table_id=msg.table, command=ofp.OFPFC_ADD,
            idle_timeout=msg.idle_timeout, priority=msg.priority, buffer_id=ofp.OFP_NO_BUFFER,
            flags=ofp.OFPFF_SEND_FLOW_REM if msg.notify_removed else 0,
            match=parser.OFPMatch(**msg.match_dict), instructions=instructions)
    elif isinstance(msg, FlowDelete):
        ryu = parser.OFPFlowMod(
            DATAPATH, cookie=msg.cookie, cookie_mask=msg.cookie_mask,
            table_id=ofp.OFPTT_ALL if msg.table is None else msg.table,
            command=ofp.OFPFC_DELETE, out_group=ofp.OFPG_ANY,
            out_port=ofp.OFPP_ANY if msg.out_port is None else msg.out_port,
            match=parser.OFPMatch(**dict(msg.match)))
    elif isinstance(msg, PacketOut):
        in_port = ofp.OFPP_CONTROLLER if msg.in_port is None else msg.in_port
        ryu = parser.OFPPacketOut(DATAPATH, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                  actions=ryu_actions(msg.actions), data=msg.data)
    elif isinstance(msg, FlowStatsRequest):
        ryu = parser.OFPFlowStatsRequest(
            DATAPATH, 0, ofp.OFPTT_ALL if msg.table is None else msg.table, ofp.OFPP_ANY,
            ofp.OFPG_ANY, msg.cookie, msg.cookie_mask, parser.OFPMatch())
    elif isinstance(msg, SetCacheBuckets):
        ryu = parser.OFPExperimenter(DATAPATH, ofmsg.KP_EXPERIMENTER, ofmsg.KP_SET_BUCKETS,
                                     struct.pack("!I", msg.buckets))
    else:
        ryu = parser.OFPExperimenter(DATAPATH, ofmsg.KP_EXPERIMENTER,
                                     ofmsg.KP_CACHE_STATS_REQUEST, b"")
    ryu.set_xid(xid)
    ryu.serialize()
    return bytes(ryu.buf)


def l4(src, sport, dst, dport, proto, eth_src):
    if proto == frames.TCP:
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, frames.TCP_SYN, 65535, 0, 0)
    else:
        seg = struct.pack("!HHHH", sport, dport, 9, 0) + b"q"
    return frames._l3_frame(GW, eth_src, ipaddress.ip_address(src), ipaddress.ip_address(dst),
                            proto, seg)


def scenario_messages():
    """Everything a node switch is sent through a service's life."""
    sent = []
    kp = KubeProxy(lambda dpid, msgs: sent.extend(msgs))
    kp.set_conf(node_ip="10.0.0.1/24", node_ip6="fd00::1/64", timeout=9)
    kp.switch_connected(1, {1: "c1", 2: "p1", 3: "p2", 4: "c6", 5: "p6"})
    kp.set_interface("nat4", "p1")
    kp.add_vip("10.96.0.0/30", port=80, target_port=8080, node_port=30080)
    kp.add_vip("10.96.0.20/32", port=53, target_port=53, protocol="udp",
               external_ips=["192.0.2.7"])
    kp.add_vip("fd00:96::/126", port=443, target_port=8443, node_port=30443, nat="nat66")
    kp.add_vip("10.96.0.30/32", port=0, protocol="tcp")   # no pods: refuses
    kp.add_pods("10.96.0.0/30", 80, ["10.0.0.101", "10.0.0.102"])
    kp.add_pods("10.96.0.20/32", 53, ["10.0.0.101"])
    kp.add_pods("fd00:96::/126", 443, ["fd00::101"])
    kp.packet_in(1, 1, frames.arp(2, "00:00:00:00:00:11", "10.0.0.11", GW, "10.0.0.1"))
    kp.packet_in(1, 2, frames.arp(2, "00:00:00:00:01:01", "10.0.0.101", GW, "10.0.0.1"))
    kp.packet_in(1, 3, frames.arp(2, "00:00:00:00:01:02", "10.0.0.102", GW, "10.0.0.1"))
    kp.packet_in(1, 1, frames.arp_request("00:00:00:00:00:11", "10.0.0.11", "10.96.0.20"))
    for sport in range(40000, 40006):
        kp.packet_in(1, 1, l4("10.0.0.11", sport, "10.96.0.1", 80, frames.TCP,
                              "00:00:00:00:00:11"))
        kp.packet_in(1, 1, l4("10.0.0.11", sport, "10.0.0.1", 30080, frames.UDP,
                              "00:00:00:00:00:11"))
        kp.packet_in(1, 1, l4("10.0.0.11", sport, "192.0.2.7", 53, frames.UDP,
                              "00:00:00:00:00:11"))
        kp.packet_in(1, 4, l4("fd00::11", sport, "fd00:96::2", 443, frames.TCP,
                              "00:00:00:00:00:16"))
    kp.packet_in(1, 1, l4("10.0.0.11", 40100, "10.96.0.30", 22, frames.TCP,
                          "00:00:00:00:00:11"))
    kp.packet_in(1, 1, l4("10.0.0.11", 40100, "10.96.0.30", 22, frames.UDP,
                          "00:00:00:00:00:11"))
    kp.del_pods("10.96.0.0/30", 80, ["10.0.0.102"], flush=True)
    kp.port_status(1, 3, "p2", live=False, deleted=False)
    kp.del_vip("10.96.0.20/32", 53)
    kp.set_conf(buckets=4096)
    return sent + [FlowStatsRequest(), CacheStatsRequest(), SetCacheBuckets(2048)]


MESSAGES = scenario_messages()


def test_the_scenario_makes_every_kind_of_message_and_field():
    kinds = {type(m) for m in MESSAGES}
    assert {FlowAdd, FlowDelete, PacketOut, FlowStatsRequest, SetCacheBuckets,
            CacheStatsRequest} <= kinds
    fields = {name for m in MESSAGES if isinstance(m, FlowAdd) for name, _ in m.match}
    fields |= {a[1] for m in MESSAGES if isinstance(m, (FlowAdd, PacketOut))
               for a in m.actions if a[0] == "set_field"}
    assert {"ipv4_dst", "ipv6_dst", "tcp_dst", "udp_src", "eth_src", "icmpv6_type",
            "in_port"} <= fields
    masked = [v for m in MESSAGES if isinstance(m, FlowAdd) for _, v in m.match
              if isinstance(v, tuple)]
    assert masked, "no prefix match in the scenario"


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_every_scenario_message_is_encoded_as_ryu_encodes_it(index):
    msg = MESSAGES[index]
    assert ofmsg.encode(msg, 1000 + index, kp_switch=True) == ryu_encoding(msg, 1000 + index)


def random_value(rng, name):
    number, length = ofmsg.OXM_FIELDS[name]
    if length == 6:
        return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
    if name.startswith(("ipv4", "arp_spa", "arp_tpa")):
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    if name.startswith("ipv6"):
        return str(ipaddress.IPv6Address(rng.getrandbits(128)))
    return rng.getrandbits(8 * length)


def random_match_value(rng, name):
    value = random_value(rng, name)
    if rng.random() < 0.3 and name.startswith(("ipv4", "ipv6")):
        bits = 32 if name.startswith("ipv4") else 128
        net = ipaddress.ip_network(f"{value}/{rng.randrange(1, bits)}", strict=False)
        return (str(net.network_address), str(net.netmask))
    return value


@pytest.mark.parametrize("seed", range(300))
def test_random_flows_and_packet_outs_are_encoded_as_ryu_encodes_them(seed):
    rng = random.Random(seed)
    names = sorted(ofmsg.OXM_FIELDS)
    match = {n: random_match_value(rng, n) for n in rng.sample(names, rng.randrange(0, 7))}
    actions = [("set_field", n, random_value(rng, n))
               for n in rng.sample(names, rng.randrange(0, 5))]
    actions.append(("output", rng.choice([1, 7, ofp.OFPP_CONTROLLER, ofp.OFPP_FLOOD,
                                          ofp.OFPP_IN_PORT])))
    rng.shuffle(actions)
    add = FlowAdd(rng.randrange(3), rng.randrange(1 << 16), tuple(sorted(match.items())),
                  tuple(actions) if rng.random() < 0.8 else (),
                  rng.choice([None, 1, 2]), rng.getrandbits(64), rng.randrange(1 << 16),
                  rng.random() < 0.5)
    delete = FlowDelete(rng.getrandbits(64), rng.getrandbits(64), rng.choice([None, 0, 1]),
                        tuple(sorted(match.items())), rng.choice([None, 5]))
    out = PacketOut(rng.randbytes(rng.randrange(14, 200)), tuple(actions),
                    rng.choice([None, 3]))
    for msg in (add, delete, out):
        assert ofmsg.encode(msg, seed, kp_switch=True) == ryu_encoding(msg, seed)


def test_a_batch_is_one_buffer_the_switch_reads_with_a_barrier_after_each_delete():
    xids = iter(range(1, 100))
    batch = [m for m in MESSAGES if isinstance(m, (FlowAdd, FlowDelete))][-12:]
    assert any(isinstance(m, FlowDelete) for m in batch)
    data = ofmsg.encode_batch(batch, lambda: next(xids), kp_switch=False)
    parsed, offset = [], 0
    while offset < len(data):
        version, type_, length, xid = struct.unpack_from("!BBHI", data, offset)
        parsed.append(wire.decode(data[offset:offset + length]))
        offset += length
    expected = []
    for m in batch:
        expected.append(ofp.OFPT_FLOW_MOD)
        if isinstance(m, FlowDelete):
            expected.append(ofp.OFPT_BARRIER_REQUEST)
    assert [p.type for p in parsed] == expected
    assert [p.xid for p in parsed] == list(range(1, len(expected) + 1))


def test_a_switch_that_is_not_kp_switch_is_sent_no_experimenter_message():
    assert ofmsg.encode(SetCacheBuckets(1024), 1, kp_switch=False) == b""
    assert ofmsg.encode(CacheStatsRequest(), 1, kp_switch=False) == b""
    assert ofmsg.encode_batch([CacheStatsRequest()], lambda: 1, kp_switch=False) == b""


@pytest.mark.parametrize("field, value", [
    ("vlan_vid", 5), ("eth_dst", "00:11:22:33:44"), ("ipv4_dst", "fd00::1"),
    ("ipv6_src", "10.0.0.1"), ("tcp_dst", 70000), ("ip_proto", "tcp")])
def test_a_field_or_value_kp_cannot_encode_is_an_error_not_a_bad_message(field, value):
    with pytest.raises(ValueError):
        ofmsg.encode(FlowAdd(0, 1, ((field, value),)), 1, kp_switch=True)
