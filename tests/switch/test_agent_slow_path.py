"""The agent's slow path against a fake datapath, in process: what it executes, what it
caches (and what it must not), how cache hits reach flow statistics and timeouts."""
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_switch import fastpath_ref
from kp_switch.agent import Agent, OFPC_INVALID_TTL_TO_CONTROLLER

M = parser.OFPMatch
APPLY = ofp.OFPIT_APPLY_ACTIONS


class FakeDatapath:
    def __init__(self):
        self.calls = []
        self.counters = {}
        self.masks = []  # the mask_blob of each insert (None: exact only)

    def start(self):
        pass

    def stop(self):
        pass

    def execute(self, in_port, packet, actions):
        self.calls.append(("execute", in_port, list(actions)))

    def cache_insert(self, blob, actions, ids, mask_blob=None):
        self.calls.append(("insert", blob, list(actions), list(ids)))
        self.masks.append(mask_blob)

    def invalidate_flow(self, i):
        self.calls.append(("invalidate_flow", i))

    def invalidate_all(self):
        self.calls.append(("invalidate_all",))

    def flow_counters(self, ids):
        return [self.counters.get(i, (0, 0, 0)) for i in ids]

    def stats(self):
        return {"ports": {}}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_agent():
    dp = FakeDatapath()
    clock = Clock()
    agent = Agent(dp, [(1, "p1"), (2, "p2")], clock=clock,
                  link_reader=lambda name: ("02:00:00:00:00:0%s" % name[-1], True, 10000000))
    return agent, dp, clock


def flow(agent, match, actions, **kw):
    fm = parser.OFPFlowMod(None, match=match, instructions=[parser.OFPInstructionActions(APPLY, actions)],
                           **kw)
    with agent.lock:
        return agent.tables.flow_mod(fm, agent.context(), agent.clock())


def icmp_frame(ttl=64):
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytes([0x45, 0, 0, 28, 0, 1, 0, 0, ttl, 1, 0, 0]) + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return eth + ip + bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0])


def miss(frame, in_port=1):
    key, blob, _ = fastpath_ref.parse_blob(frame, in_port)
    return in_port, frame, key, blob


def test_forwarding_is_executed_then_cached_with_flow_ids():
    agent, dp, _ = make_agent()
    flow(agent, M(in_port=1), [parser.OFPActionOutput(2)])
    (entry,) = agent.tables.all_entries()
    dp.calls.clear()
    agent.slow_path(*miss(icmp_frame()))
    assert dp.calls[0] == ("execute", 1, [("output", 2)])
    assert dp.calls[1][0] == "insert" and dp.calls[1][2:] == ([("output", 2)], [entry.id])


def test_controller_output_is_not_cached():
    agent, dp, _ = make_agent()
    flow(agent, M(), [parser.OFPActionOutput(ofp.OFPP_CONTROLLER)], priority=0)
    dp.calls.clear()
    agent.slow_path(*miss(icmp_frame()))
    assert not [c for c in dp.calls if c[0] == "insert"]


def test_table_miss_drop_is_cached_as_empty():
    agent, dp, _ = make_agent()
    agent.slow_path(*miss(icmp_frame()))
    # recorded under table 0's miss id, so that an add to table 0 can invalidate it
    assert [c[0] for c in dp.calls] == ["insert"] and dp.calls[0][2:] == ([], [agent.tables.miss_ids[0]])


def test_invalid_ttl_to_controller_disables_caching_of_dec_ttl():
    agent, dp, _ = make_agent()
    flow(agent, M(in_port=1), [parser.OFPActionDecNwTtl(), parser.OFPActionOutput(2)])
    agent.config_flags = OFPC_INVALID_TTL_TO_CONTROLLER
    dp.calls.clear()
    agent.slow_path(*miss(icmp_frame(ttl=1)))
    assert not [c for c in dp.calls if c[0] == "insert"]


def test_cache_hits_keep_idle_flows_alive_and_are_counted():
    agent, dp, clock = make_agent()
    flow(agent, M(in_port=1), [parser.OFPActionOutput(2)], idle_timeout=10,
         flags=ofp.OFPFF_SEND_FLOW_REM)
    (entry,) = agent.tables.all_entries()
    agent.slow_path(*miss(icmp_frame()))
    clock.t += 8
    dp.counters[entry.id] = (50, 50 * 42, int(clock.t * 1e9))
    agent.tick()
    assert list(agent.tables.all_entries()) == [entry]
    clock.t += 9.9
    agent.tick()
    assert list(agent.tables.all_entries()) == [entry]
    clock.t += 0.2
    dp.calls.clear()
    agent.tick()
    assert list(agent.tables.all_entries()) == []
    assert ("invalidate_flow", entry.id) in dp.calls
    assert entry.packet_count == 51 and entry.byte_count == 51 * 42


def test_flow_mods_invalidate_the_cache():
    agent, dp, _ = make_agent()
    dp.calls.clear()
    flow(agent, M(in_port=1), [parser.OFPActionOutput(2)])
    assert dp.calls == [("invalidate_flow", agent.tables.miss_ids[0])]  # an empty table: its miss
    (entry,) = agent.tables.all_entries()
    dp.calls.clear()
    flow(agent, M(in_port=1), [parser.OFPActionOutput(1)], command=ofp.OFPFC_MODIFY)
    assert dp.calls == [("invalidate_flow", entry.id)]


# -- megaflow masks: what the slow path tells the fast path its answer depended on ----

def udp_frame(dst=(10, 0, 0, 2), sport=1000, dport=53):
    import struct
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    ip = bytes([0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0]) + bytes([10, 0, 0, 1]) + bytes(dst)
    return eth + ip + struct.pack("!HHHH", sport, dport, 8, 0)


FULL_PORT = {"in_port": 0xFFFFFFFF}


def last_mask(dp):
    from kp_switch.megaflow import mask_blob
    return dp.masks[-1], mask_blob


def test_megaflow_mask_is_the_probed_subtables_plus_in_port():
    agent, dp, _ = make_agent()
    flow(agent, M(in_port=1), [parser.OFPActionOutput(2)])
    agent.slow_path(*miss(icmp_frame()))
    got, mask_blob = last_mask(dp)
    assert got == mask_blob(FULL_PORT)


def test_megaflow_mask_stops_where_the_lookup_stopped():
    """A high-priority DNS flow decides a DNS packet before the eth_src subtable is
    probed: eth_src is not in its mask; a packet that goes on to that subtable has it."""
    agent, dp, _ = make_agent()
    flow(agent, M(eth_type=0x800, ip_proto=17, udp_dst=53), [parser.OFPActionOutput(2)],
         priority=100)
    flow(agent, M(eth_src="02:00:00:00:00:01"), [parser.OFPActionOutput(1)], priority=1)
    agent.slow_path(*miss(udp_frame(dport=53)))
    got, mask_blob = last_mask(dp)
    dns = dict(FULL_PORT, eth_type=0xFFFF, ip_proto=0xFF, udp_dst=0xFFFF)
    assert got == mask_blob(dns)
    agent.slow_path(*miss(udp_frame(dport=54)))
    got, _ = last_mask(dp)
    assert got == mask_blob(dict(dns, eth_src=(1 << 48) - 1))


def test_megaflow_mask_spans_every_table_traversed():
    """DNAT in table 0 (match the VIP, rewrite it), route in table 1 on the rewritten
    address: the mask holds both tables' fields (the original packet's bits of
    ipv4_dst, more than needed for table 1, never fewer)."""
    agent, dp, _ = make_agent()
    fm = parser.OFPFlowMod(None, table_id=0, priority=10,
                           match=M(eth_type=0x800, ipv4_dst="10.96.0.10"),
                           instructions=[parser.OFPInstructionActions(
                               APPLY, [parser.OFPActionSetField(ipv4_dst="10.0.0.2")]),
                               parser.OFPInstructionGotoTable(1)])
    with agent.lock:
        agent.tables.flow_mod(fm, agent.context(), agent.clock())
        agent.tables.flow_mod(parser.OFPFlowMod(
            None, table_id=1, priority=10, match=M(eth_type=0x800, ip_proto=17),
            instructions=[parser.OFPInstructionActions(APPLY, [parser.OFPActionOutput(2)])]),
            agent.context(), agent.clock())
    agent.slow_path(*miss(udp_frame(dst=(10, 96, 0, 10))))
    got, mask_blob = last_mask(dp)
    assert got == mask_blob(dict(FULL_PORT, eth_type=0xFFFF, ipv4_dst=0xFFFFFFFF, ip_proto=0xFF))
    assert dp.calls[-1][2] == [("set_field", "ipv4_dst", "10.0.0.2"), ("output", 2)]


def test_no_megaflow_through_a_group():
    """A select group picks its bucket by a hash of the packet: exact entry only."""
    agent, dp, _ = make_agent()
    gm = parser.OFPGroupMod(None, ofp.OFPGC_ADD, ofp.OFPGT_SELECT, 1, [
        parser.OFPBucket(weight=1, actions=[parser.OFPActionOutput(1)]),
        parser.OFPBucket(weight=1, actions=[parser.OFPActionOutput(2)])])
    with agent.lock:
        agent.groups.group_mod(gm, agent.context(), agent.clock())
    flow(agent, M(in_port=1), [parser.OFPActionGroup(1)])
    agent.slow_path(*miss(udp_frame()))
    inserts = [c for c in dp.calls if c[0] == "insert"]
    assert len(inserts) == 1 and dp.masks == [None]
