"""The OpenFlow flow tables: entries, lookup, flow-mod semantics, timeouts, counters.

Pure Python and no I/O: time comes in as `now` (seconds on the monotonic clock, the
clock the fast path stamps cache hits with).  The fast path's cache is reached through
a small interface (`NullCache` shows it): `invalidate_flow(id)`, `invalidate_all()` and
`flow_counters(ids)`.  Every flow entry has an id below `max_flow_ids`; the cache counts
its hits against the ids of the entries a packet traversed, and a flow's statistics are
the packets the slow path counted plus the hits the cache counted since the id was
given to it (its baseline).

Lookup is a tuple-space search (like Open vSwitch's classifier): entries are grouped in
subtables by the set of (field, mask) they match on; a lookup masks the key once per
subtable, probes a dict, and stops early once no subtable can beat the best priority.

Invalidation (the cache must only ever give the answer the tables would give):
- a modified or removed entry invalidates its own id (whatever traversed it is stale;
  nothing else changes: a removal only hands its packets to other entries);
- an entry replaced in place (an add with the same match and priority) invalidates its
  id only: it keeps its id and its tie-break rank, so it takes exactly the same packets;
- an added entry F (table T, priority P, match M) can only take packets that match M
  and that T decided with an entry G of priority <= P (ties: OpenFlow leaves them
  undefined, we count them as affected) or with T's miss.  Every cached entry that
  went through T recorded that G (or T's miss id, below), and G then matched a packet
  M matches too, so G's match overlaps M: invalidating the ids of the entries of T with
  priority <= P overlapping M, plus T's miss id unless one of those entries covers M
  (then no packet of M ever missed), invalidates exactly what F could change.  Less is
  needed when one of them, H, covers M: every packet of M matches H, so T decided it
  with H or with an entry of priority >= H's, never with one below H.  Entries below
  the highest such H keep their cached packets (so a new exact session flow does not
  flush the packets of a broad flow that a narrower one above it already shields from
  it).  Adds with more than MAX_PRECISE_INVALIDATIONS ids invalidate everything instead
  (the same effect, one command to the datapath instead of hundreds).
- megaflow entries (FASTPATH.md, "Megaflows": one cached answer for every packet equal
  on the bits the lookups probed) need nothing more.  Every packet a megaflow answers
  went the same way through the tables (that is what its mask guarantees), so it
  recorded the same entries G.  An added F can change the answer of one of those
  packets only if the packet matches M and T decided it with a G of priority <= P (or
  the miss): G overlaps M as above.  The exception for an H covering M holds too: if G
  is below H, H's subtable ranks above G's and was probed, its bits are in the mask,
  and the classified packet did not match H, so no packet of the megaflow matches H,
  hence none matches M.  Modify, delete and timeouts invalidate the entries' own ids,
  which the megaflow recorded like an exact entry.
- a table miss (no entry matches, the packet is dropped) is recorded in the cache under
  a pseudo flow id per table, `miss_ids[table_id]`: the top `n_tables` ids of the id
  space, never given to a flow entry.  Its cache hits count as lookups of that table.

Lookup ties between equal-priority entries in different subtables are broken by the
order the entries were added (`seq`, the earlier wins), never by the subtables' order,
which shifts as entries come and go: otherwise removing or adding an entry could change
the winner of a tie between two other entries without invalidating either.

(Over 500 lines: the classifier and the flow-mod rules are one argument, the invalidation
rules above: an entry's insert, replace and removal and the cache ids they invalidate
must be read side by side for the cache to be only ever a cache.)
"""
import collections

from ryu.ofproto import ofproto_v1_3 as ofp

from .actions import Context, compile_instructions
from .errors import OFError
from .match import Match

# Above this many ids an add invalidates the whole cache: each invalidate_flow is a
# command on the datapath's queue (256 long, and the sender waits when it is full).
MAX_PRECISE_INVALIDATIONS = 64
# An add looks at no more overlapping entries than this: past it, it invalidates
# everything (the shield rule may have left fewer than that many, so it looks a little
# further than MAX_PRECISE_INVALIDATIONS before it gives up).
OVERLAP_LIMIT = 4 * MAX_PRECISE_INVALIDATIONS

ALL_FLAGS = (ofp.OFPFF_SEND_FLOW_REM | ofp.OFPFF_CHECK_OVERLAP | ofp.OFPFF_RESET_COUNTS |
             ofp.OFPFF_NO_PKT_COUNTS | ofp.OFPFF_NO_BYT_COUNTS)


class NullCache:
    """A cache that caches nothing (unit tests, or before the datapath exists)."""

    def invalidate_flow(self, flow_id):
        pass

    def invalidate_all(self):
        pass

    def flow_counters(self, flow_ids):
        return [(0, 0, 0)] * len(flow_ids)


class FlowEntry:
    __slots__ = ("id", "seq", "table_id", "priority", "match", "instructions", "cookie",
                 "idle_timeout", "hard_timeout", "flags", "installed", "last_used",
                 "slow_packets", "slow_bytes", "base_packets", "base_bytes",
                 "cache_packets", "cache_bytes")

    def __init__(self, table_id, priority, match, instructions, cookie=0, idle_timeout=0,
                 hard_timeout=0, flags=0, now=0.0):
        self.id = -1
        self.seq = 0  # the order of addition: the earlier wins a tie of priorities
        self.table_id = table_id
        self.priority = priority
        self.match = match
        self.instructions = instructions
        self.cookie = cookie
        self.idle_timeout = idle_timeout
        self.hard_timeout = hard_timeout
        self.flags = flags
        self.installed = now
        self.last_used = now
        self.slow_packets = self.slow_bytes = 0
        self.base_packets = self.base_bytes = 0
        self.cache_packets = self.cache_bytes = 0

    @property
    def packet_count(self):
        return self.slow_packets + self.cache_packets

    @property
    def byte_count(self):
        return self.slow_bytes + self.cache_bytes

    def is_table_miss(self):
        return self.priority == 0 and not self.match.fields

    def duration(self, now):
        d = max(0.0, now - self.installed)
        return int(d), int((d - int(d)) * 1e9)

    def count(self, nbytes, now):
        self.slow_packets += 1
        self.slow_bytes += nbytes
        self.last_used = now

    def __repr__(self):
        return "FlowEntry(id=%d table=%d prio=%d %r)" % (self.id, self.table_id, self.priority, self.match)


# Lookup stages, as Open vSwitch's classifier has them: metadata, L2, L3, L4.  A
# subtable whose entries all differ from a packet in an early stage's fields answers
# "no" having looked at those fields only, so a megaflow need not hold the later ones
# (a client's packet is no pod's reply: the replies' source port stays wildcarded, and
# one megaflow serves every new 5-tuple of that client).
_STAGE_OF = {"in_port": 0, "in_phy_port": 0, "metadata": 0, "tunnel_id": 0,
             "eth_dst": 1, "eth_src": 1, "eth_type": 1, "vlan_vid": 1, "vlan_pcp": 1,
             "ip_dscp": 2, "ip_ecn": 2, "ip_proto": 2, "ipv4_src": 2, "ipv4_dst": 2,
             "ipv6_src": 2, "ipv6_dst": 2, "ipv6_flabel": 2, "arp_op": 2, "arp_spa": 2,
             "arp_tpa": 2, "arp_sha": 2, "arp_tha": 2}
_LAST_STAGE = 3


def _stages(sig):
    """[(positions of the fields of stages <= s, fields of stage s)] for each stage the
    signature has but its last (which the full bucket probe decides)."""
    by_stage = collections.defaultdict(list)
    for i, (name, mask) in enumerate(sig):
        by_stage[_STAGE_OF.get(name, _LAST_STAGE)].append(i)
    present = sorted(by_stage)
    out, upto = [], []
    for stage in present[:-1]:
        upto = upto + by_stage[stage]
        out.append((tuple(upto), tuple(sig[i] for i in by_stage[stage])))
    return out


class _Subtable:
    """The entries with one signature, by their values.  `partial` indexes the buckets by
    the values of some of the fields (positions into `sig`): made the first time an
    overlap query pins only those fields (a new session flow without the in_port that
    the subtable's reply flows match on), then kept up to date, so such a query is a
    dict probe instead of a scan of every bucket.  `stages` and `stage_keys`: the staged
    lookup's indexes (see _STAGE_OF), counts of the buckets' values up to each stage."""
    __slots__ = ("sig", "buckets", "prio_count", "max_priority", "partial", "stages",
                 "stage_keys")

    def __init__(self, sig):
        self.sig = sig
        self.buckets = {}
        self.prio_count = collections.Counter()
        self.max_priority = -1
        self.partial = {}   # positions -> {values at those positions: {bucket values}}
        self.stages = _stages(sig)
        self.stage_keys = [collections.Counter() for _ in self.stages]

    def add_bucket(self, vals):
        for positions, index in self.partial.items():
            index.setdefault(tuple(vals[i] for i in positions), set()).add(vals)
        for (positions, _), keys in zip(self.stages, self.stage_keys):
            keys[tuple(vals[i] for i in positions)] += 1

    def drop_bucket(self, vals):
        for positions, index in self.partial.items():
            key = tuple(vals[i] for i in positions)
            group = index[key]
            group.discard(vals)
            if not group:
                del index[key]
        for (positions, _), keys in zip(self.stages, self.stage_keys):
            key = tuple(vals[i] for i in positions)
            keys[key] -= 1
            if not keys[key]:
                del keys[key]

    def buckets_with(self, positions, values):
        """The bucket values whose fields at `positions` are `values`."""
        index = self.partial.get(positions)
        if index is None:
            index = self.partial[positions] = {}
            for vals in self.buckets:
                index.setdefault(tuple(vals[i] for i in positions), set()).add(vals)
        return index.get(values, ())


class FlowTable:
    """One table: a tuple-space classifier plus counters."""

    def __init__(self, table_id, max_entries):
        self.table_id = table_id
        self.max_entries = max_entries
        self.entries = {}  # id -> FlowEntry, insertion order
        self._subtables = {}
        self._overlap_plans = {}   # (match signature, subtable signature) -> _overlap_plan
        self._order = []
        self._dirty = False
        self.lookup_count = 0
        self.matched_count = 0
        self.removed_cache_packets = 0  # cache hits of entries since removed

    def __len__(self):
        return len(self.entries)

    def insert(self, entry):
        sig = entry.match.signature()
        st = self._subtables.get(sig)
        if st is None:
            st = self._subtables[sig] = _Subtable(sig)
        vals = entry.match.values()
        lst = st.buckets.get(vals)
        if lst is None:
            lst = st.buckets[vals] = []
            st.add_bucket(vals)
        i = 0
        while i < len(lst) and lst[i].priority >= entry.priority:
            i += 1
        lst.insert(i, entry)
        st.prio_count[entry.priority] += 1
        if entry.priority > st.max_priority:
            st.max_priority = entry.priority
            self._dirty = True
        self.entries[entry.id] = entry
        self._dirty = self._dirty or len(self._order) != len(self._subtables)

    def remove(self, entry):
        sig = entry.match.signature()
        st = self._subtables[sig]
        vals = entry.match.values()
        lst = st.buckets[vals]
        lst.remove(entry)
        if not lst:
            del st.buckets[vals]
            st.drop_bucket(vals)
        st.prio_count[entry.priority] -= 1
        if not st.prio_count[entry.priority]:
            del st.prio_count[entry.priority]
            if entry.priority == st.max_priority:
                st.max_priority = max(st.prio_count) if st.prio_count else -1
                self._dirty = True
        if not st.buckets:
            del self._subtables[sig]
            self._dirty = True
        del self.entries[entry.id]

    def find_strict(self, match, priority):
        st = self._subtables.get(match.signature())
        if st is None:
            return None
        for e in st.buckets.get(match.values(), ()):
            if e.priority == priority:
                return e
        return None

    def lookup(self, kv, wc=None):
        """The highest-priority entry matching key ints `kv` (of equal priorities, the
        one added first), or None.  With a dict `wc` (megaflow wildcards), ORs into it
        the (field, mask) of every subtable the lookup probed: the bits of the key the
        answer depended on (the answer is the same for every key equal to this one on
        them: the probed subtables give the same buckets, the others were not needed)."""
        if self._dirty:
            self._order = sorted(self._subtables.values(), key=lambda s: -s.max_priority)
            self._dirty = False
        best = None
        for st in self._order:
            if best is not None and st.max_priority < best.priority:
                break
            vals = []
            for name, mask in st.sig:
                v = kv.get(name)
                if v is None:
                    break
                vals.append(v & mask)
            else:
                if st.stages and not self._stages_match(st, vals, wc):
                    continue
                if wc is not None:
                    for name, mask in st.sig:
                        wc[name] = wc.get(name, 0) | mask
                lst = st.buckets.get(tuple(vals))
                if lst:
                    e = lst[0]
                    if best is None or e.priority > best.priority or (
                            e.priority == best.priority and e.seq < best.seq):
                        best = e
        return best

    @staticmethod
    def _stages_match(st, vals, wc):
        """Staged lookup: False as soon as no entry of the subtable agrees with the
        packet on the fields up to a stage; wc then gets those fields only."""
        for (positions, fields), keys in zip(st.stages, st.stage_keys):
            if wc is not None:
                for name, mask in fields:
                    wc[name] = wc.get(name, 0) | mask
            if tuple(vals[i] for i in positions) not in keys:
                return False
        return True

    def overlapping(self, match, max_priority, limit=None):
        """The entries with priority <= max_priority that could match a packet `match`
        matches too (for every field both constrain, the values agree on the bits both
        masks cover; prerequisites are not considered, which can only add entries).
        With `limit`: None as soon as there are more than that many (what a caller that
        would then invalidate everything needs to know, at a cost bounded by `limit`
        rather than by the table: a VIP added next to 10,000 reply flows it shares no
        field with overlaps every one of them).

        Per subtable: when `match` pins down every bit the subtable looks at, the
        overlapping entries are those of one bucket (a dict probe); when it pins some of
        its fields whole, those of the buckets a partial index gives for them, compared
        with the remaining common bits; otherwise every bucket is compared."""
        out = []
        mf = match.fields
        sig = match.signature()
        for st in self._subtables.values():
            if min(st.prio_count) > max_priority:
                continue
            plan = self._overlap_plans.get((sig, st.sig))
            if plan is None:
                plan = self._overlap_plans[(sig, st.sig)] = _overlap_plan(sig, st.sig)
            positions, whole, partly = plan
            common = [(i, c, mf[name][0] & c) for i, name, c in partly]
            values = tuple(mf[name][0] & mask for name, mask in whole)
            if len(whole) == len(st.sig):
                lst = st.buckets.get(values)
                lists = [lst] if lst else []
            elif whole:
                lists = (st.buckets[vals] for vals in st.buckets_with(positions, values)
                         if all(vals[i] & c == w for i, c, w in common))
            else:
                lists = (lst for vals, lst in st.buckets.items()
                         if all(vals[i] & c == w for i, c, w in common))
            for lst in lists:
                out.extend(e for e in lst if e.priority <= max_priority)
                if limit is not None and len(out) > limit:
                    return None
        return out


def _overlap_plan(match_sig, subtable_sig):
    """For a match of signature `match_sig` and a subtable: the positions and (name,
    mask) of the subtable's fields the match pins whole, and (position, name, common
    mask) of those it constrains in part."""
    masks = dict(match_sig)
    positions, whole, partly = [], [], []
    for i, (name, smask) in enumerate(subtable_sig):
        c = masks.get(name, 0) & smask
        if c == smask:
            positions.append(i)
            whole.append((name, smask))
        elif c:
            partly.append((i, name, c))
    return tuple(positions), tuple(whole), tuple(partly)


class Removed:
    """A flow entry that left its table, and why (OFPRR_*)."""

    __slots__ = ("entry", "reason")

    def __init__(self, entry, reason):
        self.entry = entry
        self.reason = reason


# A delete (or stats request) by cookie and mask, kp_app's way of removing a VIP's or a
# pod's flows, finds its entries through an index of the entries by (cookie & mask),
# made the first time a mask is asked for and kept up to date from then on, instead of
# checking every entry of every table: 10,000 Services deleted among 40,000 flows were
# 400 million match checks in Python, minutes of the agent's time. At most this many
# masks are indexed (kp_app uses four); a request with another one scans.
MAX_COOKIE_INDEXES = 8


class FlowTables:
    """The pipeline's tables and the OpenFlow rules that change them."""

    def __init__(self, n_tables=8, max_entries=100000, cache=None, max_flow_ids=262144):
        self.tables = [FlowTable(i, max_entries) for i in range(n_tables)]
        self.cache = cache or NullCache()
        if max_flow_ids <= n_tables:
            raise ValueError("max_flow_ids %d leaves no id for flows" % max_flow_ids)
        # The top n_tables ids stand for the tables' misses; flows get the ones below.
        self.max_flow_ids = max_flow_ids - n_tables
        self.miss_ids = [max_flow_ids - n_tables + i for i in range(n_tables)]
        self._miss_base = [p for p, _, _ in self.cache.flow_counters(self.miss_ids)]
        self._next_seq = 0
        self._next_id = 0
        self._free_ids = collections.deque()
        self._timed = {}  # id -> entry with an idle or hard timeout
        # mask -> (cookie & mask) -> {entry id: entry}, every table's (MAX_COOKIE_INDEXES)
        self._cookie_indexes = {}

    # -- ids and counters ------------------------------------------------------------

    def _alloc_id(self):
        if self._next_id < self.max_flow_ids:
            self._next_id += 1
            return self._next_id - 1
        if not self._free_ids:
            raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL, "out of flow ids")
        return self._free_ids.popleft()

    def _set_baseline(self, entry):
        (p, b, _), = self.cache.flow_counters([entry.id])
        entry.base_packets, entry.base_bytes = p, b
        entry.cache_packets = entry.cache_bytes = 0

    def sync_counters(self, entries):
        """Fold the cache's hit counters into `entries` (packets, bytes, last use)."""
        entries = list(entries)
        if not entries:
            return
        for e, (p, b, last_ns) in zip(entries, self.cache.flow_counters([e.id for e in entries])):
            e.cache_packets = max(0, p - e.base_packets)
            e.cache_bytes = max(0, b - e.base_bytes)
            if e.cache_packets and last_ns:
                last = last_ns / 1e9
                if last > e.last_used:
                    e.last_used = last

    # -- entries in and out (every insert and remove goes through these two) ----------

    def _insert(self, entry):
        self.tables[entry.table_id].insert(entry)
        for mask, index in self._cookie_indexes.items():
            index.setdefault(entry.cookie & mask, {})[entry.id] = entry

    def _take_out(self, entry):
        self.tables[entry.table_id].remove(entry)
        for mask, index in self._cookie_indexes.items():
            key = entry.cookie & mask
            same = index.get(key)
            if same is not None:
                same.pop(entry.id, None)
                if not same:
                    del index[key]

    def _cookie_index(self, mask):
        """The entries by (cookie & mask), or None when too many masks are indexed."""
        index = self._cookie_indexes.get(mask)
        if index is None and len(self._cookie_indexes) < MAX_COOKIE_INDEXES:
            index = self._cookie_indexes[mask] = {}
            for e in self.all_entries():
                index.setdefault(e.cookie & mask, {})[e.id] = e
        return index

    def all_entries(self, table_id=ofp.OFPTT_ALL):
        tables = self.tables if table_id == ofp.OFPTT_ALL else [self.tables[table_id]]
        for t in tables:
            yield from t.entries.values()

    # -- flow-mod --------------------------------------------------------------------

    def _check_table(self, table_id, allow_all):
        if table_id == ofp.OFPTT_ALL and allow_all:
            return
        if table_id >= len(self.tables):
            raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID, "table %d" % table_id)

    def flow_mod(self, fm, ctx, now):
        """Apply a flow-mod (Ryu OFPFlowMod or anything with its attributes).

        Returns the list of Removed entries (deletes).  Raises OFError and changes
        nothing when the request is refused.
        """
        cmd = fm.command
        if fm.flags & ~ALL_FLAGS:
            raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_FLAGS, "flags %#x" % fm.flags)
        match = fm.match if isinstance(fm.match, Match) else Match.from_ryu(fm.match)
        if cmd == ofp.OFPFC_ADD:
            self._check_table(fm.table_id, False)
            ins = compile_instructions(fm.instructions, ctx, fm.table_id, match)
            self._add(fm, match, ins, now)
            return []
        if cmd in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            self._check_table(fm.table_id, False)
            ins = compile_instructions(fm.instructions, ctx, fm.table_id, match)
            strict = cmd == ofp.OFPFC_MODIFY_STRICT
            for e in self.select(fm.table_id, match, strict, fm.priority, fm.cookie, fm.cookie_mask):
                ins_e = ins
                e.instructions = ins_e
                if fm.flags & ofp.OFPFF_RESET_COUNTS:
                    self._reset(e)
                self.cache.invalidate_flow(e.id)
            return []
        if cmd in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            self._check_table(fm.table_id, True)
            strict = cmd == ofp.OFPFC_DELETE_STRICT
            victims = self.select(fm.table_id, match, strict, fm.priority, fm.cookie,
                                  fm.cookie_mask, fm.out_port, fm.out_group)
            return self._remove(victims, ofp.OFPRR_DELETE)
        raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND, "command %d" % cmd)

    def _reset(self, e):
        e.slow_packets = e.slow_bytes = 0
        self._set_baseline(e)

    def add_invalidations(self, table_id, match, priority):
        """The cache ids to invalidate when an entry (table_id, priority, match) is
        added next to the entries already there: the entries of the table with priority
        <= `priority` overlapping `match`, but none below the highest of them that
        covers `match`, and the table's miss id unless one of them covers `match` (see
        the module docstring); None when there are too many to list (invalidate
        everything)."""
        found = self.tables[table_id].overlapping(match, priority, OVERLAP_LIMIT)
        if found is None:       # more than the cache is told about one by one anyway
            return None
        shield = max((e.priority for e in found if match.covered_by(e.match)), default=None)
        if shield is None:
            return [e.id for e in found] + [self.miss_ids[table_id]]
        return [e.id for e in found if e.priority >= shield]

    def _add(self, fm, match, ins, now):
        table = self.tables[fm.table_id]
        old = table.find_strict(match, fm.priority)
        if fm.flags & ofp.OFPFF_CHECK_OVERLAP:
            for e in table.overlapping(match, fm.priority):
                if e.priority == fm.priority:
                    raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_OVERLAP, repr(e))
        if old is None and len(table) >= table.max_entries:
            raise OFError(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL, "table %d" % fm.table_id)
        entry = FlowEntry(fm.table_id, fm.priority, match, ins, fm.cookie, fm.idle_timeout,
                          fm.hard_timeout, fm.flags, now)
        if old is not None:
            # Replaced in place: same id, counters kept unless OFPFF_RESET_COUNTS, no
            # flow-removed; duration starts again.  Same match, priority and tie-break
            # rank: the same packets as before, so only what went through it is stale.
            self.sync_counters([old])
            self._take_out(old)
            self._timed.pop(old.id, None)
            entry.id = old.id
            entry.seq = old.seq
            if fm.flags & ofp.OFPFF_RESET_COUNTS:
                self._set_baseline(entry)
            else:
                for a in ("slow_packets", "slow_bytes", "base_packets", "base_bytes",
                          "cache_packets", "cache_bytes"):
                    setattr(entry, a, getattr(old, a))
            stale = [old.id]
        else:
            entry.id = self._alloc_id()
            entry.seq = self._next_seq
            self._next_seq += 1
            self._set_baseline(entry)
            stale = self.add_invalidations(fm.table_id, match, fm.priority)
        self._insert(entry)
        if entry.idle_timeout or entry.hard_timeout:
            self._timed[entry.id] = entry
        if stale is None or len(stale) > MAX_PRECISE_INVALIDATIONS:
            self.cache.invalidate_all()
        else:
            for i in stale:
                self.cache.invalidate_flow(i)
        return entry

    def select(self, table_id, match, strict, priority=0, cookie=0, cookie_mask=0,
               out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY):
        """The entries a modify/delete/stats request with these filters applies to."""
        if strict:
            tables = self.tables if table_id == ofp.OFPTT_ALL else [self.tables[table_id]]
            found = [e for e in (t.find_strict(match, priority) for t in tables) if e is not None]
        elif cookie_mask and (index := self._cookie_index(cookie_mask)) is not None:
            same = index.get(cookie & cookie_mask, {}).values()
            found = sorted((e for e in same if table_id in (ofp.OFPTT_ALL, e.table_id)
                            and e.match.covered_by(match)), key=lambda e: (e.table_id, e.seq))
        else:
            found = [e for e in self.all_entries(table_id) if e.match.covered_by(match)]
        if cookie_mask:
            found = [e for e in found if (e.cookie & cookie_mask) == (cookie & cookie_mask)]
        if out_port != ofp.OFPP_ANY:
            found = [e for e in found if e.instructions.outputs_to(out_port)]
        if out_group != ofp.OFPG_ANY:
            found = [e for e in found if out_group in e.instructions.groups()]
        return found

    def _remove(self, entries, reason):
        entries = list(entries)
        self.sync_counters(entries)
        removed = []
        for e in entries:
            table = self.tables[e.table_id]
            self._take_out(e)
            table.removed_cache_packets += e.cache_packets
            self._timed.pop(e.id, None)
            self.cache.invalidate_flow(e.id)
            self._free_ids.append(e.id)
            removed.append(Removed(e, reason))
        return removed

    def remove_using_group(self, group_id):
        """Entries forwarding to a group being deleted (OFPRR_GROUP_DELETE)."""
        victims = [e for e in self.all_entries() if group_id in e.instructions.groups()]
        return self._remove(victims, ofp.OFPRR_GROUP_DELETE)

    def uses_group(self, group_id):
        return [e for e in self.all_entries() if group_id in e.instructions.groups()]

    def expire(self, now):
        """Remove the entries whose idle or hard timeout has passed (cache hits count
        as use).  Returns the Removed list."""
        timed = list(self._timed.values())
        self.sync_counters([e for e in timed if e.idle_timeout])
        hard, idle = [], []
        for e in timed:
            if e.hard_timeout and now - e.installed >= e.hard_timeout:
                hard.append(e)
            elif e.idle_timeout and now - e.last_used >= e.idle_timeout:
                idle.append(e)
        return self._remove(hard, ofp.OFPRR_HARD_TIMEOUT) + self._remove(idle, ofp.OFPRR_IDLE_TIMEOUT)

    def stats(self, table_id, match, out_port, out_group, cookie, cookie_mask):
        """Entries for a flow/aggregate stats request, counters synced."""
        if table_id != ofp.OFPTT_ALL and table_id >= len(self.tables):
            raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TABLE_ID, "table %d" % table_id)
        if not isinstance(match, Match):
            match = Match.from_ryu(match)
        found = self.select(table_id, match, False, 0, cookie, cookie_mask, out_port, out_group)
        self.sync_counters(found)
        return found

    def table_stats(self):
        """[(table_id, active, lookups, matched)], cache hits included."""
        self.sync_counters(self.all_entries())
        missed = [max(0, p - base) for (p, _, _), base in
                  zip(self.cache.flow_counters(self.miss_ids), self._miss_base)]
        out = []
        for t in self.tables:
            cached = t.removed_cache_packets + sum(e.cache_packets for e in t.entries.values())
            out.append((t.table_id, len(t), t.lookup_count + cached + missed[t.table_id],
                        t.matched_count + cached))
        return out


__all__ = ["MAX_PRECISE_INVALIDATIONS", "FlowEntry", "FlowTable", "FlowTables", "NullCache", "Removed", "Context"]
