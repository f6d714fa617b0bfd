"""The OpenFlow group table: ALL, SELECT, INDIRECT and FAST_FAILOVER groups.

Pure Python, no I/O.  Buckets hold compiled pipeline actions (see actions.py) and the
Ryu bucket objects (for group-desc replies).  Counters count the packets the slow path
sent through a group; packets the cache forwards are counted on flows, not groups.

What one packet may cost is bounded (issue #13: chained ALL groups multiplied a packet
as fan-out^depth while the agent held its lock).  A group-mod is refused when, with it,
a chain of groups (forwarding or fast-failover watch references) would be deeper than
MAX_CHAIN_DEPTH (OFPGMFC_CHAINING_UNSUPPORTED), when one packet could run more than
MAX_GROUP_COPIES buckets through a group (OFPGMFC_OUT_OF_BUCKETS), or when it would
close a loop (OFPGMFC_LOOP; a loop of watch references: OFPGMFC_BAD_WATCH).  The
pipeline stops at the same bounds when it runs a packet (several group actions in one
flow can still add up), so they hold whatever the tables say.
"""
from ryu.ofproto import ofproto_v1_3 as ofp

from .actions import compile_actions
from .errors import OFError

TYPES = (ofp.OFPGT_ALL, ofp.OFPGT_SELECT, ofp.OFPGT_INDIRECT, ofp.OFPGT_FF)
MAX_CHAIN_DEPTH = 8      # groups one packet can pass through in a row, the first included
MAX_GROUP_COPIES = 256   # buckets one packet can run, over all the groups it reaches


class Bucket:
    __slots__ = ("weight", "watch_port", "watch_group", "actions", "raw", "packet_count", "byte_count")

    def __init__(self, weight, watch_port, watch_group, actions, raw=None):
        self.weight = weight
        self.watch_port = watch_port
        self.watch_group = watch_group
        self.actions = actions
        self.raw = raw
        self.packet_count = self.byte_count = 0


class Group:
    __slots__ = ("group_id", "type", "buckets", "installed", "packet_count", "byte_count")

    def __init__(self, group_id, type_, buckets, now):
        self.group_id = group_id
        self.type = type_
        self.buckets = buckets
        self.installed = now
        self.packet_count = self.byte_count = 0

    def chained(self):
        """The groups this group's buckets forward to."""
        return {a[1] for b in self.buckets for a in b.actions if a[0] == "group"}

    def watched(self):
        """The groups whose liveness this group's buckets watch."""
        return {b.watch_group for b in self.buckets if b.watch_group != ofp.OFPG_ANY}

    def references(self):
        return self.chained() | self.watched()

    def worst_copies(self, copies_of):
        """The most buckets one packet can run through this group, given copies_of(gid)
        for the groups it forwards to: every bucket of an ALL group, one otherwise."""
        per_bucket = [1 + sum(copies_of(a[1]) for a in b.actions if a[0] == "group")
                      for b in self.buckets]
        if not per_bucket:
            return 0
        return sum(per_bucket) if self.type == ofp.OFPGT_ALL else max(per_bucket)


def _gm_error(code, text=""):
    return OFError(ofp.OFPET_GROUP_MOD_FAILED, code, text)


class GroupTable:
    def __init__(self, max_groups=4096, max_buckets=64):
        self.groups = {}
        self.max_groups = max_groups
        self.max_buckets = max_buckets

    def __contains__(self, group_id):
        return group_id in self.groups

    def get(self, group_id):
        return self.groups.get(group_id)

    def _compile(self, gm, ctx, now):
        if gm.type not in TYPES:
            raise _gm_error(ofp.OFPGMFC_BAD_TYPE, "type %d" % gm.type)
        if len(gm.buckets) > self.max_buckets:
            raise _gm_error(ofp.OFPGMFC_OUT_OF_BUCKETS)
        if gm.type == ofp.OFPGT_INDIRECT and len(gm.buckets) != 1:
            raise _gm_error(ofp.OFPGMFC_INVALID_GROUP, "indirect group needs one bucket")
        buckets = []
        for b in gm.buckets:
            if gm.type == ofp.OFPGT_FF:
                if b.watch_port == ofp.OFPP_ANY and b.watch_group == ofp.OFPG_ANY:
                    raise _gm_error(ofp.OFPGMFC_BAD_WATCH, "fast failover bucket watches nothing")
                if b.watch_port != ofp.OFPP_ANY and not ctx.port_exists(b.watch_port):
                    raise _gm_error(ofp.OFPGMFC_BAD_WATCH, "watch port %d" % b.watch_port)
                if b.watch_group != ofp.OFPG_ANY and b.watch_group not in self.groups:
                    raise _gm_error(ofp.OFPGMFC_BAD_WATCH, "watch group %d" % b.watch_group)
            if gm.type != ofp.OFPGT_SELECT and b.weight != 0:
                raise _gm_error(ofp.OFPGMFC_BAD_BUCKET, "weight on a non-select group")
            actions = compile_actions(b.actions, ctx)
            buckets.append(Bucket(b.weight, b.watch_port, b.watch_group, actions, b))
        return Group(gm.group_id, gm.type, buckets, now)

    def _reaches(self, start, target, new, edges):
        """Does group `start` reach group `target` along `edges` (Group -> ids), with
        `new` in place of the group of its id?"""
        seen, todo = set(), [start]
        while todo:
            g = todo.pop()
            if g == target:
                return True
            if g in seen:
                continue
            seen.add(g)
            group = new if g == new.group_id else self.groups.get(g)
            if group is not None:
                todo.extend(edges(group))
        return False

    def _check_bounds(self, new):
        """Refuse `new` (to be added or to replace the group of its id) when it, or a
        group that reaches it, would break MAX_CHAIN_DEPTH or MAX_GROUP_COPIES.  No
        loops: the caller checked."""
        def group(gid):
            return new if gid == new.group_id else self.groups.get(gid)

        depth, copies = {}, {}

        def depth_of(gid):
            if gid not in depth:
                g = group(gid)
                depth[gid] = 1 + max((depth_of(r) for r in g.references()), default=0) if g else 0
            return depth[gid]

        def copies_of(gid):
            if gid not in copies:
                g = group(gid)
                copies[gid] = g.worst_copies(copies_of) if g else 0
            return copies[gid]

        gid = new.group_id
        users = {}  # group id -> the groups that reference it
        for g in self.groups.values():
            if g.group_id != gid:
                for r in g.references():
                    users.setdefault(r, []).append(g.group_id)
        reached, todo = {gid}, [gid]
        while todo:
            for u in users.get(todo.pop(), ()):
                if u not in reached:
                    reached.add(u)
                    todo.append(u)
        for g in sorted(reached):
            if depth_of(g) > MAX_CHAIN_DEPTH:
                raise _gm_error(ofp.OFPGMFC_CHAINING_UNSUPPORTED, "group %d: a chain of %d groups, at most %d"
                                % (g, depth_of(g), MAX_CHAIN_DEPTH))
            if copies_of(g) > MAX_GROUP_COPIES:
                raise _gm_error(ofp.OFPGMFC_OUT_OF_BUCKETS, "group %d: up to %d buckets per packet, at most %d"
                                % (g, copies_of(g), MAX_GROUP_COPIES))

    def group_mod(self, gm, ctx, now):
        """Apply a group-mod (Ryu OFPGroupMod).  Returns the ids of the groups added,
        modified or deleted (the caller invalidates and removes flows as needed)."""
        gid = gm.group_id
        if gm.command == ofp.OFPGC_ADD:
            if gid > ofp.OFPG_MAX:
                raise _gm_error(ofp.OFPGMFC_INVALID_GROUP, "group %#x" % gid)
            if gid in self.groups:
                raise _gm_error(ofp.OFPGMFC_GROUP_EXISTS, "group %d" % gid)
            if len(self.groups) >= self.max_groups:
                raise _gm_error(ofp.OFPGMFC_OUT_OF_GROUPS)
            group = self._compile(gm, ctx, now)
            self._check_bounds(group)
            self.groups[gid] = group
            return [gid]
        if gm.command == ofp.OFPGC_MODIFY:
            if gid > ofp.OFPG_MAX:
                raise _gm_error(ofp.OFPGMFC_INVALID_GROUP, "group %#x" % gid)
            if gid not in self.groups:
                raise _gm_error(ofp.OFPGMFC_UNKNOWN_GROUP, "group %d" % gid)
            group = self._compile(gm, ctx, now)
            if any(self._reaches(c, gid, group, Group.chained) for c in group.chained()):
                raise _gm_error(ofp.OFPGMFC_LOOP, "group %d" % gid)
            if any(self._reaches(r, gid, group, Group.references) for r in group.references()):
                raise _gm_error(ofp.OFPGMFC_BAD_WATCH, "group %d: a loop of watched groups" % gid)
            self._check_bounds(group)
            old = self.groups[gid]
            group.installed = old.installed
            group.packet_count, group.byte_count = old.packet_count, old.byte_count
            self.groups[gid] = group
            return [gid]
        if gm.command == ofp.OFPGC_DELETE:
            if gid == ofp.OFPG_ALL:
                ids = list(self.groups)
                self.groups.clear()
                return ids
            if gid not in self.groups:
                return []  # deleting a group that does not exist is not an error
            users = [g.group_id for g in self.groups.values() if gid in g.chained()]
            if users:
                raise _gm_error(ofp.OFPGMFC_CHAINED_GROUP, "group %d is used by %s" % (gid, users))
            del self.groups[gid]
            return [gid]
        raise _gm_error(ofp.OFPGMFC_BAD_COMMAND, "command %d" % gm.command)

    def dependents(self, gids):
        """The given groups and every group that chains to one of them."""
        out = set(gids)
        changed = True
        while changed:
            changed = False
            for g in self.groups.values():
                if g.group_id not in out and g.chained() & out:
                    out.add(g.group_id)
                    changed = True
        return out
