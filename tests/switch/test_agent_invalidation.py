"""Precise cache invalidation on flow adds (tables.py, "Invalidation").

Adding flow F (table T, priority P, match M) invalidates the ids of the entries of T
with priority <= P whose match overlaps M, plus T's table-miss pseudo id (unless one of
those entries covers M), and nothing else: the established sessions' cache entries
survive a new session's flows.  Modify/delete/timeouts invalidate the entries' own ids.

- unit tests on the tables and the pipeline, with a cache that records invalidations;
- a model check: random flow-mods and packets against a model cache that applies the
  invalidations; every cached answer still alive must equal a fresh pipeline run;
- real traffic through a kp-switch process on veth pairs in namespaces of our own.
"""
import os
import random
import sys
import threading
import time

import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_proto import experimenter as kpexp
from kp_switch.actions import Context
from kp_switch.errors import OFError
from kp_switch.groups import GroupTable
from kp_switch.match import Match
from kp_switch.pipeline import Pipeline
from kp_switch.ports import Port, PortSet
from kp_switch.tables import MAX_PRECISE_INVALIDATIONS, FlowTables

sys.path.insert(0, os.path.dirname(__file__))
from conftest import IMPLS  # noqa: E402  (the C cache when built, and the twin)

CACHE_IMPLS = [IMPLS[k] for k in sorted(IMPLS)]

APPLY = ofp.OFPIT_APPLY_ACTIONS
M = parser.OFPMatch
UDP = dict(eth_type=0x0800, ip_proto=17)


class RecordingCache:
    def __init__(self):
        self.log = []

    def invalidate_flow(self, flow_id):
        self.log.append(flow_id)

    def invalidate_all(self):
        self.log.append("all")

    def flow_counters(self, ids):
        return [(0, 0, 0)] * len(ids)


class Tables:
    """FlowTables + pipeline driven like the agent drives them."""

    def __init__(self, cache=None):
        self.cache = cache or RecordingCache()
        self.tables = FlowTables(4, 100000, cache=self.cache)
        self.groups = GroupTable()
        self.ports = PortSet([Port(i, "p%d" % i, "02:00:00:00:00:%02x" % i) for i in (1, 2, 3, 4)])
        self.pipeline = Pipeline(self.tables, self.groups, self.ports)

    def ctx(self):
        return Context(lambda p: p in self.ports, lambda g: g in self.groups, 4, False)

    def mod(self, command, match, priority=100, table_id=0, actions=(), goto=None, **kw):
        ins = [parser.OFPInstructionActions(APPLY, list(actions))]
        if goto is not None:
            ins.append(parser.OFPInstructionGotoTable(goto))
        kw.setdefault("out_port", ofp.OFPP_ANY)
        kw.setdefault("out_group", ofp.OFPG_ANY)
        fm = parser.OFPFlowMod(None, table_id=table_id, priority=priority, command=command,
                               match=match, instructions=ins, **kw)
        return self.tables.flow_mod(fm, self.ctx(), 100.0)

    def add(self, match, priority=100, table_id=0, actions=(), goto=None, **kw):
        self.mod(ofp.OFPFC_ADD, match, priority, table_id, actions, goto, **kw)
        e = self.tables.tables[table_id].find_strict(Match.from_ryu(match), priority)
        return e.id

    def invalidations_of_add(self, match, priority=100, table_id=0, actions=(), **kw):
        self.cache.log.clear()
        self.add(match, priority, table_id, actions, **kw)
        return set(self.cache.log)

    def run(self, key, in_port=1):
        return self.pipeline.run(in_port, dict(key, in_port=in_port), 100, 100.0, count=False)


def out(p):
    return parser.OFPActionOutput(p, ofp.OFPCML_NO_BUFFER)


def five(src, sport, dst="10.0.0.2", dport=53):
    return M(ipv4_src=src, ipv4_dst=dst, udp_src=sport, udp_dst=dport, **UDP)


def udp_key(src, sport, dst="10.0.0.2", dport=53):
    return dict(eth_src="02:00:00:00:00:01", eth_dst="02:00:00:00:00:02", ip_dscp=0, ip_ecn=0,
                ipv4_src=src, ipv4_dst=dst, udp_src=sport, udp_dst=dport, **UDP)


# -- the computed invalidation set ---------------------------------------------------

def test_add_invalidates_overlapping_lower_and_equal_priority_flows_only():
    t = Tables()
    miss_entry = t.add(M(), priority=0, actions=[out(ofp.OFPP_CONTROLLER)])
    a = t.add(five("10.0.0.1", 1001), priority=900, actions=[out(2)])          # session A
    b = t.add(five("10.0.0.1", 1002), priority=900, actions=[out(2)])          # session B
    subnet = t.add(M(eth_type=0x800, ipv4_dst=("10.0.0.0", "255.255.255.0")), priority=10,
                   actions=[out(2)])                                           # overlaps C
    dns = t.add(M(udp_dst=53, **UDP), priority=500, actions=[out(3)])          # overlaps C
    tie = t.add(M(eth_type=0x800, ipv4_src="10.0.0.9", ip_dscp=46), priority=900,
                actions=[out(4)])                                              # overlaps, tie
    higher = t.add(M(eth_type=0x800, ipv4_dst="10.0.0.2"), priority=1000, actions=[out(4)])  # higher
    tcp = t.add(M(eth_type=0x800, ip_proto=6), priority=5, actions=[out(4)])   # other protocol
    other_net = t.add(M(eth_type=0x800, ipv4_dst=("10.1.0.0", "255.255.0.0")), priority=10)
    arp = t.add(M(eth_type=0x806), priority=50, actions=[out(ofp.OFPP_FLOOD)])
    t1 = t.add(M(eth_type=0x800), priority=1, table_id=1)                      # another table
    got = t.invalidations_of_add(five("10.0.0.9", 2000), priority=900, actions=[out(2)])
    assert got == {dns, tie}
    assert not got & {a, b, higher, tcp, other_net, arp, t1, "all"}
    # dns covers the new flow: its packets all met dns (or the tie) before the subnet
    # flow or the table-miss entry, which keep their cached packets; and no packet of it
    # missed table 0, so the table's miss id is spared too
    assert not got & {subnet, miss_entry, t.tables.miss_ids[0]}


def test_a_flow_below_one_that_covers_the_new_flow_keeps_its_cached_packets():
    # kp_app's SESSIONS table: a pod's replies to this node's subnet go to the controller
    # (400), all its other replies are routed on (300); a new session's reply flow (900)
    # lies inside the first, so replies routed to other nodes stay cached.
    t = Tables()
    reply = dict(eth_type=0x800, ip_proto=17, ipv4_src="10.0.1.101", udp_src=53)
    routed = t.add(M(**reply), priority=300, actions=[out(3)])
    local = t.add(M(ipv4_dst=("10.0.1.0", "255.255.255.0"), **reply), priority=400,
                  actions=[out(ofp.OFPP_CONTROLLER)])
    got = t.invalidations_of_add(five("10.0.1.101", 53, "10.0.1.11", 40000), priority=900,
                                 actions=[out(1)])
    assert got == {local} and routed not in got
    # a session to a client elsewhere is not inside the local flow: the routed one goes
    assert t.invalidations_of_add(five("10.0.1.101", 53, "10.0.2.11", 40001), priority=900,
                                  actions=[out(3)]) == {routed}


def test_table_miss_pseudo_id_is_invalidated_unless_a_lower_entry_covers_the_match():
    t = Tables()
    assert t.invalidations_of_add(five("10.0.0.1", 1001), priority=900) == {t.tables.miss_ids[0]}
    # a second session: disjoint from the first, may take packets from the miss
    assert t.invalidations_of_add(five("10.0.0.1", 1002), priority=900) == {t.tables.miss_ids[0]}
    subnet = t.add(M(eth_type=0x800, ipv4_dst=("10.0.0.0", "255.255.255.0")), priority=10)
    # covered by the subnet flow: no packet of it missed table 0
    assert t.invalidations_of_add(five("10.0.0.1", 1003), priority=900) == {subnet}
    # in table 2: only table 2's miss
    assert t.invalidations_of_add(M(in_port=1), table_id=2) == {t.tables.miss_ids[2]}


def test_masks_partial_overlap():
    t = Tables()
    mcast = t.add(M(eth_dst=("01:00:00:00:00:00", "01:00:00:00:00:00")), priority=10)
    ucast = t.add(M(eth_dst=("00:00:00:00:00:00", "01:00:00:00:00:00")), priority=10)
    net8 = t.add(M(eth_type=0x800, ipv4_src=("10.0.0.0", "255.0.0.0")), priority=10)
    net11 = t.add(M(eth_type=0x800, ipv4_src=("11.0.0.0", "255.0.0.0")), priority=10)
    got = t.invalidations_of_add(M(eth_dst="02:00:00:00:00:09"), priority=20)
    assert got == {ucast, net8, net11}  # ucast covers it: no packet of it missed
    got = t.invalidations_of_add(M(eth_type=0x800, ipv4_src=("12.0.0.0", "255.0.0.0")), priority=15)
    assert got == {mcast, ucast, t.tables.miss_ids[0]}  # not the eth_dst flow: priority 20
    got = t.invalidations_of_add(M(eth_type=0x800, ipv4_src=("10.1.0.0", "255.255.0.0")), priority=12)
    assert got == {mcast, ucast, net8}  # net8 covers it; not the priority 15 and 20 flows
    assert net11 not in got


def test_replacing_a_flow_in_place_invalidates_only_its_id():
    t = Tables()
    t.add(M(eth_type=0x800), priority=1)
    a = t.add(five("10.0.0.1", 1001), priority=900, actions=[out(2)])
    assert t.invalidations_of_add(five("10.0.0.1", 1001), priority=900, actions=[out(3)]) == {a}
    assert t.run(udp_key("10.0.0.1", 1001)).actions == [("output", 3)]


def test_modify_and_delete_invalidate_the_entries_own_ids():
    t = Tables()
    low = t.add(M(eth_type=0x800), priority=1, actions=[out(2)])
    a = t.add(five("10.0.0.1", 1001), priority=900, actions=[out(2)])
    t.cache.log.clear()
    t.mod(ofp.OFPFC_MODIFY_STRICT, five("10.0.0.1", 1001), priority=900, actions=[out(3)])
    assert t.cache.log == [a]
    t.cache.log.clear()
    t.mod(ofp.OFPFC_DELETE_STRICT, five("10.0.0.1", 1001), priority=900)
    assert t.cache.log == [a]
    assert t.run(udp_key("10.0.0.1", 1001)).flow_ids == [low]


def test_many_overlapped_flows_fall_back_to_invalidate_all():
    t = Tables()
    for i in range(MAX_PRECISE_INVALIDATIONS + 1):
        t.add(five("10.0.0.1", 1000 + i), priority=900, actions=[out(2)])
    assert t.invalidations_of_add(M(eth_type=0x800), priority=950) == {"all"}


def test_miss_is_recorded_in_cache_ids_not_flow_ids():
    t = Tables()
    a = t.add(M(in_port=1), goto=1)
    r = t.run(udp_key("10.0.0.1", 1))
    assert r.actions == [] and r.cacheable
    assert r.flow_ids == [a] and r.cache_ids == [a, t.tables.miss_ids[1]]
    r = t.run(udp_key("10.0.0.1", 1), in_port=2)
    assert r.flow_ids == [] and r.cache_ids == [t.tables.miss_ids[0]]
    # the pseudo ids are the top of the id space, never given to a flow
    assert t.tables.miss_ids == [262144 - 4 + i for i in range(4)]
    assert t.tables.max_flow_ids == 262144 - 4


def test_equal_priority_ties_do_not_depend_on_other_entries():
    # X and Y tie for the packet (different subtables); removing Z must not change the
    # winner, or a cached answer through X would go stale without X's id invalidated.
    t = Tables()
    y = t.add(M(ipv4_dst="10.0.0.2", eth_type=0x800), priority=10, actions=[out(3)])
    x = t.add(M(in_port=1), priority=10, actions=[out(2)])
    t.add(M(in_port=1, eth_type=0x806), priority=20, actions=[out(4)])  # z: raises x's subtable
    key = udp_key("10.0.0.1", 1)
    first = t.run(key).flow_ids
    assert first == [y]  # of equal priorities, the one added first
    t.mod(ofp.OFPFC_DELETE_STRICT, M(in_port=1, eth_type=0x806), priority=20)
    assert t.run(key).flow_ids == first
    t.add(M(ipv4_dst="10.0.0.2", eth_type=0x800, ip_proto=17), priority=40, table_id=1)
    assert t.run(key).flow_ids == first and x != y


def test_overlapping_agrees_with_brute_force():
    rng = random.Random(7)
    t = Tables()
    for _ in range(400):
        t.add(random_match(rng), priority=rng.choice([0, 5, 10, 900, 1000]), table_id=0)
    table = t.tables.tables[0]
    for _ in range(300):
        m = Match.from_ryu(random_match(rng))
        p = rng.choice([0, 5, 10, 900, 1000])
        got = sorted(e.id for e in table.overlapping(m, p))
        want = sorted(e.id for e in table.entries.values() if e.priority <= p and e.match.overlaps(m))
        assert got == want


def test_overlapping_agrees_with_brute_force_as_entries_come_and_go():
    # Queries that pin some of a subtable's fields use an index of its buckets by those
    # fields (made by the first such query, then kept up to date): removals included.
    rng = random.Random(11)
    t = Tables()
    table = t.tables.tables[0]
    added = []
    for step in range(1500):
        if added and rng.random() < 0.4:
            match, priority = added.pop(rng.randrange(len(added)))
            t.mod(ofp.OFPFC_DELETE_STRICT, match, priority=priority)
        else:
            match, priority = random_match(rng), rng.choice([5, 10, 900])
            t.add(match, priority=priority)
            added.append((match, priority))
        m = Match.from_ryu(random_match(rng))
        p = rng.choice([5, 10, 900, 1000])
        got = sorted(e.id for e in table.overlapping(m, p))
        want = sorted(e.id for e in table.entries.values()
                      if e.priority <= p and e.match.overlaps(m))
        assert got == want, step
    assert any(st.partial for st in table._subtables.values())


# -- model check: every live cached answer equals a fresh pipeline run ---------------

IPS = ["10.0.0.1", "10.0.0.2", "10.0.1.1"]
PORTS = [53, 80, 1000]


def random_match(rng):
    kw = {}
    if rng.random() < 0.3:
        kw["in_port"] = rng.choice([1, 2])
    if rng.random() < 0.8:
        kw["eth_type"] = 0x800
        if rng.random() < 0.5:
            kw["ipv4_src"] = rng.choice([rng.choice(IPS), ("10.0.0.0", "255.255.255.0"),
                                         ("10.0.0.0", "255.255.0.0")])
        if rng.random() < 0.5:
            kw["ipv4_dst"] = rng.choice(IPS)
        if rng.random() < 0.5:
            kw["ip_proto"] = rng.choice([6, 17])
            if rng.random() < 0.6:
                field = "udp" if kw["ip_proto"] == 17 else "tcp"
                kw[field + ("_src" if rng.random() < 0.5 else "_dst")] = rng.choice(PORTS)
    return M(**kw)


def random_key(rng):
    proto = rng.choice([6, 17])
    l4 = "udp" if proto == 17 else "tcp"
    key = dict(eth_src="02:00:00:00:00:01", eth_dst="02:00:00:00:00:02", eth_type=0x800,
               ip_proto=proto, ip_dscp=0, ip_ecn=0, ipv4_src=rng.choice(IPS),
               ipv4_dst=rng.choice(IPS))
    key[l4 + "_src"], key[l4 + "_dst"] = rng.choice(PORTS), rng.choice(PORTS)
    if l4 == "tcp":
        key["tcp_flags"] = 0x10
    return rng.choice([1, 2]), key


class ModelCache:
    """The fast path cache's semantics: entries with the ids they traversed, per-id and
    global generations."""

    def __init__(self):
        self.gen = 0
        self.all_gen = 0
        self.flow_gen = {}
        self.entries = {}
        self.invalidations = 0

    def insert(self, k, answer, ids):
        assert len(ids) <= 8
        self.entries[k] = (answer, tuple(ids), self.gen)

    def alive(self):
        for k, (answer, ids, g) in self.entries.items():
            if g >= self.all_gen and all(g >= self.flow_gen.get(i, -1) for i in ids):
                yield k, answer

    def invalidate_flow(self, i):
        self.gen += 1
        self.flow_gen[i] = self.gen
        self.invalidations += 1

    def invalidate_all(self):
        self.gen += 1
        self.all_gen = self.gen
        self.invalidations += 1

    def flow_counters(self, ids):
        return [(0, 0, 0)] * len(ids)


@pytest.mark.parametrize("seed", range(6))
def test_random_flow_mods_never_leave_a_stale_cached_answer(seed):
    rng = random.Random(seed)
    cache = ModelCache()
    t = Tables(cache)
    keys = [random_key(rng) for _ in range(60)]
    survived = 0
    for step in range(250):
        op = rng.random()
        table_id = rng.choice([0, 0, 1])
        actions = [rng.choice([out(2), out(3), out(4),
                               parser.OFPActionSetField(ipv4_dst=rng.choice(IPS))])]
        goto = 1 if table_id == 0 and rng.random() < 0.4 else None
        try:
            if op < 0.55:
                t.add(random_match(rng), rng.choice([0, 5, 10, 900, 1000]), table_id, actions, goto)
            elif op < 0.7:
                t.mod(ofp.OFPFC_MODIFY, random_match(rng), table_id=table_id, actions=actions)
            elif op < 0.8:
                t.mod(ofp.OFPFC_DELETE, random_match(rng), table_id=table_id)
            elif op < 0.9:
                entries = list(t.tables.all_entries())
                if entries:
                    e = rng.choice(entries)
                    t.mod(ofp.OFPFC_DELETE_STRICT, e.match.to_ryu(), e.priority, e.table_id)
        except OFError:
            pass  # e.g. a set-field without its prerequisite in the match: refused, no change
        # packets: the slow path caches what is cacheable
        for in_port, key in rng.sample(keys, 15):
            k = (in_port, tuple(sorted(key.items())))
            if k in dict(cache.alive()):
                continue
            r = t.run(key, in_port)
            if r.cacheable:
                cache.insert(k, (r.actions, r.flow_ids), r.cache_ids)
        before = len(list(cache.alive()))
        for k, answer in cache.alive():
            r = t.run(dict(k[1]), k[0])
            assert (r.actions, r.flow_ids) == answer, "stale cache entry at step %d" % step
        survived += before
    assert survived > 0


def test_a_new_session_keeps_the_other_sessions_cached():
    cache = ModelCache()
    t = Tables(cache)
    t.add(M(), priority=0, actions=[out(ofp.OFPP_CONTROLLER)])
    t.add(M(udp_dst=53, **UDP), priority=100, actions=[out(ofp.OFPP_CONTROLLER)])
    for sport in (1001, 1002):
        t.add(five("10.0.0.1", sport), priority=900, actions=[out(2)])
        key = udp_key("10.0.0.1", sport)
        r = t.run(key)
        assert r.cacheable
        cache.insert(sport, r.actions, r.cache_ids)
    t.add(five("10.0.0.1", 1003), priority=900, actions=[out(2)])
    assert sorted(k for k, _ in cache.alive()) == [1001, 1002]


# -- the same with megaflows, the agent's own slow path and both real caches ---------

class TwinCaches:
    """A fast path stand-in for the Agent: the C cache and the twin (`_CacheForTest`)
    side by side, fed the same inserts (with the agent's megaflow masks) and
    invalidations; every lookup must give both the same answer."""

    def __init__(self, buckets=64):
        self.impls = [impl._CacheForTest(buckets) for impl in CACHE_IMPLS]
        self.now = 0

    def start(self):
        pass

    def stop(self):
        pass

    def execute(self, in_port, packet, actions):
        pass

    def cache_insert(self, blob, actions, ids, mask_blob=None):
        got = {c.insert(blob, actions, ids, self.now, mask_blob) for c in self.impls}
        assert len(got) == 1

    def lookup(self, blob):
        self.now += 1
        got = [c.lookup(blob, self.now) for c in self.impls]
        assert all(g == got[0] for g in got), got
        return got[0]

    def invalidate_flow(self, i):
        for c in self.impls:
            c.invalidate_flow(i)

    def invalidate_all(self):
        for c in self.impls:
            c.invalidate_all()

    def flow_counters(self, ids):
        return [(0, 0, 0)] * len(ids)

    def stats(self):
        st = [c.stats() for c in self.impls]
        assert all(x == st[0] for x in st), st
        return st[0]


def _frame(key):
    """The UDP/TCP over IPv4 frame of a random_key() key."""
    import ipaddress
    import struct
    proto = key["ip_proto"]
    l4 = "udp" if proto == 17 else "tcp"
    sport, dport = key[l4 + "_src"], key[l4 + "_dst"]
    seg = struct.pack("!HHHH", sport, dport, 8, 0) if proto == 17 else \
        struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, key["tcp_flags"], 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0, 64, proto, 0,
                     ipaddress.IPv4Address(key["ipv4_src"]).packed,
                     ipaddress.IPv4Address(key["ipv4_dst"]).packed)
    return bytes.fromhex("020000000002" "020000000001" "0800") + ip + seg


def _normal(actions):
    from kp_switch import fastpath_ref
    return fastpath_ref.compile_actions(actions)


@pytest.mark.parametrize("seed", range(8))
def test_random_flow_mods_never_leave_a_stale_megaflow_answer(seed):
    """Random flow tables (two tables, goto, set-field, wildcards, controller outputs)
    and random packets through the agent's slow path, which inserts exact entries and
    megaflows into the C cache and the twin at once: both always answer alike, and
    every answer a cache gives equals a fresh classification by the tables."""
    from kp_switch import fastpath_ref
    from kp_switch.agent import Agent
    rng = random.Random(seed)
    dp = TwinCaches()
    agent = Agent(dp, [(i, "p%d" % i) for i in (1, 2, 3, 4)], clock=lambda: 100.0,
                  link_reader=lambda name: ("02:00:00:00:00:0%s" % name[-1], True, 10000000))
    keys = [random_key(rng) for _ in range(80)]
    checked = 0

    def mod(command, match, priority=100, table_id=0, actions=(), goto=None):
        ins = [parser.OFPInstructionActions(APPLY, list(actions))]
        if goto is not None:
            ins.append(parser.OFPInstructionGotoTable(goto))
        fm = parser.OFPFlowMod(None, table_id=table_id, priority=priority, command=command,
                               match=match, instructions=ins, out_port=ofp.OFPP_ANY,
                               out_group=ofp.OFPG_ANY)
        with agent.lock:
            agent.tables.flow_mod(fm, agent.context(), 100.0)

    for step in range(200):
        op = rng.random()
        table_id = rng.choice([0, 0, 1])
        actions = [rng.choice([out(2), out(3), out(4), out(ofp.OFPP_IN_PORT),
                               out(ofp.OFPP_CONTROLLER),
                               parser.OFPActionSetField(ipv4_dst=rng.choice(IPS))])]
        goto = 1 if table_id == 0 and rng.random() < 0.4 else None
        try:
            if op < 0.55:
                mod(ofp.OFPFC_ADD, random_match(rng), rng.choice([0, 5, 10, 900, 1000]),
                    table_id, actions, goto)
            elif op < 0.7:
                mod(ofp.OFPFC_MODIFY, random_match(rng), table_id=table_id, actions=actions)
            elif op < 0.8:
                mod(ofp.OFPFC_DELETE, random_match(rng), table_id=table_id)
            elif op < 0.9:
                entries = list(agent.tables.all_entries())
                if entries:
                    e = rng.choice(entries)
                    mod(ofp.OFPFC_DELETE_STRICT, e.match.to_ryu(), e.priority, e.table_id)
        except OFError:
            pass
        for in_port, key in rng.sample(keys, 20):
            frame = _frame(key)
            parsed, blob, _ = fastpath_ref.parse_blob(frame, in_port)
            got = dp.lookup(blob)
            if got is None:
                agent.slow_path(in_port, frame, parsed, blob)
                continue
            fresh = agent.pipeline.run(in_port, parsed, len(frame), 100.0, count=False)
            assert fresh.cacheable, "a cached answer for %r at step %d" % (key, step)
            assert (_normal(got[0]), got[1]) == (_normal(fresh.actions), fresh.cache_ids), \
                "stale answer for %r at step %d" % (key, step)
            checked += 1
    st = dp.stats()
    assert checked > 0 and st["mf_hits"] > 0 and st["mf_inserts"] > 0, st


# -- real traffic ----------------------------------------------------------------------

RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, (ip, port) = s.recvfrom(2048)
    print(port, data.decode(), flush=True)
"""
SENDER = r"""
import socket, sys, time
dst, dport, sport, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", sport))
for i in range(n):
    s.sendto(("%s-%d" % (tag, i)).encode(), (dst, dport))
    time.sleep(0.01)
"""
DPORT = 7000


class Receiver:
    """A UDP listener in a namespace; `got` collects (source port, payload)."""

    def __init__(self, host):
        self.proc = host.popen(sys.executable, "-c", RECEIVER, str(DPORT))
        assert self.proc.stdout.readline().strip() == "ready"
        self.got = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            port, payload = line.split()
            with self.lock:
                self.got.append((int(port), payload))

    def payloads(self, sport):
        with self.lock:
            return [p for s, p in self.got if s == sport]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def send(host, dst_ip, sport, n, tag):
    host.run(sys.executable, "-c", SENDER, dst_ip, str(DPORT), str(sport), str(n), tag)


def wait_for(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def rig():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from of_harness import Hosts, SwitchProcess, TestController, close_rig
    hosts = Hosts(2, net=79)
    ctl = sw = ch = recv = None
    try:
        for h in hosts:
            # quiet hosts: no IPv6 chatter, no ARP (static neighbours), so that every
            # cache miss during the test is one of our packets
            h.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            h.run("sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
        for h, peer in ((hosts[0], hosts[1]), (hosts[1], hosts[0])):
            h.run("ip", "neigh", "replace", peer.ip4, "lladdr", peer.mac, "dev", "eth0", "nud",
                  "permanent")
        ctl = TestController()
        sw = SwitchProcess([h.port_if for h in hosts], controller=ctl.target, dpid=0x2B)
        ch = ctl.accept()
        recv = Receiver(hosts[1])
        yield hosts, ch, recv
    finally:
        if recv is not None:
            recv.close()
        close_rig(ch, sw, ctl, hosts)


def flow_mod(match, actions, priority, command=ofp.OFPFC_ADD):
    from of_harness import DP
    return parser.OFPFlowMod(DP, table_id=0, priority=priority, command=command, match=match,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             instructions=[parser.OFPInstructionActions(APPLY, actions)])


def cache_stats(ch):
    from of_harness import DP
    r = ch.request(parser.OFPExperimenter(DP, kpexp.KP_EXPERIMENTER_ID,
                                          kpexp.KP_CACHE_STATS_REQUEST, b""))[0]
    return kpexp.decode_cache_stats(r.data)


def delta(after, before):
    return {k: after[k] - before[k] for k in ("hits", "misses", "inserts", "invalidated")}


def session(src, dst, sport):
    return M(eth_type=0x800, ip_proto=17, ipv4_src=src.ip4, ipv4_dst=dst.ip4, udp_src=sport,
             udp_dst=DPORT)


def flow_packets(ch, match):
    from of_harness import DP
    (s,) = ch.stats(parser.OFPFlowStatsRequest(DP, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, match))
    return s.packet_count


@pytest.mark.kpswitch
def test_new_session_flow_leaves_established_flows_cached(rig):
    hosts, ch, recv = rig
    a, b, c = 5001, 5002, 5003
    # like kp_app: table-miss to the controller, a session flow per connection
    ch.send(flow_mod(M(), [out(ofp.OFPP_CONTROLLER)], 0))
    ch.send(flow_mod(M(eth_type=0x800, ip_proto=17, ipv4_dst=hosts[1].ip4), [out(ofp.OFPP_CONTROLLER)], 10))
    for sport in (a, b):
        ch.send(flow_mod(session(hosts[0], hosts[1], sport), [out(2)], 900))
    assert ch.barrier() == []
    for sport in (a, b):
        send(hosts[0], hosts[1].ip4, sport, 5, "warm")
    assert wait_for(lambda: len(recv.payloads(a)) == 5 and len(recv.payloads(b)) == 5)
    s0 = cache_stats(ch)
    for sport in (a, b):
        send(hosts[0], hosts[1].ip4, sport, 5, "cached")
    assert wait_for(lambda: len(recv.payloads(a)) == 10 and len(recv.payloads(b)) == 10)
    s1 = cache_stats(ch)
    d = delta(s1, s0)
    assert d["hits"] >= 10 and d["misses"] == 0, d      # A and B are cached

    # a new session C: its flow goes in at a higher priority than what C would hit
    ch.send(flow_mod(session(hosts[0], hosts[1], c), [out(2)], 900))
    assert ch.barrier() == []
    for sport in (a, b):
        send(hosts[0], hosts[1].ip4, sport, 10, "after")
    assert wait_for(lambda: len(recv.payloads(a)) == 20 and len(recv.payloads(b)) == 20)
    s2 = cache_stats(ch)
    d = delta(s2, s1)
    # no new misses and nothing invalidated: A and B stayed in the cache
    assert d["hits"] >= 20 and d["misses"] == 0 and d["invalidated"] == 0, d

    # C follows its new flow from its very first packet (no packet-in, delivered)
    ch.drain(ofp.OFPT_PACKET_IN)
    send(hosts[0], hosts[1].ip4, c, 5, "new")
    assert wait_for(lambda: len(recv.payloads(c)) == 5), recv.payloads(c)
    assert recv.payloads(c) == ["new-%d" % i for i in range(5)]
    assert flow_packets(ch, session(hosts[0], hosts[1], c)) == 5
    pins = [p for p in ch.drain(ofp.OFPT_PACKET_IN)
            if p is not None and bytes(p.data)[34:36] == c.to_bytes(2, "big")]
    assert pins == []
    d = delta(cache_stats(ch), s2)
    assert d["misses"] == 1 and d["hits"] >= 4 and d["invalidated"] == 0, d


@pytest.mark.kpswitch
def test_a_flow_shadowing_a_cached_entry_takes_effect_on_the_next_packet(rig):
    hosts, ch, recv = rig
    a, c = 6001, 6003
    broad = M(eth_type=0x800, ip_proto=17, ipv4_dst=hosts[1].ip4)
    ch.send(flow_mod(broad, [out(2)], 10))
    assert ch.barrier() == []
    for sport in (a, c):
        send(hosts[0], hosts[1].ip4, sport, 5, "warm")
    assert wait_for(lambda: len(recv.payloads(a)) == 5 and len(recv.payloads(c)) == 5)
    s0 = cache_stats(ch)
    send(hosts[0], hosts[1].ip4, c, 3, "cached")
    assert wait_for(lambda: len(recv.payloads(c)) == 8)
    assert delta(cache_stats(ch), s0)["hits"] >= 3            # C is served from the cache

    # a higher-priority drop for C's 5-tuple: its very next packet is dropped
    ch.send(flow_mod(session(hosts[0], hosts[1], c), [], 900))
    assert ch.barrier() == []
    send(hosts[0], hosts[1].ip4, c, 1, "shadowed")
    send(hosts[0], hosts[1].ip4, a, 1, "other")                # A is not shadowed
    assert wait_for(lambda: len(recv.payloads(a)) == 6)
    time.sleep(0.2)
    assert len(recv.payloads(c)) == 8, recv.payloads(c)
    assert flow_packets(ch, session(hosts[0], hosts[1], c)) == 1

    # modify the drop into a forward: the next packet is delivered
    ch.send(flow_mod(session(hosts[0], hosts[1], c), [out(2)], 900, ofp.OFPFC_MODIFY_STRICT))
    assert ch.barrier() == []
    send(hosts[0], hosts[1].ip4, c, 1, "modified")
    assert wait_for(lambda: recv.payloads(c)[-1:] == ["modified-0"])

    # back to a drop, then delete it: the broad flow forwards C again at once
    ch.send(flow_mod(session(hosts[0], hosts[1], c), [], 900, ofp.OFPFC_MODIFY_STRICT))
    assert ch.barrier() == []
    send(hosts[0], hosts[1].ip4, c, 2, "dropped")
    time.sleep(0.2)
    assert recv.payloads(c)[-1:] == ["modified-0"]
    ch.send(flow_mod(session(hosts[0], hosts[1], c), [], 900, ofp.OFPFC_DELETE_STRICT))
    assert ch.barrier() == []
    send(hosts[0], hosts[1].ip4, c, 1, "deleted")
    assert wait_for(lambda: recv.payloads(c)[-1:] == ["deleted-0"])
    assert len(recv.payloads(c)) == 10
