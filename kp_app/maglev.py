"""The new-connection table: Maglev-style consistent hashing of flows onto pods.

Each pod walks the table in its own permutation (an offset and an odd skip, both from a
hash of its address, so the walk visits every slot of the power-of-2 table) and the pods
take turns claiming their next free slot until the table is full. So:

- every pod holds floor(n/N) or ceil(n/N) of the n slots (they claim one per round);
- removing a pod frees only its slots, and the others' walks change little, so only about
  1/N of the flows move;
- the pods are sorted first and the hashes are keyed, not salted per process, so every
  node and every restart builds the same table from the same configuration.
"""
import hashlib
import ipaddress
from typing import Iterable, List, Sequence, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _hash64(data: bytes, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "big")


def _permutation(pod: Address, size: int):
    packed = pod.packed
    offset = _hash64(packed, b"kp-maglev-off") % size
    skip = (_hash64(packed, b"kp-maglev-skip") % size) | 1 if size > 1 else 1
    return offset, skip


def build_table(pods: Iterable[Address], size: int) -> List[int]:
    """Slot -> index into sorted(pods); an empty list when there are no pods.

    The table is built whole and returned; callers swap it in at once.
    """
    if size <= 0 or size & (size - 1):
        raise ValueError(f"table size {size} is not a power of 2")
    ordered = sorted(set(pods), key=lambda a: (a.version, int(a)))
    if not ordered:
        return []
    walks = [_permutation(pod, size) for pod in ordered]
    position = [0] * len(ordered)
    table = [-1] * size
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(walks):
            slot = (offset + position[i] * skip) % size
            while table[slot] >= 0:
                position[i] += 1
                slot = (offset + position[i] * skip) % size
            table[slot] = i
            position[i] += 1
            filled += 1
            if filled == size:
                return table


class MaglevTable:
    """A VIP's new-connection table: maps a flow hash to one of its active pods."""

    def __init__(self, pods: Sequence[Address], size: int) -> None:
        self.pods = sorted(set(pods), key=lambda a: (a.version, int(a)))
        self.size = size
        self.slots = build_table(self.pods, size)

    def pick(self, flow_hash: int) -> Address:
        if not self.slots:
            raise LookupError("no pods")
        return self.pods[self.slots[flow_hash % self.size]]

    def share(self) -> dict:
        """Slots held per pod (for show and for the balance tests)."""
        counts = {pod: 0 for pod in self.pods}
        for index in self.slots:
            counts[self.pods[index]] += 1
        return counts
