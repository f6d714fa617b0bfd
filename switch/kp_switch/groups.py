"""The OpenFlow group table: ALL, SELECT, INDIRECT and FAST_FAILOVER groups.

Pure Python, no I/O.  Buckets hold compiled pipeline actions (see actions.py) and the
Ryu bucket objects (for group-desc replies).  Counters count the packets the slow path
sent through a group; packets the cache forwards are counted on flows, not groups.
"""
from ryu.ofproto import ofproto_v1_3 as ofp

from .actions import compile_actions
from .errors import OFError

TYPES = (ofp.OFPGT_ALL, ofp.OFPGT_SELECT, ofp.OFPGT_INDIRECT, ofp.OFPGT_FF)


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
        return {a[1] for b in self.buckets for a in b.actions if a[0] == "group"}


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

    def _reaches(self, start, target, extra=None):
        """Does forwarding from group `start` reach group `target`? (`extra` overrides
        one group's chained set, for a group being modified.)"""
        seen, todo = set(), [start]
        while todo:
            g = todo.pop()
            if g == target:
                return True
            if g in seen:
                continue
            seen.add(g)
            if extra is not None and g == extra[0]:
                todo.extend(extra[1])
            elif g in self.groups:
                todo.extend(self.groups[g].chained())
        return False

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
            self.groups[gid] = group
            return [gid]
        if gm.command == ofp.OFPGC_MODIFY:
            if gid > ofp.OFPG_MAX:
                raise _gm_error(ofp.OFPGMFC_INVALID_GROUP, "group %#x" % gid)
            if gid not in self.groups:
                raise _gm_error(ofp.OFPGMFC_UNKNOWN_GROUP, "group %d" % gid)
            group = self._compile(gm, ctx, now)
            if any(self._reaches(c, gid, (gid, group.chained())) for c in group.chained()):
                raise _gm_error(ofp.OFPGMFC_LOOP, "group %d" % gid)
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
