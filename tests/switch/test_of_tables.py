"""The flow tables, groups and pipeline with no I/O: OpenFlow 1.3 rules, time passed in,
and a fake cache standing for the fast path (invalidations and hit counters)."""
import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_switch.actions import Context
from kp_switch.errors import OFError
from kp_switch.groups import GroupTable
from kp_switch.match import Match
from kp_switch.pipeline import Pipeline
from kp_switch.ports import Port, PortSet
from kp_switch.tables import FlowTables
from kp_switch import wire

APPLY, WRITE, CLEAR = ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS
M = parser.OFPMatch


class FakeCache:
    """Records invalidations; hit counters set by the test."""

    def __init__(self):
        self.log = []
        self.counters = {}

    def invalidate_flow(self, flow_id):
        self.log.append(("flow", flow_id))

    def invalidate_all(self):
        self.log.append(("all",))

    def flow_counters(self, ids):
        return [tuple(self.counters.get(i, (0, 0, 0))) for i in ids]


class Switch:
    """Tables + groups + 4 ports, driven like the agent does."""

    def __init__(self, n_tables=8, max_entries=1000):
        self.cache = FakeCache()
        self.tables = FlowTables(n_tables, max_entries, cache=self.cache)
        self.groups = GroupTable()
        self.ports = PortSet([Port(i, "p%d" % i, "02:00:00:00:00:%02x" % i) for i in (1, 2, 3, 4)])
        self.pipeline = Pipeline(self.tables, self.groups, self.ports)
        self.now = 100.0

    def ctx(self, packet_out=False):
        return Context(lambda p: p in self.ports, lambda g: g in self.groups,
                       len(self.tables.tables), packet_out)

    def add(self, match=None, actions=None, priority=100, table_id=0, instructions=None,
            command=ofp.OFPFC_ADD, **kw):
        if instructions is None:
            instructions = [parser.OFPInstructionActions(APPLY, actions or [])]
        fm = parser.OFPFlowMod(None, table_id=table_id, priority=priority, command=command,
                               match=match or M(), instructions=instructions, **kw)
        return self.tables.flow_mod(fm, self.ctx(), self.now)

    def delete(self, match=None, strict=False, table_id=ofp.OFPTT_ALL, **kw):
        cmd = ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE
        kw.setdefault("out_port", ofp.OFPP_ANY)
        kw.setdefault("out_group", ofp.OFPG_ANY)
        fm = parser.OFPFlowMod(None, table_id=table_id, command=cmd, match=match or M(), **kw)
        return self.tables.flow_mod(fm, self.ctx(), self.now)

    def group(self, gid, type_, buckets, command=ofp.OFPGC_ADD):
        gm = parser.OFPGroupMod(None, command, type_, gid,
                                [parser.OFPBucket(w, wp, ofp.OFPG_ANY, acts) for w, wp, acts in buckets])
        return self.groups.group_mod(gm, self.ctx(), self.now)

    def run(self, key, in_port=1, length=100):
        return self.pipeline.run(in_port, dict(key, in_port=in_port), length, self.now)


def out(p, max_len=ofp.OFPCML_NO_BUFFER):
    return parser.OFPActionOutput(p, max_len)


TCP = dict(eth_src="02:00:00:00:00:01", eth_dst="02:00:00:00:00:02", eth_type=0x0800,
           ip_proto=6, ip_dscp=0, ip_ecn=0, ipv4_src="10.0.0.1", ipv4_dst="10.0.0.2",
           tcp_src=1234, tcp_dst=80, tcp_flags=2)


def err(excinfo):
    return excinfo.value.type, excinfo.value.code


# -- matching and priorities --------------------------------------------------------

def test_priority_and_masks():
    s = Switch()
    s.add(M(eth_type=0x800, ipv4_dst=("10.0.0.0", "255.0.0.0")), [out(2)], priority=10)
    s.add(M(eth_type=0x800, ipv4_dst="10.0.0.2"), [out(3)], priority=20)
    s.add(M(eth_type=0x800, ip_proto=6, tcp_dst=80), [out(4)], priority=15)
    s.add(M(), [], priority=0)
    assert s.run(TCP).actions == [("output", 3)]
    assert s.run(dict(TCP, ipv4_dst="10.9.9.9")).actions == [("output", 4)]
    assert s.run(dict(TCP, ipv4_dst="10.9.9.9", tcp_dst=22)).actions == [("output", 2)]
    assert s.run(dict(TCP, ipv4_dst="11.0.0.1", tcp_dst=22)).actions == []
    # a flow matching a field the packet lacks does not match it
    udp = dict(TCP, ip_proto=17, udp_src=1, udp_dst=80)
    del udp["tcp_src"], udp["tcp_dst"], udp["tcp_flags"]
    assert s.run(dict(udp, ipv4_dst="10.9.9.9")).actions == [("output", 2)]


def test_mac_masks_vlan_and_metadata():
    s = Switch()
    s.add(M(eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00")), [out(4)], priority=30)
    s.add(M(vlan_vid=(0x1000, 0x1000)), [out(3)], priority=20)
    s.add(M(vlan_vid=0), [out(2)], priority=10)
    assert s.run(dict(TCP, eth_dst="ff:ff:ff:ff:ff:ff")).actions == [("output", 4)]
    assert s.run(dict(TCP, vlan_vid=0x1005, vlan_pcp=0)).actions == [("output", 3)]
    assert s.run(TCP).actions == [("output", 2)]


def test_table_miss_without_entry_drops_and_is_cacheable():
    s = Switch()
    r = s.run(TCP)
    assert r.actions == [] and r.cacheable and r.flow_ids == []
    assert s.tables.tables[0].lookup_count == 1 and s.tables.tables[0].matched_count == 0


def test_match_errors():
    for items, code in [
        ([("ipv4_dst", "10.0.0.1")], ofp.OFPBMC_BAD_PREREQ),
        ([("eth_type", 0x86dd), ("ipv4_dst", "10.0.0.1")], ofp.OFPBMC_BAD_PREREQ),
        ([("eth_type", 0x800), ("tcp_dst", 80)], ofp.OFPBMC_BAD_PREREQ),
        ([("eth_type", 0x800), ("sctp_dst", 38412)], ofp.OFPBMC_BAD_PREREQ),
        ([("eth_type", 0x800), ("ip_proto", 6), ("sctp_src", 1)], ofp.OFPBMC_BAD_PREREQ),
        ([("eth_type", 0x800), ("ip_proto", 132), ("sctp_dst", 70000)],
         ofp.OFPBMC_BAD_VALUE),
        ([("vlan_pcp", 3)], ofp.OFPBMC_BAD_PREREQ),
        ([("mpls_label", 3)], ofp.OFPBMC_BAD_FIELD),
        ([("field_77", b"x")], ofp.OFPBMC_BAD_FIELD),
        ([("in_port", 1), ("in_port", 2)], ofp.OFPBMC_DUP_FIELD),
        ([("eth_type", (0x800, 0xff00))], ofp.OFPBMC_BAD_MASK),
        ([("vlan_vid", 0x1000), ("vlan_pcp", 9)], ofp.OFPBMC_BAD_VALUE),
    ]:
        with pytest.raises(OFError) as e:
            Match.from_user(items)
        assert err(e) == (ofp.OFPET_BAD_MATCH, code), items


def test_prerequisites_met():
    m = Match.from_user([("eth_type", 0x86dd), ("ip_proto", 58), ("icmpv6_type", 135),
                         ("ipv6_nd_target", "fd00::1"), ("ipv6_nd_sll", "02:00:00:00:00:01")])
    assert m.fields["icmpv6_type"] == (135, 0xFF)


def test_sctp_ports_match_sctp_packets_only():
    """sctp_src/sctp_dst (OXM 17/18, once refused with BAD_MATCH) after ip_proto 132."""
    s = Switch()
    s.add(M(eth_type=0x800, ip_proto=132, ipv4_dst="10.9.9.9", sctp_dst=38412), [out(3)],
          priority=20)
    s.add(M(eth_type=0x800, ip_proto=132, sctp_src=2905), [out(4)], priority=10)
    sctp = {k: v for k, v in TCP.items() if not k.startswith("tcp")}
    sctp.update(ip_proto=132, sctp_src=1234, sctp_dst=38412)
    assert s.run(dict(sctp, ipv4_dst="10.9.9.9")).actions == [("output", 3)]
    assert s.run(dict(sctp, ipv4_dst="10.9.9.8")).actions == []
    assert s.run(dict(sctp, sctp_src=2905)).actions == [("output", 4)]
    # a TCP packet to the same port is not an SCTP one
    assert s.run(dict(TCP, ipv4_dst="10.9.9.9", tcp_dst=38412)).actions == []


# -- flow-mod semantics ---------------------------------------------------------------

def test_add_identical_replaces_keeping_counters_unless_reset():
    s = Switch()
    s.add(M(in_port=1), [out(2)], cookie=1)
    s.run(TCP)
    s.add(M(in_port=1), [out(3)], cookie=2)
    (e,) = s.tables.all_entries()
    assert e.cookie == 2 and e.packet_count == 1
    assert s.run(TCP).actions == [("output", 3)]
    s.add(M(in_port=1), [out(3)], flags=ofp.OFPFF_RESET_COUNTS)
    (e,) = s.tables.all_entries()
    assert e.packet_count == 0


def test_check_overlap_table_full_bad_table_and_flags():
    s = Switch(max_entries=2)
    s.add(M(in_port=1), [out(2)], priority=5)
    with pytest.raises(OFError) as e:
        s.add(M(eth_type=0x800), [out(2)], priority=5, flags=ofp.OFPFF_CHECK_OVERLAP)
    assert err(e) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP)
    s.add(M(in_port=2), [out(1)], priority=5, flags=ofp.OFPFF_CHECK_OVERLAP)  # disjoint
    with pytest.raises(OFError) as e:
        s.add(M(in_port=3), [out(1)], priority=5)
    assert err(e) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL)
    with pytest.raises(OFError) as e:
        s.add(M(in_port=3), [out(1)], table_id=8)
    assert err(e) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID)
    with pytest.raises(OFError) as e:
        s.add(M(in_port=3), [out(1)], table_id=1, flags=0x100)
    assert err(e) == (ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_FLAGS)


def test_modify_strict_nonstrict_and_cookie_mask():
    s = Switch()
    s.add(M(in_port=1), [out(2)], priority=10, cookie=0x0101)
    s.add(M(in_port=1, eth_type=0x800), [out(2)], priority=20, cookie=0x0201)
    s.add(M(in_port=2), [out(1)], priority=10, cookie=0x0101)
    s.cache.log.clear()
    s.add(M(in_port=1), [out(3)], command=ofp.OFPFC_MODIFY, cookie=0x0100, cookie_mask=0xFF00)
    outs = {(e.match.fields.get("in_port"), e.priority): e.instructions.apply for e in s.tables.all_entries()}
    assert outs[((1, 0xFFFFFFFF), 10)] == [("output", 3, ofp.OFPCML_NO_BUFFER)]
    assert outs[((1, 0xFFFFFFFF), 20)] == [("output", 2, ofp.OFPCML_NO_BUFFER)]  # cookie filtered
    assert outs[((2, 0xFFFFFFFF), 10)] == [("output", 1, ofp.OFPCML_NO_BUFFER)]  # match filtered
    assert [x[0] for x in s.cache.log] == ["flow"]
    s.add(M(in_port=1, eth_type=0x800), [out(4)], priority=20, command=ofp.OFPFC_MODIFY_STRICT)
    assert s.run(TCP).actions == [("output", 4)]
    # modify never adds (OpenFlow 1.1+)
    s.add(M(in_port=4), [out(1)], command=ofp.OFPFC_MODIFY)
    assert len(list(s.tables.all_entries())) == 3


def test_delete_filters_and_invalidation():
    s = Switch()
    s.add(M(in_port=1), [out(2)], priority=10, cookie=7)
    s.add(M(in_port=2), [out(1)], priority=10, cookie=8)
    s.add(M(in_port=3), [out(1)], priority=11, cookie=7)
    ids = {e.match.fields["in_port"][0]: e.id for e in s.tables.all_entries()}
    s.cache.log.clear()
    gone = s.delete(out_port=2)
    assert [r.entry.id for r in gone] == [ids[1]] and gone[0].reason == ofp.OFPRR_DELETE
    assert s.cache.log == [("flow", ids[1])]
    assert s.delete(M(in_port=3), strict=True, priority=10) == []
    gone = s.delete(cookie=7, cookie_mask=0xFF)
    assert [r.entry.id for r in gone] == [ids[3]]
    assert len(s.delete()) == 1 and not list(s.tables.all_entries())


def test_add_invalidates_only_what_it_could_shadow():
    # precise add invalidation: see test_agent_invalidation.py; an empty table: its miss
    s = Switch()
    s.cache.log.clear()
    s.add(M(in_port=1), [out(2)])
    assert s.cache.log == [("flow", s.tables.miss_ids[0])]


def test_instruction_and_action_errors():
    s = Switch()
    cases = [
        ([parser.OFPInstructionGotoTable(0)], (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID)),
        ([parser.OFPInstructionGotoTable(8)], (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID)),
        ([parser.OFPInstructionMeter(1)], (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST)),
        ([parser.OFPInstructionActions(APPLY, [out(9)])], (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)),
        ([parser.OFPInstructionActions(APPLY, [out(ofp.OFPP_TABLE)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionGroup(5)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionSetQueue(1)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionPushMpls(0x8847)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionSetField(ipv4_dst="1.2.3.4")])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_MATCH_INCONSISTENT)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionSetField(metadata=1)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_TYPE)),
        ([parser.OFPInstructionActions(APPLY, [parser.OFPActionPushVlan(0x0800)])],
         (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_ARGUMENT)),
    ]
    for ins, code in cases:
        with pytest.raises(OFError) as e:
            s.add(M(in_port=1), instructions=ins)
        assert err(e) == code, ins
    assert not list(s.tables.all_entries())


def test_wire_prescan_refuses_unknown_types():
    def flow_mod_bytes(ins_bytes):
        fm = parser.OFPFlowMod(DPStub, match=M(), instructions=[])
        fm.set_xid(1)
        fm.serialize()
        data = bytes(fm.buf) + ins_bytes
        return data[:2] + len(data).to_bytes(2, "big") + data[4:]

    with pytest.raises(OFError) as e:
        wire.decode(flow_mod_bytes(bytes.fromhex("0009000800000000")))
    assert err(e) == (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST)
    # apply-actions with an action of unknown type 0x0077
    with pytest.raises(OFError) as e:
        wire.decode(flow_mod_bytes(bytes.fromhex("0004001000000000" "0077000800000000")))
    assert err(e) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_TYPE)
    with pytest.raises(OFError) as e:
        wire.decode(flow_mod_bytes(bytes.fromhex("0004001000000000" "ffff000800002320")))
    assert err(e) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_EXPERIMENTER)


class DPStub:
    from ryu.ofproto import ofproto_v1_3 as ofproto
    from ryu.ofproto import ofproto_v1_3_parser as ofproto_parser


# -- timeouts and counters ------------------------------------------------------------

def test_idle_timeout_counts_cache_hits_and_hard_timeout():
    s = Switch()
    s.add(M(in_port=1), [out(2)], idle_timeout=5, flags=ofp.OFPFF_SEND_FLOW_REM)
    s.add(M(in_port=2), [out(1)], hard_timeout=20)
    e1 = next(e for e in s.tables.all_entries() if e.match.fields["in_port"][0] == 1)
    s.run(TCP)  # slow path: 1 packet of 100 bytes
    # the cache forwards 10 packets at t=104
    s.cache.counters[e1.id] = (10, 1500, int(104 * 1e9))
    assert s.tables.expire(104.0) == []
    assert s.tables.expire(108.9) == []  # used at 104: idle only after 109
    gone = s.tables.expire(109.5)
    assert [(r.entry.id, r.reason) for r in gone] == [(e1.id, ofp.OFPRR_IDLE_TIMEOUT)]
    assert gone[0].entry.packet_count == 11 and gone[0].entry.byte_count == 1600
    assert s.tables.expire(119.9) == []
    gone = s.tables.expire(120.0)
    assert [r.reason for r in gone] == [ofp.OFPRR_HARD_TIMEOUT]


def test_counter_baseline_when_an_id_is_reused():
    s = Switch()
    s.tables.max_flow_ids = 1
    s.add(M(in_port=1), [out(2)])
    (e,) = s.tables.all_entries()
    s.cache.counters[e.id] = (5, 500, 1)
    s.delete()
    s.add(M(in_port=2), [out(1)])
    (e2,) = s.tables.all_entries()
    assert e2.id == e.id
    s.tables.sync_counters([e2])
    assert e2.packet_count == 0
    s.cache.counters[e.id] = (7, 700, 2)
    s.tables.sync_counters([e2])
    assert (e2.packet_count, e2.byte_count) == (2, 200)


def test_table_stats_include_cache_hits():
    s = Switch()
    s.add(M(in_port=1), [out(2)])
    (e,) = s.tables.all_entries()
    s.run(TCP)
    s.run(TCP, in_port=3)
    s.cache.counters[e.id] = (4, 400, 1)
    t0 = s.tables.table_stats()[0]
    assert t0 == (0, 1, 2 + 4, 1 + 4)


# -- pipeline -----------------------------------------------------------------------

def test_goto_metadata_write_and_clear_actions():
    s = Switch()
    s.add(M(in_port=1), instructions=[
        parser.OFPInstructionActions(WRITE, [out(4)]),
        parser.OFPInstructionWriteMetadata(0xAB, 0xFF),
        parser.OFPInstructionGotoTable(1)])
    s.add(M(metadata=0xAB), table_id=1, instructions=[
        parser.OFPInstructionActions(WRITE, [parser.OFPActionSetField(eth_dst="02:00:00:00:00:09"),
                                             out(3)]),
        parser.OFPInstructionGotoTable(2)])
    s.add(M(), table_id=2, priority=0, instructions=[
        parser.OFPInstructionActions(APPLY, [parser.OFPActionDecNwTtl()])])
    r = s.run(TCP)
    # apply-actions first, then the action set in spec order (set-field before output;
    # the later write-actions replaced the output)
    assert r.actions == [("dec_ttl",), ("set_field", "eth_dst", "02:00:00:00:00:09"), ("output", 3)]
    assert len(r.flow_ids) == 3 and r.cacheable
    s.add(M(), table_id=2, priority=0, instructions=[parser.OFPInstructionActions(CLEAR, [])])
    assert s.run(TCP).actions == []


def test_set_field_is_seen_by_later_tables():
    s = Switch()
    s.add(M(in_port=1, eth_type=0x800), instructions=[
        parser.OFPInstructionActions(APPLY, [parser.OFPActionSetField(ipv4_dst="10.0.0.99")]),
        parser.OFPInstructionGotoTable(1)])
    s.add(M(eth_type=0x800, ipv4_dst="10.0.0.99"), [out(3)], table_id=1)
    s.add(M(eth_type=0x800, ipv4_dst="10.0.0.2"), [out(4)], table_id=1)
    assert s.run(TCP).actions == [("set_field", "ipv4_dst", "10.0.0.99"), ("output", 3)]


def test_flood_all_in_port_and_no_output_to_ingress():
    s = Switch()
    s.add(M(in_port=1), [out(ofp.OFPP_FLOOD)])
    s.add(M(in_port=2), [out(2), out(ofp.OFPP_IN_PORT), out(ofp.OFPP_ALL)])
    assert s.run(TCP).actions == [("output", 2), ("output", 3), ("output", 4)]
    assert s.run(TCP, in_port=2).actions == [("output", 2), ("output", 1), ("output", 3), ("output", 4)]
    s.ports.get(3).config = ofp.OFPPC_NO_FWD
    assert s.run(TCP).actions == [("output", 2), ("output", 4)]


def test_controller_output_packet_in_and_not_cacheable():
    s = Switch()
    s.add(M(), [out(ofp.OFPP_CONTROLLER, 128)], priority=0, cookie=5)
    s.add(M(in_port=2), [parser.OFPActionSetField(eth_dst="02:00:00:00:00:07"),
                         out(ofp.OFPP_CONTROLLER, 0xFFFF), out(1)], priority=9)
    r = s.run(TCP)
    assert not r.cacheable and r.actions == []
    (pi,) = r.packet_ins
    assert (pi.reason, pi.table_id, pi.cookie, pi.max_len) == (ofp.OFPR_NO_MATCH, 0, 5, 128)
    r = s.run(TCP, in_port=2)
    (pi,) = r.packet_ins
    assert pi.reason == ofp.OFPR_ACTION
    assert pi.actions_before == [("set_field", "eth_dst", "02:00:00:00:00:07")]
    assert r.actions[-1] == ("output", 1)


def test_group_all_restores_the_packet_between_buckets():
    s = Switch()
    s.group(1, ofp.OFPGT_ALL, [
        (0, ofp.OFPP_ANY, [parser.OFPActionSetField(ipv4_dst="10.0.0.3"), out(3)]),
        (0, ofp.OFPP_ANY, [parser.OFPActionPushVlan(0x8100), out(4)])])
    s.add(M(in_port=1), [parser.OFPActionGroup(1), out(2)])
    r = s.run(TCP)
    assert r.cacheable
    assert r.actions == [
        ("set_field", "ipv4_dst", "10.0.0.3"), ("output", 3), ("set_field", "ipv4_dst", "10.0.0.2"),
        ("push_vlan", 0x8100), ("output", 4), ("pop_vlan",),
        ("output", 2)]


def test_group_bucket_with_dec_ttl_gets_its_own_copy():
    s = Switch()
    s.group(1, ofp.OFPGT_ALL, [(0, ofp.OFPP_ANY, [parser.OFPActionDecNwTtl(), out(3)]),
                               (0, ofp.OFPP_ANY, [out(4)])])
    s.add(M(in_port=1), [parser.OFPActionGroup(1)])
    r = s.run(TCP)
    assert r.copies == [[("dec_ttl",), ("output", 3)]] and r.actions == [("output", 4)]
    assert not r.cacheable


def test_select_group_sticks_and_spreads():
    s = Switch()
    s.group(2, ofp.OFPGT_SELECT, [(1, ofp.OFPP_ANY, [out(2)]), (1, ofp.OFPP_ANY, [out(3)]),
                                  (2, ofp.OFPP_ANY, [out(4)])])
    s.add(M(in_port=1), [parser.OFPActionGroup(2)])
    seen = {}
    for port in range(1000, 1200):
        key = dict(TCP, tcp_src=port)
        first = s.run(key).actions
        assert s.run(dict(key, tcp_flags=0x10)).actions == first  # flags do not move it
        seen.setdefault(tuple(first), 0)
        seen[tuple(first)] += 1
    assert len(seen) == 3 and seen[(("output", 4),)] > seen[(("output", 2),)]


def test_fast_failover_and_group_errors():
    s = Switch()
    s.group(3, ofp.OFPGT_FF, [(0, 2, [out(2)]), (0, 3, [out(3)])])
    s.add(M(in_port=1), [parser.OFPActionGroup(3)])
    assert s.run(TCP).actions == [("output", 2)]
    s.ports.get(2).link_up = False
    assert s.run(TCP).actions == [("output", 3)]
    for args, code in [
        ((3, ofp.OFPGT_ALL, []), ofp.OFPGMFC_GROUP_EXISTS),
        ((9, ofp.OFPGT_ALL, [], ofp.OFPGC_MODIFY), ofp.OFPGMFC_UNKNOWN_GROUP),
        ((4, 7, []), ofp.OFPGMFC_BAD_TYPE),
        ((4, ofp.OFPGT_INDIRECT, []), ofp.OFPGMFC_INVALID_GROUP),
        ((4, ofp.OFPGT_FF, [(0, ofp.OFPP_ANY, [out(2)])]), ofp.OFPGMFC_BAD_WATCH),
        ((0xFFFFFFFC, ofp.OFPGT_ALL, []), ofp.OFPGMFC_INVALID_GROUP),
    ]:
        with pytest.raises(OFError) as e:
            s.group(*args)
        assert err(e) == (ofp.OFPET_GROUP_MOD_FAILED, code), args
    # loops: 5 -> 6, then 6 -> 5 is refused
    s.group(6, ofp.OFPGT_ALL, [(0, ofp.OFPP_ANY, [out(2)])])
    s.group(5, ofp.OFPGT_ALL, [(0, ofp.OFPP_ANY, [parser.OFPActionGroup(6)])])
    with pytest.raises(OFError) as e:
        s.group(6, ofp.OFPGT_ALL, [(0, ofp.OFPP_ANY, [parser.OFPActionGroup(5)])], ofp.OFPGC_MODIFY)
    assert err(e) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_LOOP)
    with pytest.raises(OFError) as e:
        s.group(6, ofp.OFPGT_ALL, [], ofp.OFPGC_DELETE)
    assert err(e) == (ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_CHAINED_GROUP)


def test_group_delete_removes_its_flows():
    s = Switch()
    s.group(1, ofp.OFPGT_INDIRECT, [(0, ofp.OFPP_ANY, [out(2)])])
    s.add(M(in_port=1), [parser.OFPActionGroup(1)], flags=ofp.OFPFF_SEND_FLOW_REM)
    s.add(M(in_port=2), [out(1)])
    s.group(1, ofp.OFPGT_ALL, [], ofp.OFPGC_DELETE)
    gone = s.tables.remove_using_group(1)
    assert [r.reason for r in gone] == [ofp.OFPRR_GROUP_DELETE]
    assert len(list(s.tables.all_entries())) == 1


def test_packet_out_to_table():
    s = Switch()
    s.add(M(in_port=1), [out(3)])
    r = s.pipeline.packet_out(1, dict(TCP, in_port=1), [("set_field", "eth_dst", "02:00:00:00:00:05"),
                                                        ("output", ofp.OFPP_TABLE, 0)], 60, s.now)
    assert r.actions == [("set_field", "eth_dst", "02:00:00:00:00:05"), ("output", 3)]
    assert not r.cacheable


# -- deletes by cookie and mask, through the cookie indexes --------------------------

def test_cookie_masked_requests_find_what_a_scan_of_every_entry_finds():
    """Random flows in two tables, with cookies sharing their upper parts; deletes and
    stats by many cookie masks (more than are indexed, so some scan), replaced flows,
    timeouts: each request finds exactly the entries a check of every entry finds."""
    import random
    from kp_switch.tables import MAX_COOKIE_INDEXES
    rng = random.Random(7)
    s = Switch(n_tables=2, max_entries=5000)
    masks = [0xFF << 56, (0xFF << 56) | (0xFFFF << 40), (1 << 64) - 1, 0xFFFF,
             (0xFF << 56) | 0xFFFF] + [rng.getrandbits(64) for _ in range(MAX_COOKIE_INDEXES)]

    def cookie():
        return (0x6B << 56) | (rng.randrange(8) << 40) | (rng.randrange(4) << 16) | \
            rng.randrange(1, 4)

    def add_some(n):
        for _ in range(n):
            s.add(M(eth_type=0x800, ipv4_dst="10.0.%d.%d" % (rng.randrange(4),
                                                              rng.randrange(64))),
                  [out(2)], priority=rng.choice((10, 20)), table_id=rng.randrange(2),
                  cookie=cookie(), idle_timeout=rng.choice((0, 0, 5)))

    def brute(table_id, value, mask):
        return {e.id for e in s.tables.all_entries(table_id)
                if (e.cookie & mask) == (value & mask)}

    add_some(400)
    for round_ in range(60):
        mask, value = rng.choice(masks), cookie()
        table_id = rng.choice((ofp.OFPTT_ALL, 0, 1))
        expected = brute(table_id, value, mask)
        found = s.tables.stats(table_id, Match.from_ryu(M()), ofp.OFPP_ANY, ofp.OFPG_ANY,
                               value, mask)
        assert {e.id for e in found} == expected
        if round_ % 3 == 0:
            removed = s.delete(table_id=table_id, cookie=value, cookie_mask=mask)
            assert {r.entry.id for r in removed} == expected
            assert not brute(table_id, value, mask)
        add_some(10)
        if round_ % 10 == 0:      # some go by their idle timeout, one way out of several
            s.now += 6
            s.tables.expire(s.now)
    assert len(s.tables._cookie_indexes) == MAX_COOKIE_INDEXES
