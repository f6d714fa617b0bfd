"""Megaflow masks: which bits of a packet's key a classification depended on.

The slow path classifies a missed packet through the OpenFlow tables and, besides the
exact key, gives the fast path a megaflow (FASTPATH.md, "Megaflows"): the key masked
with the union of the (field, mask) of every subtable its lookups probed in every table
it went through (Open vSwitch's flow wildcards).  Every packet that agrees with it on
those bits gets the same answer, so one slow-path classification serves them all.

`mask_blob(masks)` turns `{field: mask}` (OpenFlow field names, integer masks as
`Match` holds them) into the 100-byte `struct flow_key` layout (csrc/flow_key.h) the
fast path's `cache_insert(..., mask_blob)` takes: each field's mask in the place the
key has the field's value.  Pure; no I/O.
"""
from typing import Dict

from .fastpath_ref import KEY_SIZE

# name -> (offset, size, byte order) in struct flow_key.  tp_src / tp_dst hold the L4
# ports (TCP, UDP, SCTP) and the ICMP type / code; nw_src / nw_dst the IPv4 (first 4 bytes) or IPv6
# addresses.  ARP and neighbour-discovery fields are absent: packets that have them are
# never cached.
_SLOTS = {
    "in_port": (0, 4, "little"),
    "eth_dst": (8, 6, "big"), "eth_src": (14, 6, "big"),
    "eth_type": (20, 2, "little"), "vlan_vid": (22, 2, "little"),
    "vlan_pcp": (24, 1, "little"), "ip_proto": (25, 1, "little"),
    "ip_dscp": (26, 1, "little"), "ip_ecn": (27, 1, "little"),
    "tcp_flags": (28, 2, "little"), "ipv6_flabel": (32, 4, "little"),
    "tcp_src": (36, 2, "little"), "udp_src": (36, 2, "little"), "sctp_src": (36, 2, "little"),
    "icmpv4_type": (36, 2, "little"), "icmpv6_type": (36, 2, "little"),
    "tcp_dst": (38, 2, "little"), "udp_dst": (38, 2, "little"), "sctp_dst": (38, 2, "little"),
    "icmpv4_code": (38, 2, "little"), "icmpv6_code": (38, 2, "little"),
    "ipv4_src": (40, 4, "big"), "ipv4_dst": (56, 4, "big"),
    "ipv6_src": (40, 16, "big"), "ipv6_dst": (56, 16, "big"),
}
MASKABLE = frozenset(_SLOTS)
IN_PORT_MASK = 0xFFFFFFFF


def mask_blob(masks: Dict[str, int]) -> bytes:
    """The fast path's mask blob for {field: mask}; ValueError for a field that cannot
    be in a megaflow (ARP, neighbour discovery, metadata) or a mask wider than it."""
    out = bytearray(KEY_SIZE)
    for name, mask in masks.items():
        slot = _SLOTS.get(name)
        if slot is None:
            raise ValueError("field %s cannot be in a megaflow" % name)
        off, size, order = slot
        if not 0 <= mask < 1 << (8 * size):
            raise ValueError("mask %#x too wide for %s" % (mask, name))
        cur = int.from_bytes(out[off:off + size], order)
        out[off:off + size] = (cur | mask).to_bytes(size, order)
    return bytes(out)
