"""The hash that picks a new session's entry in a VIP's table, on every kind of switch.

For "the same 5-tuple goes to the same pod on every node", kp-switch (in C), Open vSwitch
and kp_app's model must compute the same table index. Open vSwitch computes only its own
hashes, so the index is Open vSwitch's: its `multipath` action with fields
`symmetric_l3l4+udp`, algorithm `modulo_n` and `n_links` = the table's size (OVS
lib/flow.c flow_hash_symmetric_l3l4 with the murmur3 steps of lib/hash.h, generic build).

- Start at the basis; add the IPv4 `src ^ dst` as one 32-bit word read in memory order
  (IPv6: the two 64-bit halves of `src ^ dst`, each as two 32-bit words, low then high);
  add the IP protocol; for TCP, SCTP and UDP that are not fragments, add `sport ^ dport`
  as a 16-bit word read in memory order; finish with murmur3's fmix32 of `hash ^ basis`.
- Symmetric: a reply hashes like its request. Unkeyed but for the 16-bit basis, which
  must be the same on every node (it is not a defence against aimed 5-tuples: the
  session tables' buckets use a per-process keyed hash for that).
- Builds of Open vSwitch compiled for SSE4.2 or ARM CRC32 use a CRC-based hash instead;
  a cluster that mixes switch kinds needs the generic build (tests probe the OVS here
  with ofproto/trace).

`switch/csrc/session_hash.c` is the C twin; tests feed the same 5-tuples to both and to
Open vSwitch and require the same index.
"""
import ipaddress
from typing import Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Open vSwitch's multipath n_links is a 16-bit max_link + 1: a table it indexes holds at
# most this many entries.
MAX_OVS_TABLE = 1 << 16
MAX_BASIS = 0xFFFF
# The basis every node uses until configuration gives another (it must be the same on
# every node of a cluster).
DEFAULT_BASIS = 0
TCP, UDP, SCTP = 6, 17, 132
_PORTED = (TCP, UDP, SCTP)
_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _add(h: int, data: int) -> int:
    """murmur3's per-word step (OVS mhash_add): a zero word leaves the mix unchanged
    but the rotation and multiply still happen."""
    if data:
        data = (data * 0xCC9E2D51) & _M32
        data = _rot(data, 15)
        data = (data * 0x1B873593) & _M32
        h ^= data
    h = _rot(h, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _finish(h: int) -> int:
    """murmur3's fmix32."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def session_hash(proto: int, src: Address, src_port: int, dst: Address, dst_port: int,
                 basis: int = DEFAULT_BASIS, fragment: bool = False) -> int:
    """Open vSwitch's symmetric_l3l4+udp hash of a 5-tuple (32 bits)."""
    if not 0 <= basis <= MAX_BASIS:
        raise ValueError(f"hash basis {basis} is not 0..{MAX_BASIS}")
    if src.version != dst.version:
        raise ValueError("source and destination are of different families")
    x = bytes(a ^ b for a, b in zip(src.packed, dst.packed))
    h = basis
    if src.version == 4:
        h = _add(h, int.from_bytes(x, "little"))
    else:
        for half in (x[:8], x[8:]):
            word = int.from_bytes(half, "little")
            h = _add(_add(h, word & _M32), word >> 32)
    h = _add(h, proto)
    if proto in _PORTED and not fragment:
        h = _add(h, int.from_bytes((src_port ^ dst_port).to_bytes(2, "big"), "little"))
    return _finish(h ^ basis)


def table_index(hash_value: int, size: int) -> int:
    """The entry `multipath(..., modulo_n, size, ...)` writes: the hash modulo the size."""
    return hash_value % size
