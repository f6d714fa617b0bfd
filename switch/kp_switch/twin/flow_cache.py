"""The exact-match flow cache and its megaflow tier: the twin of csrc/flow_cache.c and
megaflow.c (the same slots, hashes, evictions and epochs).

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).

(Over 500 lines: the twin of two C files whose tiers share one insert path, one set of
invalidation epochs and one reclaim of pooled programs and addresses.)
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kp_proto.session_hash import session_hash as _session_hash
from ..keyed_hash import secret_hash

from .flow_key import (ADDR_POOL, AGE_LIMIT, Action, CACHE_IDLE_MS, F_IPV4, F_IPV6, F_SCTP, F_TCP,
                       F_UDP, KEY_SIZE, MAX_BUCKETS, MAX_FLOW_IDS, MAX_IDS_PER_ENTRY,
                       MAX_IDS_PER_INSERT, MAX_OPS, MF_BUCKETS, MF_SUBTABLES, MF_SWEEP_BUCKETS,
                       MF_WAYS, PROG_POOL, RECLAIM_BUCKETS, WAYS, _CACHEABLE, _CKEY, _KEY)
from .parse import _ipv4, _ipv6, _mac
from .actions import _IPV4_FIELDS, _IPV6_FIELDS, _MAC_FIELDS, compile_actions


def _cache_key(blob: bytes) -> Tuple[bytes, Optional[bytes], bool]:
    """(the compact key with IPv6 addresses 0, the 32 bytes of IPv6 source and
    destination or None, whether the blob is cacheable).  Cacheable: the compact key
    (plus the IPv6 addresses) says everything the blob says, and the packet is not ARP
    or neighbour discovery (the controller handles those; they take the slow path)."""
    (in_port, present, eth_dst, eth_src, eth_type, vid, pcp, proto, dscp, ecn, tcp_flags,
     pad, flabel, tp_src, tp_dst, nw_src, nw_dst, nd_target, sha, tha) = _KEY.unpack(blob)
    v6 = present & F_IPV6
    ck = _CKEY.pack(in_port & 0xFFFF, present & 0xFFFF, eth_dst, eth_src, eth_type,
                    (vid & 0x1FFF) | (pcp & 7) << 13, proto, (dscp & 63) << 2 | (ecn & 3),
                    tcp_flags, tp_src, tp_dst, flabel,
                    0 if v6 else int.from_bytes(nw_src[:4], "little"),
                    0 if v6 else int.from_bytes(nw_dst[:4], "little"))
    ok = (in_port <= 0xFFFF and not present & ~_CACHEABLE and vid <= 0x1FFF and pcp <= 7
          and dscp <= 63 and ecn <= 3 and not pad and not any(nd_target)
          and not any(sha) and not any(tha)
          and (bool(v6) or not any(nw_src[4:]) and not any(nw_dst[4:])))
    return ck, (nw_src + nw_dst) if v6 else None, ok


def _ckey_hash(ck: bytes, v6: Optional[bytes]) -> int:
    words = struct.unpack("<5Q", ck)
    tail = struct.unpack("<4Q", v6) if v6 is not None else words[4:]
    return secret_hash(words[:4] + tail)


def key_hash(blob: bytes) -> int:
    """The hash of the compact key's first four 64-bit little-endian words, then its
    fifth or, for IPv6, the four words of the source and destination addresses
    (SipHash-1-3 under the process secret, keyed_hash; low 32 bits)."""
    ck, v6, _ = _cache_key(blob)
    return _ckey_hash(ck, v6)


def session_hash(blob: bytes, basis: int) -> int:
    """Open vSwitch's symmetric_l3l4+udp hash of the key's 5-tuple: the C twin's
    definition is kp_proto.session_hash, which kp_app's model uses too."""
    (_, present, _, _, _, _, _, proto, _, _, _, _, _, tp_src, tp_dst, nw_src, nw_dst,
     *_rest) = _KEY.unpack(blob)
    if present & F_IPV4:
        src, dst = ipaddress.IPv4Address(nw_src[:4]), ipaddress.IPv4Address(nw_dst[:4])
    elif present & F_IPV6:
        src, dst = ipaddress.IPv6Address(nw_src), ipaddress.IPv6Address(nw_dst)
    else:
        raise ValueError("session_hash: not an IPv4 or IPv6 key")
    ported = bool(present & (F_TCP | F_UDP | F_SCTP))  # a later fragment's key has none
    return _session_hash(proto, src, tp_src, dst, tp_dst, basis, fragment=not ported)


def _is_pow2(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_BUCKETS \
        and n & (n - 1) == 0


def _check_ids(flow_ids: Sequence[int]) -> Tuple[int, ...]:
    ids = tuple(flow_ids)
    if len(ids) > MAX_IDS_PER_INSERT:
        raise ValueError("at most %d flow ids" % MAX_IDS_PER_INSERT)
    for i in ids:
        if not isinstance(i, int) or not 0 <= i < MAX_FLOW_IDS:
            raise ValueError("flow id out of range: %r" % (i,))
    return ids


class FlowCache:
    """The exact-match flow cache (see csrc/flow_cache.h for the rationale).

    Buckets of WAYS slots; a key has two candidate buckets (``buckets_of``): lookups
    probe the first then the second, inserts take the key's own slot, else the first
    free or dead way of the first bucket then of the second, else evict the least
    recently used of both buckets' slots.  A slot is (hash, last_used_ms, program, epoch) plus the
    full key and the flow ids.  Programs (action lists) are interned in a pool of
    PROG_POOL shared, reference-counted entries, and so are the IPv6 addresses of
    cached keys (ADDR_POOL).  Keys that are not cacheable (``_cache_key``) are never
    cached: a lookup is a miss, an insert a failure.  Invalidation is by epochs: a slot
    is live while its insert epoch is not older than the global invalidation epoch
    and the invalidation epoch of each of its flow ids.

    Epochs are 64-bit (never wrap); an exact slot keeps the low 32 bits of its insert
    epoch (the bucket line has no room for more) and its full epoch is the current
    one minus the 32-bit distance.  That is exact while a slot is younger than 2^32
    invalidations, which the age sweep guarantees: every invalidation looks at one
    bucket (``age_cursor``) and drops the slots AGE_LIMIT (2^31) or more
    invalidations old, so a full round of the table takes at most MAX_BUCKETS (2^20)
    invalidations.  Dropping a slot is always safe (counted as invalidated).

    Below the exact slots, the megaflow tier (``_mf_*``, csrc/megaflow.h): entries
    (mask, masked key) -> program and flow ids, one subtable per distinct mask
    (tuple-space search), in a shared table of MF_BUCKETS buckets of MF_WAYS slots.
    An exact miss probes the subtables in ``mf_order`` (ranked by hits: a hit moves
    its subtable one place up when it has more hits than the one before); a hit also
    inserts the exact key into the exact tier.  Megaflow entries keep their full
    64-bit insert epoch, and are live under the same rule as exact slots.
    """

    def __init__(self, buckets: int) -> None:
        if not _is_pow2(buckets):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (buckets,))
        self.buckets = buckets
        n = buckets * WAYS
        self.hash = [0] * n
        self.used = [0] * n
        self.prog = [0] * n          # 0: empty slot
        self.epoch = [0] * n
        self.key: List[bytes] = [b""] * n
        self.ids: List[Tuple[int, ...]] = [()] * n
        self.cur_epoch = 0           # 64-bit, never wraps
        self.all_inval = 0
        self.flow_inval: Dict[int, int] = {}
        self.age_cursor = 0
        # Megaflows: slots of MF_BUCKETS x MF_WAYS, subtables by index.
        m = MF_BUCKETS * MF_WAYS
        self.mf_hash = [0] * m
        self.mf_used = [0] * m
        self.mf_prog = [0] * m        # 0: empty slot
        self.mf_sub = [0] * m
        self.mf_key: List[Tuple[int, ...]] = [()] * m
        self.mf_epoch = [0] * m
        self.mf_ids: List[Tuple[int, ...]] = [()] * m
        self.sub_mask: List[Optional[Tuple[int, ...]]] = [None] * MF_SUBTABLES
        self.sub_hits = [0] * MF_SUBTABLES
        self.sub_n = [0] * MF_SUBTABLES
        self.mf_order: List[int] = []  # subtables in probe order
        self.mf_cursor = 0
        # Program pool: index 1..PROG_POOL; free list pops the lowest index first.
        self.progs: Dict[int, Tuple[Any, ...]] = {}
        self.prog_ref: Dict[int, int] = {}
        self.prog_index: Dict[Tuple[Any, ...], int] = {}
        self.free_progs = list(range(PROG_POOL, 0, -1))
        # Address pool: interned IPv6 address -> reference count (ADDR_POOL at most).
        self.addr_ref: Dict[bytes, int] = {}
        self.reclaim_cursor = 0
        self.st = dict(hits=0, misses=0, inserts=0, insert_failures=0, evictions=0,
                       expired=0, invalidated=0, entries=0, mf_hits=0, mf_inserts=0,
                       mf_insert_failures=0, mf_entries=0)

    # -- helpers
    def _slot_epoch(self, s: int) -> int:
        """Slot s's full insert epoch from its low 32 bits (exact below 2^32 old)."""
        return self.cur_epoch - ((self.cur_epoch - self.epoch[s]) & 0xFFFFFFFF)

    def _ids_live(self, epoch: int, ids: Tuple[int, ...]) -> bool:
        if epoch < self.all_inval:
            return False
        return all(epoch >= self.flow_inval.get(i, 0) for i in ids)

    def _live(self, s: int) -> bool:
        return self._ids_live(self._slot_epoch(s), self.ids[s])

    def _expired(self, s: int, now: int) -> bool:
        return _sdiff(now, self.used[s]) > CACHE_IDLE_MS

    def _unref_prog(self, pi: int) -> None:
        self.prog_ref[pi] -= 1
        if self.prog_ref[pi] == 0:
            del self.prog_index[self.progs.pop(pi)]
            del self.prog_ref[pi]
            self.free_progs.append(pi)

    def _unref_addr(self, a: bytes) -> None:
        self.addr_ref[a] -= 1
        if self.addr_ref[a] == 0:
            del self.addr_ref[a]

    def _intern_addr(self, a: bytes, now: int) -> bool:
        """Interns a (reference count 0 if new); False if the pool is full of live ones."""
        if a not in self.addr_ref:
            if len(self.addr_ref) == ADDR_POOL:
                self._reclaim(now)
            if len(self.addr_ref) == ADDR_POOL:
                return False
            self.addr_ref[a] = 0
        return True

    def _free(self, s: int) -> None:
        pi = self.prog[s]
        self.prog[s] = 0
        self.st["entries"] -= 1
        self._unref_prog(pi)
        _, v6, _ = _cache_key(self.key[s])
        if v6 is not None:
            self._unref_addr(v6[:16])
            self._unref_addr(v6[16:])

    def _reap(self, s: int, now: int) -> bool:
        """Free slot s if it is dead (expired or invalidated); True if now free."""
        if not self.prog[s]:
            return True
        if self._expired(s, now):
            self.st["expired"] += 1
        elif not self._live(s):
            self.st["invalidated"] += 1
        else:
            return False
        self._free(s)
        return True

    def _intern(self, prog: Tuple[Any, ...], now: int) -> int:
        pi = self.prog_index.get(prog)
        if pi is None:
            if not self.free_progs:
                self._reclaim(now)
            if not self.free_progs:
                return 0
            pi = self.free_progs.pop()
            self.progs[pi] = prog
            self.prog_index[prog] = pi
            self.prog_ref[pi] = 0
        return pi

    def _reclaim(self, now: int) -> None:
        for _ in range(min(RECLAIM_BUCKETS, self.buckets)):
            b = self.reclaim_cursor
            self.reclaim_cursor = (b + 1) & (self.buckets - 1)
            for w in range(WAYS):
                self._reap(b * WAYS + w, now)
        self._mf_sweep(RECLAIM_BUCKETS, now)

    def bucket_of(self, blob: bytes) -> int:
        return key_hash(blob) & (self.buckets - 1)

    def buckets_of(self, blob: bytes) -> Tuple[int, int]:
        h = key_hash(blob)
        return h & (self.buckets - 1), _alt_bucket(h, self.buckets - 1)

    def _bases(self, h: int) -> List[int]:
        """The first slot of each of the key's buckets: the first bucket, then the
        second unless it is the same (a one-bucket cache)."""
        mask = self.buckets - 1
        b1, b2 = h & mask, _alt_bucket(h, mask)
        return [b1 * WAYS] if b1 == b2 else [b1 * WAYS, b2 * WAYS]

    # -- the API the datapath uses
    def lookup(self, blob: bytes, now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        """The exact tier, then the megaflow tier; counts one of hits, mf_hits, misses."""
        ck, v6, ok = _cache_key(blob)
        if not ok:
            self.st["misses"] += 1
            return None
        h = _ckey_hash(ck, v6)
        found = self._exact_lookup(blob, h, now)
        if found is not None:
            self.st["hits"] += 1
            return found
        found = self._mf_lookup(blob, ck, h, now)
        if found is not None:
            self.st["mf_hits"] += 1
            return found
        self.st["misses"] += 1
        return None

    def _exact_lookup(self, blob: bytes, h: int,
                      now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        for base in self._bases(h):              # first bucket, then second
            for s in range(base, base + WAYS):
                if self.prog[s] and self.hash[s] == h and self.key[s] == blob:
                    # A key is in at most one slot: a dead one is a miss.
                    if self._reap(s, now):
                        return None
                    self.used[s] = now
                    return self.progs[self.prog[s]], self.ids[s]
        return None

    def insert(self, blob: bytes, prog: Tuple[Any, ...], flow_ids: Sequence[int],
               now: int, mask: Optional[Tuple[int, ...]] = None) -> bool:
        """The exact entry (True if it went in) and, with `mask` (from ``_mf_mask``),
        the megaflow entry (mf_inserts or mf_insert_failures)."""
        if len(blob) != KEY_SIZE:
            raise ValueError("key blob must be %d bytes" % KEY_SIZE)
        ids = _check_ids(flow_ids)
        ck, v6, ok = _cache_key(blob)
        if not ok or len(prog) > MAX_OPS or len(ids) > MAX_IDS_PER_ENTRY:
            self.st["insert_failures"] += 1
            if mask is not None:
                self.st["mf_insert_failures"] += 1
            return False
        h = _ckey_hash(ck, v6)
        pi = self._intern(prog, now)
        if not pi:
            self.st["insert_failures"] += 1
            if mask is not None:
                self.st["mf_insert_failures"] += 1
            return False
        self.prog_ref[pi] += 1                  # held until the inserts below are done
        done = self._exact_place(blob, v6, h, pi, ids, now)
        if mask is not None:
            self._mf_insert(blob, ck, mask, pi, ids, now)
        self._unref_prog(pi)
        return done

    def _exact_place(self, blob: bytes, v6: Optional[bytes], h: int, pi: int,
                     ids: Tuple[int, ...], now: int) -> bool:
        """Puts the cacheable key in a slot with program pi (which the caller holds)."""
        self.prog_ref[pi] += 1                  # the slot's reference
        if v6 is not None:
            src, dst = v6[:16], v6[16:]
            src_ok = self._intern_addr(src, now)
            if src_ok:
                self.addr_ref[src] += 1
            if not src_ok or not self._intern_addr(dst, now):
                if src_ok:
                    self._unref_addr(src)
                self._unref_prog(pi)
                self.st["insert_failures"] += 1
                return False
            self.addr_ref[dst] += 1
        slots = [s for base in self._bases(h) for s in range(base, base + WAYS)]
        slot = -1
        for s in slots:                          # the same key (either bucket): in place
            if self.prog[s] and self.hash[s] == h and self.key[s] == blob:
                self._free(s)
                slot = s
                break
        if slot < 0:
            for s in slots:                      # first free, expired or dead way, first
                if self._reap(s, now):           # bucket first
                    slot = s
                    break
        if slot < 0:                             # all live: evict the least recently used
            slot = slots[0]                      # of both buckets (ties: the earlier)
            for s in slots[1:]:
                if _sdiff(now, self.used[s]) > _sdiff(now, self.used[slot]):
                    slot = s
            self.st["evictions"] += 1
            self._free(slot)
        self.hash[slot], self.used[slot], self.prog[slot] = h, now, pi
        self.epoch[slot] = self.cur_epoch & 0xFFFFFFFF
        self.key[slot], self.ids[slot] = blob, ids
        self.st["inserts"] += 1
        self.st["entries"] += 1
        return True

    def invalidate_flow(self, flow_id: int) -> None:
        _check_ids([flow_id])
        self.cur_epoch += 1
        self.flow_inval[flow_id] = self.cur_epoch
        self._age_sweep(1)

    def invalidate_all(self) -> None:
        self.cur_epoch += 1
        self.all_inval = self.cur_epoch
        self._age_sweep(1)

    def _age_sweep(self, n: int) -> None:
        """Drop the slots of n buckets (from age_cursor) AGE_LIMIT or more epochs old."""
        for _ in range(n):
            b = self.age_cursor
            self.age_cursor = (b + 1) & (self.buckets - 1)
            for s in range(b * WAYS, b * WAYS + WAYS):
                if self.prog[s] and (self.cur_epoch - self.epoch[s]) & 0xFFFFFFFF >= AGE_LIMIT:
                    self.st["invalidated"] += 1
                    self._free(s)

    def advance_epoch(self, n: int) -> None:
        """Test hook: the epoch as after n more invalidations of no entry (the age sweep
        then covers the whole table, as n real ones would have by then)."""
        if not isinstance(n, int) or not 0 <= n < 1 << 62:
            raise ValueError("epoch step out of range: %r" % (n,))
        self.cur_epoch += n
        self._age_sweep(self.buckets)

    # -- megaflows
    def _mf_free(self, s: int) -> None:
        pi, sub = self.mf_prog[s], self.mf_sub[s]
        self.mf_prog[s] = 0
        self.st["mf_entries"] -= 1
        self._unref_prog(pi)
        self.sub_n[sub] -= 1
        if not self.sub_n[sub]:                  # the last entry: the subtable goes
            self.sub_mask[sub] = None
            self.mf_order.remove(sub)

    def _mf_reap(self, s: int, now: int) -> bool:
        if not self.mf_prog[s]:
            return True
        if _sdiff(now, self.mf_used[s]) > CACHE_IDLE_MS:
            self.st["expired"] += 1
        elif not self._ids_live(self.mf_epoch[s], self.mf_ids[s]):
            self.st["invalidated"] += 1
        else:
            return False
        self._mf_free(s)
        return True

    def _mf_sweep(self, n: int, now: int) -> None:
        for _ in range(n):
            b = self.mf_cursor
            self.mf_cursor = (b + 1) & (MF_BUCKETS - 1)
            for s in range(b * MF_WAYS, b * MF_WAYS + MF_WAYS):
                self._mf_reap(s, now)

    def _mf_lookup(self, blob: bytes, ck: bytes, h: int,
                   now: int) -> Optional[Tuple[Tuple[Any, ...], Tuple[int, ...]]]:
        """The first live megaflow entry matching the key, probing the subtables in
        mf_order; a hit also puts the exact key in the exact tier.  Dead entries are
        skipped, not reaped (the sweeps and inserts reap them), so the probe order never
        changes under the probe."""
        key = _mf_words(blob, ck)
        for pos, sub in enumerate(self.mf_order):
            mask = self.sub_mask[sub]
            mk = tuple(k & m for k, m in zip(key, mask))
            mh = _mf_hash(sub, mk)
            base = (mh & (MF_BUCKETS - 1)) * MF_WAYS
            for s in range(base, base + MF_WAYS):
                if not (self.mf_prog[s] and self.mf_hash[s] == mh and self.mf_sub[s] == sub
                        and self.mf_key[s] == mk):
                    continue
                if _sdiff(now, self.mf_used[s]) > CACHE_IDLE_MS or \
                        not self._ids_live(self.mf_epoch[s], self.mf_ids[s]):
                    break                        # dead: a later subtable may match
                self.mf_used[s] = now
                self.sub_hits[sub] += 1
                if pos and self.sub_hits[sub] > self.sub_hits[self.mf_order[pos - 1]]:
                    self.mf_order[pos - 1], self.mf_order[pos] = sub, self.mf_order[pos - 1]
                pi, ids = self.mf_prog[s], self.mf_ids[s]
                _, v6, _ = _cache_key(blob)
                prog = self.progs[pi]
                self.prog_ref[pi] += 1           # held while the exact copy goes in
                self._exact_place(blob, v6, h, pi, ids, now)
                self._unref_prog(pi)
                return prog, ids
        return None

    def _mf_insert(self, blob: bytes, ck: bytes, mask: Tuple[int, ...], pi: int,
                   ids: Tuple[int, ...], now: int) -> bool:
        """The megaflow entry (mask, key & mask) -> program pi (held by the caller)."""
        self._mf_sweep(MF_SWEEP_BUCKETS, now)
        sub = next((i for i in self.mf_order if self.sub_mask[i] == mask), -1)
        if sub < 0:
            free = [i for i in range(MF_SUBTABLES) if self.sub_mask[i] is None]
            if not free:
                self.st["mf_insert_failures"] += 1
                return False
            sub = free[0]
            self.sub_mask[sub], self.sub_hits[sub], self.sub_n[sub] = mask, 0, 0
            self.mf_order.append(sub)
        self.sub_n[sub] += 1                     # held: the frees below cannot drop it
        self.prog_ref[pi] += 1                   # the slot's reference
        mk = tuple(k & m for k, m in zip(_mf_words(blob, ck), mask))
        mh = _mf_hash(sub, mk)
        base = (mh & (MF_BUCKETS - 1)) * MF_WAYS
        slots = range(base, base + MF_WAYS)
        slot = -1
        for s in slots:                          # the same entry: replaced in place
            if self.mf_prog[s] and self.mf_hash[s] == mh and self.mf_sub[s] == sub \
                    and self.mf_key[s] == mk:
                self._mf_free(s)
                slot = s
                break
        if slot < 0:
            for s in slots:                      # the first free or dead way
                if self._mf_reap(s, now):
                    slot = s
                    break
        if slot < 0:                             # all live: evict the least recently used
            slot = base                          # (ties: the lower way)
            for s in slots[1:]:
                if _sdiff(now, self.mf_used[s]) > _sdiff(now, self.mf_used[slot]):
                    slot = s
            self.st["evictions"] += 1
            self._mf_free(slot)
        self.mf_hash[slot], self.mf_used[slot], self.mf_prog[slot] = mh, now, pi
        self.mf_sub[slot], self.mf_key[slot] = sub, mk
        self.mf_epoch[slot], self.mf_ids[slot] = self.cur_epoch, ids
        self.st["mf_inserts"] += 1
        self.st["mf_entries"] += 1
        return True

    def stats(self) -> Dict[str, int]:
        d = dict(self.st)
        d["buckets"], d["ways"] = self.buckets, WAYS
        d["mf_subtables"] = len(self.mf_order)
        return d


def _alt_bucket(h: int, mask: int) -> int:
    """A key's second bucket (csrc/flow_cache.h cache_alt_bucket): the first bucket XOR
    the hash's upper half rotated into place with bit 0 set (never the first bucket
    unless there is only one)."""
    return (h & mask) ^ (((h >> 16) | (h << 16) | 1) & 0xFFFFFFFF & mask)


def _sdiff(a: int, b: int) -> int:
    """a - b on a 32-bit wrapping clock, as a signed number."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d & 0x80000000 else d


def _mf_words(blob: bytes, ck: bytes) -> Tuple[int, ...]:
    """The megaflow form of a cacheable key (struct mf_key): the compact key's first
    four words, then the 16 bytes of nw_src and of nw_dst as the blob has them (an
    IPv4 address in the first four, the rest 0), eight 64-bit little-endian words."""
    return struct.unpack("<4Q", ck[:32]) + struct.unpack("<4Q", blob[40:72])


def _mf_mask(mask_blob: bytes) -> Tuple[int, ...]:
    """A megaflow mask (``mask_blob``: a struct flow_key whose fields hold the bits the
    classification looked at) in megaflow form; `present` is always matched whole
    (which headers a packet has is part of every answer).  ValueError for a mask no
    cacheable key can use: wrong size, bits beyond a field's width, a non-zero pad,
    or neighbour discovery / ARP-only fields."""
    mask_blob = bytes(mask_blob)
    if len(mask_blob) != KEY_SIZE:
        raise ValueError("mask_blob must be %d bytes" % KEY_SIZE)
    (in_port, _present, eth_dst, eth_src, eth_type, vid, pcp, proto, dscp, ecn, tcp_flags,
     pad, flabel, tp_src, tp_dst, nw_src, nw_dst, nd_target, sha, tha) = _KEY.unpack(mask_blob)
    if vid > 0x1FFF or pcp > 7 or dscp > 63 or ecn > 3 or pad or any(nd_target) \
            or any(sha) or any(tha):
        raise ValueError("not a megaflow mask (a field's bits out of range or one that "
                         "no cacheable packet has)")
    ck = _CKEY.pack(in_port & 0xFFFF, 0xFFFF, eth_dst, eth_src, eth_type, vid | pcp << 13,
                    proto, dscp << 2 | ecn, tcp_flags, tp_src, tp_dst, flabel, 0, 0)
    return struct.unpack("<4Q", ck[:32]) + struct.unpack("<4Q", nw_src + nw_dst)


def _mf_hash(sub: int, words: Tuple[int, ...]) -> int:
    """A masked key's hash in subtable `sub` (csrc/megaflow.c mf_hash)."""
    return secret_hash((sub,) + tuple(words))


class CacheForTest:
    """Test-only view of FlowCache with explicit time (mirrors _fastpath._CacheForTest)."""

    def __init__(self, buckets: int) -> None:
        self._c = FlowCache(buckets)

    def insert(self, key_blob: bytes, actions: list, flow_ids: List[int],
               now_ms: int, mask_blob: Optional[bytes] = None) -> bool:
        """The exact entry (True if it went in) and, with mask_blob, the megaflow one."""
        mask = None if mask_blob is None else _mf_mask(mask_blob)
        return self._c.insert(bytes(key_blob), tuple(compile_actions(actions)), flow_ids,
                              now_ms & 0xFFFFFFFF, mask)

    def advance_epoch(self, n: int) -> None:
        """Test hook: as after n invalidations of no entry (see FlowCache.advance_epoch)."""
        self._c.advance_epoch(n)

    def lookup(self, key_blob: bytes, now_ms: int) -> Optional[Tuple[list, List[int]]]:
        r = self._c.lookup(bytes(key_blob), now_ms & 0xFFFFFFFF)
        if r is None:
            return None
        return [_uncompile(a) for a in r[0]], list(r[1])

    def invalidate_flow(self, flow_id: int) -> None:
        self._c.invalidate_flow(flow_id)

    def invalidate_all(self) -> None:
        self._c.invalidate_all()

    def bucket_of(self, key_blob: bytes) -> int:
        return self._c.bucket_of(bytes(key_blob))

    def buckets_of(self, key_blob: bytes) -> Tuple[int, int]:
        return self._c.buckets_of(bytes(key_blob))

    def stats(self) -> Dict[str, int]:
        return self._c.stats()


_CacheForTest = CacheForTest


def _uncompile(a: Action) -> Action:
    if a[0] != "set_field":
        return a
    name, v = a[1], a[2]
    if name in _MAC_FIELDS:
        return ("set_field", name, _mac(v))
    if name in _IPV4_FIELDS:
        return ("set_field", name, _ipv4(v))
    if name in _IPV6_FIELDS:
        return ("set_field", name, _ipv6(v))
    return a
