"""The cache key's layout and the fast path's limits, as csrc/flow_key.h, flow_cache.h,
megaflow.h, parse.h and segment.h define them (the same numbers, checked against the
C extension's by the differential tests).

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Optional, Tuple


WAYS = 4
MAX_FLOW_IDS = 1 << 18
CACHE_IDLE_MS = 10_000
MAX_IDS_PER_ENTRY = 3   # flow ids a cache entry holds; an insert with more fails
MAX_IDS_PER_INSERT = 8  # flow ids cache_insert accepts (more: ValueError)
MAX_OPS = 16            # actions per cached program; longer lists are not cached
PROG_POOL = 4096        # distinct cached action programs (shared between entries)
ADDR_POOL = 65536       # distinct IPv6 addresses in cached keys (shared between entries)
RECLAIM_BUCKETS = 64    # buckets swept for dead slots when a pool is full
BYTES_PER_FLOW = 64     # 64-byte bucket line / WAYS + 48-byte entry (key 40, ids 8)
MF_SUBTABLES = 32       # distinct megaflow masks (one subtable each)
MF_BUCKETS = 4096       # megaflow hash buckets (a power of 2), shared by the subtables
MF_WAYS = 4             # megaflow slots per bucket
MF_SWEEP_BUCKETS = 4    # megaflow buckets reaped per megaflow insert
MF_BYTES_PER_FLOW = 96  # 64-byte bucket line / MF_WAYS + 80-byte entry (key 64, epoch, ids)
AGE_LIMIT = 1 << 31     # an exact slot this many invalidations old is dropped (wrap-safe)
MISS_QUEUE_LEN = 1024
MAX_BUCKETS = 1 << 20
KEY_SIZE = 100

# Bits of flow_key.present: which groups of fields the packet had.
F_ETH = 1 << 1
F_VLAN = 1 << 2
F_IP = 1 << 3
F_IPV4 = 1 << 4
F_IPV6 = 1 << 5
F_TCP = 1 << 6
F_UDP = 1 << 7
F_ICMPV4 = 1 << 8
F_ICMPV6 = 1 << 9
F_ARP = 1 << 10
F_ND_TARGET = 1 << 11
F_ND_SLL = 1 << 12
F_ND_TLL = 1 << 13
F_SCTP = 1 << 14
# Not a header: kp_lb translated the packet as a hairpin (csrc/flow_key.h), so the tables
# may send it back out of its in_port; in key dicts, LB_LOOPBACK: True.
F_LB_LOOPBACK = 1 << 15
LB_LOOPBACK = "lb_loopback"

# struct flow_key: in_port, present, eth_dst, eth_src, eth_type, vlan_vid, vlan_pcp,
# ip_proto, ip_dscp, ip_ecn, tcp_flags, pad, ipv6_flabel, tp_src, tp_dst, nw_src,
# nw_dst, nd_target, arp_sha (= nd_sll), arp_tha (= nd_tll).  tp_src/tp_dst hold the
# L4 ports, the ICMP type/code or the ARP opcode; nw_src/nw_dst the IPv4 (first four
# bytes), IPv6 or ARP protocol addresses.
_KEY = struct.Struct("<II6s6sHHBBBBHHIHH16s16s16s6s6s")
assert _KEY.size == KEY_SIZE

# struct cache_key, the cache's compact form of a key: in_port (16 bits), present (16),
# eth_dst, eth_src, eth_type, vlan (vid | pcp << 13), ip_proto, tos (dscp << 2 | ecn),
# tcp_flags, tp_src, tp_dst, ipv6_flabel, nw_src, nw_dst (IPv4 address; for IPv6 the
# cache's pool index of the address, 0 in a looked-up key).
_CKEY = struct.Struct("<HH6s6sHHBBHHHIII")
assert _CKEY.size == 40
_CACHEABLE = (F_ETH | F_VLAN | F_IP | F_IPV4 | F_IPV6 | F_TCP | F_UDP | F_ICMPV4 | F_ICMPV6
              | F_SCTP)

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 = 6, 17, 1, 58
_IPV6_EXT = (0, 43, 60)   # hop-by-hop, routing, destination options
_IPV6_FRAG = 44
IPV6_MAX_EXT_HDRS = 8      # csrc/parse.h: extension headers walked, at most
IPV6_MAX_EXT_BYTES = 1024  # ... and the upper-layer header within this many bytes
FRAG, FRAG_LATER = 1, 2    # csrc/parse.h PKT_FRAG_*
SEG_MIN_SIZE = 88          # csrc/segment.h: the smallest segment size cut to (why: there)

Action = Tuple[Any, ...]
Miss = Tuple[int, bytes, Optional[Dict[str, Any]], bytes, int]   # ..., the thread
# The twin has one datapath thread (the C datapath: 1..its MAX_THREADS, datapath.h).
MAX_THREADS = 1
