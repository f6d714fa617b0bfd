"""The new-connection table: Maglev-style consistent hashing of flows onto pods.

Each pod walks the table in its own pseudo-random permutation and the pods take turns
claiming their next free slot until the table is full. So:

- every pod holds floor(n/N) or ceil(n/N) of the n slots (they claim one per round);
- removing a pod frees only its slots, and the others' walks change little, so only about
  1/N of the flows move;
- the pods are sorted first and the hashes are keyed, not salted per process, so every
  node and every restart builds the same table from the same configuration.

Maglev's usual walk (offset + j * skip) is poor on a power-of-2 table: two pods whose
skips share structure walk in lockstep, and removing one pod can then move 5-10 % of the
others' slots. A keyed 4-round Feistel permutation of the slot bits has no such pairs.

The fill runs in C (kp_app/csrc/maglev.c, kp_app._maglev) when it is built: a Service of
1,000 pods has 2^17 slots, about 4 s here and a few milliseconds there, and a pod change
waits for its table. This module is the specification the C code is tested against
(tests/unit/test_maglev_c.py) and the fill used without the extension.
"""
import array
import hashlib
import ipaddress
import weakref
from collections import Counter, OrderedDict
from typing import Callable, Iterable, Iterator, List, Sequence, Tuple, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _hash64(data: bytes, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "big")


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """A 64-bit finaliser (MurmurHash3's fmix64): cheap, well-spread round function."""
    x = ((x ^ (x >> 33)) * 0xFF51AFD7ED558CCD) & _M64
    x = ((x ^ (x >> 33)) * 0xC4CEB9FE1A85EC53) & _M64
    return x ^ (x >> 33)


try:
    from kp_app import _maglev
except ImportError:     # not built: the Python fill below
    _maglev = None


def walk_key(pod: Address) -> int:
    """The key of the pod's walk (64 bits, from its address)."""
    return _hash64(pod.packed, b"kp-maglev-walk")


def _walk(key: int, size: int) -> Iterator[int]:
    """A pod's walk: every slot of range(size) once, in an order keyed by its walk key.

    Each Feistel round's function is tabulated once per pod (a half-width index), so a
    step of the walk is four list lookups, about 5x faster than computing the rounds
    (2**20 slots, 10 pods: about 3 s, which the Ryu app spends in a thread of its own).
    """
    bits = size.bit_length() - 1
    half = (bits + 1) // 2
    mask = (1 << half) - 1
    r0, r1, r2, r3 = [[_mix(x ^ _mix(key + i)) & mask for x in range(mask + 1)]
                      for i in range(4)]
    for j in range(size):
        while True:  # an odd bit count gives a domain up to 2x the table: walk past
            left, right = j >> half, j & mask
            left, right = right, left ^ r0[right]
            left, right = right, left ^ r1[right]
            left, right = right, left ^ r2[right]
            left, right = right, left ^ r3[right]
            j = (left << half) | right
            if j < size:
                break
        yield j


def build_table(pods: Iterable[Address], size: int) -> List[int]:
    """Slot -> index into sorted(pods); an empty list when there are no pods.

    The table is built whole and returned; callers swap it in at once.
    """
    if size <= 0 or size & (size - 1):
        raise ValueError(f"table size {size} is not a power of 2")
    ordered = _ordered(pods)
    if not ordered:
        return []
    keys = [walk_key(pod) for pod in ordered]
    if _maglev is not None:
        return _maglev.build_table(keys, size)
    return fill(keys, size)


def fill(keys: Sequence[int], size: int) -> List[int]:
    """The table of pods with these walk keys (in table order): the pods take turns
    claiming their walk's next free slot until every slot is taken."""
    walks = [_walk(key, size) for key in keys]
    table = [-1] * size
    filled = 0
    while True:
        for i, walk in enumerate(walks):
            for slot in walk:   # each pod's walk resumes where it stopped
                if table[slot] < 0:
                    break
            table[slot] = i
            filled += 1
            if filled == size:
                return table


def _ordered(pods: Iterable[Address]) -> List[Address]:
    return sorted(set(pods), key=lambda a: (a.version, int(a)))


class MaglevTable:
    """A VIP's new-connection table: maps a flow hash to one of its active pods."""

    def __init__(self, pods: Sequence[Address], size: int) -> None:
        self.pods = tuple(_ordered(pods))
        self.size = size
        # Compact and immutable by convention: 2 bytes a slot, not a list's 8 (10,000
        # Services' tables were 80 MB as lists), shared as it is with whoever sends it
        # (kp_app.lb_pipeline's LbVip).
        self.slots = array.array("H" if len(self.pods) <= 1 << 16 else "I",
                                 build_table(self.pods, size))
        held = Counter(self.slots)
        self._entries = {pod: held[i] for i, pod in enumerate(self.pods)}

    def is_for(self, pods: Iterable[Address], size: int) -> bool:
        """Is this the table of these pods at this size (so that it need not be built)?"""
        return size == self.size and tuple(_ordered(pods)) == self.pods

    def pick(self, flow_hash: int) -> Address:
        if not self.slots:
            raise LookupError("no pods")
        return self.pods[self.slots[flow_hash % self.size]]

    def share(self) -> dict:
        """Slots held per pod (for show and for the balance tests)."""
        return dict(self._entries)

    def entries_of(self, pod: Address) -> int:
        """Slots `pod` holds: 0 for a pod not in the table (draining, or unknown)."""
        return self._entries.get(pod, 0)


# A table this big takes long enough to build (2**14 slots: tens of milliseconds in C,
# seconds without it) to be worth building ahead, in a thread, before the change.
AHEAD_MIN_SIZE = 1 << 14
# Tables built ahead that no change has asked for yet: at most this many slots in all
# (the oldest go first: a change that asks for one after all builds it again).
AHEAD_MAX_SLOTS = 1 << 24
TableKey = Tuple[Tuple[Address, ...], int]


class TableStore:
    """Where every VIP table of kp_app comes from: built once per change, shared.

    `table(pods, size)` is the table of those pods at that size: the one already in use
    (by a VIP, a plan's scratch model, a node's local table: it lives as long as one of
    them holds it), else one built ahead, else built now. `build_ahead` builds the big
    tables a change will ask for before it is made, with the caller's `build` (kp_app's
    Ryu app runs it in a thread, off the controller's loop), so that the change finds them
    here. Nobody hands tables to anybody: a table is found by what it is."""

    def __init__(self, ahead_max_slots: int = AHEAD_MAX_SLOTS) -> None:
        self._in_use: "weakref.WeakValueDictionary[TableKey, MaglevTable]" = \
            weakref.WeakValueDictionary()
        self._ahead: "OrderedDict[TableKey, MaglevTable]" = OrderedDict()
        self._ahead_slots = 0
        self._ahead_max = ahead_max_slots
        self.built = 0          # tables this store built itself (tests count rebuilds)

    @staticmethod
    def key(pods: Iterable[Address], size: int) -> TableKey:
        return tuple(_ordered(pods)), size

    def table(self, pods: Iterable[Address], size: int) -> MaglevTable:
        key = self.key(pods, size)
        table = self._ahead.pop(key, None)
        if table is not None:
            self._ahead_slots -= size
        else:
            table = self._in_use.get(key)
        if table is None:
            table = MaglevTable(key[0], size)
            self.built += 1
            key = (table.pods, size)        # (the key shares the table's own tuple)
        self._in_use[key] = table
        return table

    def has(self, pods: Iterable[Address], size: int) -> bool:
        key = self.key(pods, size)
        return key in self._ahead or key in self._in_use

    def build_ahead(self, wanted: Iterable[Tuple[Sequence[Address], int]],
                    build: Callable[[List[Tuple[Sequence[Address], int]]], List[MaglevTable]],
                    min_size: int = AHEAD_MIN_SIZE) -> int:
        """Build the tables of `wanted` ((pods, size) pairs) of at least `min_size` slots
        that are not here yet, with `build` (a list of pairs -> their tables), and keep
        them for the change that will ask. Returns how many were built."""
        todo = list({self.key(pods, size): None for pods, size in wanted
                     if size >= min_size and not self.has(pods, size)})
        if not todo:
            return 0
        for table in build(todo):
            key = (table.pods, table.size)
            if key in self._ahead:
                continue
            self._ahead[key] = table
            self._ahead_slots += table.size
            while self._ahead_slots > self._ahead_max:
                _, oldest = self._ahead.popitem(last=False)
                self._ahead_slots -= oldest.size
        return len(todo)


def build_tables(wanted: Sequence[Tuple[Sequence[Address], int]]) -> List[MaglevTable]:
    """The tables of these (pods, size) pairs, built here and now (TableStore.build_ahead's
    `build` where there is no thread to build them in)."""
    return [MaglevTable(pods, size) for pods, size in wanted]
