"""The OpenFlow pipeline as the slow path runs it: key in, resolved actions out.

`Pipeline.run(in_port, key, length, now)` walks the tables from 0 following goto-table,
runs apply-actions as they come, accumulates the action set and executes it at the end,
and returns a `Result`:

- `actions`: the flat, resolved action list of FASTPATH.md (FLOOD/ALL/IN_PORT and groups
  resolved into plain outputs) to run on one copy of the packet;
- `copies`: more flat lists, each run on a fresh copy of the original packet (only when
  a group bucket did something that cannot be undone on the shared copy, e.g. dec_ttl);
- `cacheable`: False when anything went to the controller, to OFPP_TABLE, or produced
  copies, or more cache ids were recorded than a cache entry holds (MAX_CACHED_FLOWS);
- `flow_ids`: the flow entries traversed, in order;
- `cache_ids`: what a cache entry for this packet records (`flow_ids`, plus the pseudo
  id of the table whose miss ended the walk: `FlowTables.miss_ids`), so that adding an
  entry to that table can invalidate the cached miss alone;
- `packet_ins`: `PacketIn` requests for the agent to send;
- `megaflow`: `{field: mask}`, the bits of the packet's key the answer depended on (the
  union of the subtables every table lookup probed, plus `in_port`, which every output
  depends on), for a megaflow entry (megaflow.py); None when the answer is not one a
  mask can express: not cacheable, or a group ran (select buckets are chosen by a hash
  of the packet; a bucket's undo writes back the packet's own values), or the packet
  has fields no megaflow holds (ARP, neighbour discovery).  The mask is the packet's
  original fields, even for a field an action rewrote before a later table looked at
  it: more bits than needed, never fewer.  Which headers the packet has is always part
  of a megaflow (the fast path matches its `present` bits whole), so an absent field
  never needs bits.  dec_ttl needs none either: the TTL is not in the key, the fast path
  drops at TTL <= 1 itself, and with invalid-TTL-to-controller the answer is not
  cacheable at all.

A set-field makes later tables see the rewritten value: the key is updated as actions
run.  Group buckets act on a clone of the packet: after a bucket, the fields it changed
are set back (push/pop undone) so what follows sees the packet as before the group.
"""
import zlib

from ryu.ofproto import ofproto_v1_3 as ofp

from . import datapath as dpimpl
from .actions import action_set_in_order, write_to_action_set
from .groups import MAX_CHAIN_DEPTH, MAX_GROUP_COPIES
from .match import to_int
from .fastpath_ref import LB_LOOPBACK
from .megaflow import IN_PORT_MASK, MASKABLE

# The ids a cache entry can record: the fast path's MAX_IDS_PER_ENTRY (8 today); a
# longer walk is not cached (the fast path would refuse the insert anyway).
MAX_CACHED_FLOWS = getattr(dpimpl.impl, "MAX_IDS_PER_ENTRY", 8)
# Fields a select group hashes: a connection's identity (not TCP flags, not TTL...).
SELECT_HASH_FIELDS = ("eth_src", "eth_dst", "eth_type", "vlan_vid", "ip_proto",
                      "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "tcp_src", "tcp_dst",
                      "udp_src", "udp_dst", "sctp_src", "sctp_dst", "arp_spa", "arp_tpa")


class PacketIn:
    """A packet-in to send: why, from which flow, and the actions run before it (so the
    agent can hand the controller the packet as modified so far)."""

    __slots__ = ("reason", "table_id", "cookie", "max_len", "in_port", "metadata", "actions_before")

    def __init__(self, reason, table_id, cookie, max_len, in_port, metadata, actions_before):
        self.reason = reason
        self.table_id = table_id
        self.cookie = cookie
        self.max_len = max_len
        self.in_port = in_port
        self.metadata = metadata
        self.actions_before = actions_before

    def __repr__(self):
        return "PacketIn(reason=%d table=%d cookie=%#x max_len=%d)" % (
            self.reason, self.table_id, self.cookie, self.max_len)


class Result:
    __slots__ = ("actions", "copies", "cacheable", "flow_ids", "cache_ids", "packet_ins",
                 "megaflow")

    def __init__(self):
        self.actions = []
        self.copies = []
        self.cacheable = True
        self.flow_ids = []
        self.cache_ids = []
        self.packet_ins = []
        self.megaflow = None

    def __repr__(self):
        return "Result(actions=%r copies=%r cacheable=%r flows=%r cache_ids=%r pins=%r mf=%r)" % (
            self.actions, self.copies, self.cacheable, self.flow_ids, self.cache_ids,
            self.packet_ins, self.megaflow)


def select_hash(key):
    ident = tuple((f, key[f]) for f in SELECT_HASH_FIELDS if f in key)
    return zlib.crc32(repr(ident).encode())


class _Run:
    """The state of one packet going through the pipeline."""

    def __init__(self, pipeline, in_port, key, length, now, count):
        self.p = pipeline
        self.in_port = in_port
        self.key = dict(key)
        self.key["in_port"] = in_port
        self.metadata = 0
        self.length = length
        self.now = now
        self.count = count
        self.res = Result()
        self.entry = None  # the flow entry whose instructions are running
        self.buckets_run = 0  # over all groups: at most MAX_GROUP_COPIES
        self.group_live = {}  # group id -> has a live bucket (once per packet)
        self.wc = {}  # megaflow wildcards: field -> the bits the lookups looked at
        self.grouped = False  # a group ran: no megaflow
        self.ended = False  # kp_lb took the packet
        # The fields the packet came with (vlan_vid: lookups see 0 when untagged).
        self.orig_fields = frozenset(self.key) | {"vlan_vid"}

    def megaflow(self):
        """{field: mask} for the megaflow entry, or None (see the module docstring)."""
        if self.grouped or not self.orig_fields <= MASKABLE:
            return None
        masks = {"in_port": IN_PORT_MASK}
        for name, mask in self.wc.items():
            if name in self.orig_fields:  # absent ones: the present bits decided
                masks[name] = masks.get(name, 0) | mask
        return masks

    # -- key bookkeeping ----------------------------------------------------------

    def kv(self):
        kv = {}
        for name, value in self.key.items():
            try:
                kv[name] = to_int(name, value)
            except KeyError:
                pass
        kv.setdefault("vlan_vid", 0)
        kv["metadata"] = self.metadata
        return kv

    def emit(self, action):
        self.res.actions.append(action)

    # -- actions ------------------------------------------------------------------

    def run_actions(self, actions, restore_groups=True):
        for a in actions:
            kind = a[0]
            if kind == "output":
                self.output(a[1], a[2])
            elif kind == "group":
                self.group(a[1], restore_groups, 0)
            elif kind == "set_field":
                name, value = a[1], a[2]
                if name in self.key:
                    self.key[name] = value
                    self.emit(a)
            elif kind == "push_vlan":
                if "vlan_vid" in self.key:
                    self.key["vlan_vid"] = self.key["vlan_vid"]  # the new tag copies the old
                else:
                    self.key["vlan_vid"] = ofp.OFPVID_PRESENT
                    self.key["vlan_pcp"] = 0
                self.emit(a)
            elif kind == "pop_vlan":
                if "vlan_vid" in self.key:
                    del self.key["vlan_vid"]
                    self.key.pop("vlan_pcp", None)
                    self.emit(a)
            elif kind == "dec_ttl":
                self.emit(a)
            elif kind == "kp_lb":
                # The load balancer takes the packet and sends it through the tables
                # again, translated: its way ends here (compile_instructions keeps
                # anything from following it).
                self.emit(a)
                self.ended = True
                return
            else:  # compile_actions never produces anything else
                raise ValueError("unknown pipeline action %r" % (a,))

    def output(self, port, max_len):
        ports = self.p.ports
        if port == ofp.OFPP_CONTROLLER:
            self.res.cacheable = False
            e = self.entry
            reason = ofp.OFPR_NO_MATCH if e is not None and e.is_table_miss() else ofp.OFPR_ACTION
            self.res.packet_ins.append(PacketIn(
                reason, e.table_id if e else 0xFF, e.cookie if e else 0xFFFFFFFFFFFFFFFF,
                max_len, self.in_port, self.metadata,
                [a for a in self.res.actions if a[0] != "output"]))
        elif port == ofp.OFPP_TABLE:
            self.res.cacheable = False
            self.tables(0)
        elif port == ofp.OFPP_IN_PORT:
            if self.in_port in ports:
                self.emit(("output", self.in_port))
        elif port in (ofp.OFPP_FLOOD, ofp.OFPP_ALL):
            for p in ports.flood(self.in_port):
                self.emit(("output", p))
        elif (port != self.in_port or self.key.get(LB_LOOPBACK)) and ports.can_output(port):
            # (a kp_lb hairpin goes back to its sender: fastpath_ref.F_LB_LOOPBACK)
            self.emit(("output", port))

    def group(self, group_id, restore, depth):
        self.grouped = True
        group = self.p.groups.get(group_id)
        if group is None or depth >= MAX_CHAIN_DEPTH:
            return
        if self.count:
            group.packet_count += 1
            group.byte_count += self.length
        if group.type == ofp.OFPGT_ALL:
            buckets = group.buckets
        elif group.type == ofp.OFPGT_SELECT:
            live = [b for b in group.buckets if b.weight > 0 and self.bucket_live(b)]
            buckets = []
            if live:
                h = select_hash(self.key) % sum(b.weight for b in live)
                for b in live:
                    if h < b.weight:
                        buckets = [b]
                        break
                    h -= b.weight
        elif group.type == ofp.OFPGT_INDIRECT:
            buckets = group.buckets[:1]
        else:  # fast failover: the first live bucket
            buckets = [b for b in group.buckets if self.bucket_live(b)][:1]
        for i, b in enumerate(buckets):
            if self.buckets_run >= MAX_GROUP_COPIES:
                return  # what is left of the packet's copies is dropped
            self.buckets_run += 1
            if self.count:
                b.packet_count += 1
                b.byte_count += self.length
            last = i == len(buckets) - 1
            self.bucket(b, restore or not last, depth)

    def bucket(self, b, restore, depth):
        if not restore:
            self.run_bucket_actions(b.actions, depth)
            return
        saved_key, saved_meta = dict(self.key), self.metadata
        mark = len(self.res.actions)
        self.run_bucket_actions(b.actions, depth)
        done = self.res.actions[mark:]
        if any(a[0] == "dec_ttl" for a in done):
            # Cannot be undone on the shared copy: run this bucket on its own copy.
            prefix = [a for a in self.res.actions[:mark] if a[0] != "output"]
            self.res.copies.append(prefix + done)
            del self.res.actions[mark:]
            self.res.cacheable = False
        else:
            self.undo(saved_key)
        self.key, self.metadata = saved_key, saved_meta

    def run_bucket_actions(self, actions, depth):
        for a in actions:
            if a[0] == "group":
                self.group(a[1], True, depth + 1)
            else:
                self.run_actions([a])

    def undo(self, saved):
        """Emit actions that turn the packet back into `saved` (its key before)."""
        had, has = "vlan_vid" in saved, "vlan_vid" in self.key
        if has and not had:
            self.emit(("pop_vlan",))
        elif had and not has:
            self.emit(("push_vlan", 0x8100))
            self.emit(("set_field", "vlan_vid", saved["vlan_vid"]))
            if "vlan_pcp" in saved:
                self.emit(("set_field", "vlan_pcp", saved["vlan_pcp"]))
        for name, value in saved.items():
            if name != "in_port" and self.key.get(name, value) != value:
                self.emit(("set_field", name, value))

    def bucket_live(self, b, depth=0):
        if b.watch_port != ofp.OFPP_ANY and not self.p.ports.is_live(b.watch_port):
            return False
        if b.watch_group != ofp.OFPG_ANY:
            return self._group_live(b.watch_group, depth + 1)
        return True

    def _group_live(self, group_id, depth):
        """Has the group a live bucket?  Each group is asked once per packet, and a
        group met again while it is being asked (a loop) or past MAX_CHAIN_DEPTH is
        not live."""
        live = self.group_live.get(group_id)
        if live is None:
            self.group_live[group_id] = False
            g = self.p.groups.get(group_id)
            live = g is not None and depth < MAX_CHAIN_DEPTH and \
                any(self.bucket_live(x, depth) for x in g.buckets)
            self.group_live[group_id] = live
        return live

    # -- tables -------------------------------------------------------------------

    def tables(self, table_id):
        action_set = {}
        tables = self.p.tables.tables
        while True:
            table = tables[table_id]
            entry = table.lookup(self.kv(), self.wc)
            if self.count:
                table.lookup_count += 1
            if entry is None:
                # table miss without a table-miss entry: drop (action set too)
                self.res.cache_ids.append(self.p.tables.miss_ids[table_id])
                return
            if self.count:
                table.matched_count += 1
                entry.count(self.length, self.now)
            self.res.flow_ids.append(entry.id)
            self.res.cache_ids.append(entry.id)
            self.entry = entry
            ins = entry.instructions
            if ins.apply:
                self.run_actions(ins.apply)
                if self.ended:
                    return
            if ins.clear:
                action_set.clear()
            if ins.write:
                write_to_action_set(action_set, ins.write)
            if ins.metadata is not None:
                value, mask = ins.metadata
                self.metadata = (self.metadata & ~mask) | value
            if ins.goto is None:
                self.run_actions(action_set_in_order(action_set), restore_groups=False)
                return
            table_id = ins.goto


class Pipeline:
    def __init__(self, tables, groups, ports):
        self.tables = tables
        self.groups = groups
        self.ports = ports

    def run(self, in_port, key, length, now, count=True):
        """A packet's way through the tables (see the module docstring)."""
        r = _Run(self, in_port, key or {}, length, now, count)
        r.tables(0)
        res = r.res
        if len(res.cache_ids) > MAX_CACHED_FLOWS or res.copies:
            res.cacheable = False
        if res.cacheable:
            res.megaflow = r.megaflow()
        return res

    def packet_out(self, in_port, key, actions, length, now):
        """A packet-out's actions (OFPP_TABLE runs the tables); never cacheable."""
        r = _Run(self, in_port, key or {}, length, now, True)
        r.run_actions(actions)
        r.res.cacheable = False
        return r.res
