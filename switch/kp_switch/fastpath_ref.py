"""Pure-Python twin of ``kp_switch._fastpath`` (see switch/FASTPATH.md).

Same API and the same answers as the C extension, written to be read: it is the
specification the differential tests hold the C code to, and a working (slow) datapath
the OpenFlow agent can run on when the extension is not built. This module is its API;
the code is in kp_switch.twin, one module per C file it mirrors: flow_key (the key's
layout and the limits), parse, csum (checksums, CRC32c), actions, flow_cache (with its
megaflow tier), segment, datapath. The twins are deliberate: `duplicates` pairs them
with nothing, since one is Python and the other C, but they are kept equal on purpose.

Shared with the C code byte for byte:
  - the cache key layout (``key_blob``, ``_KEY`` below, ``struct flow_key`` in
    csrc/flow_key.h), so a blob from one implementation is valid in the other;
  - the cache's compact key (``_CKEY``, ``struct cache_key`` in csrc/flow_cache.h:
    which blobs are cacheable at all) and its hash (SipHash-1-3 of its 64-bit words
    under the process secret, see ``key_hash`` and keyed_hash), so both put a key in the same bucket and evict the same way;
  - the cache's slot discipline (first free way, else the least recently used way);
  - the incremental checksum arithmetic (RFC 1624 eqn. 3), so rewritten packets are
    identical, including the 0x0000/0xffff choice; and SCTP's CRC32c, computed again
    on a port rewrite (kp_proto.sctp).
"""
# (the API the C extension has, and the names the tests and the agent use)
from .twin.flow_key import (ADDR_POOL, AGE_LIMIT, Action, BYTES_PER_FLOW,
                            CACHE_IDLE_MS, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP,
                            ETH_P_IP, ETH_P_IPV6, FRAG, FRAG_LATER, F_ARP, F_ETH,
                            F_ICMPV4, F_ICMPV6, F_IP, F_IPV4, F_IPV6, F_LB_LOOPBACK,
                            F_ND_SLL, F_ND_TARGET, F_ND_TLL, F_SCTP, F_TCP, F_UDP,
                            F_VLAN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
                            IPPROTO_UDP, IPV6_MAX_EXT_BYTES, IPV6_MAX_EXT_HDRS,
                            KEY_SIZE, LB_LOOPBACK, MAX_BUCKETS, MAX_FLOW_IDS,
                            MAX_IDS_PER_ENTRY, MAX_IDS_PER_INSERT, MAX_OPS,
                            MAX_THREADS, MF_BUCKETS, MF_BYTES_PER_FLOW, MF_SUBTABLES,
                            MF_SWEEP_BUCKETS, MF_WAYS, MISS_QUEUE_LEN, Miss, PROG_POOL,
                            RECLAIM_BUCKETS, SEG_MIN_SIZE, WAYS)  # noqa: F401
from .twin.csum import complete_partial_checksum, crc32c, crc32c_impls  # noqa: F401
from .twin.parse import parse, parse_blob  # noqa: F401
from .twin.actions import apply_actions, compile_actions  # noqa: F401
from .twin.flow_cache import CacheForTest, FlowCache, _CacheForTest, key_hash, session_hash  # noqa: F401
from .twin.segment import segment_tcp, segment_udp  # noqa: F401
from .twin.datapath import (Datapath, ETH_P_ALL, PACKET_AUXDATA,
                            PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR, SEG_ANY_MTU,
                            SOL_PACKET, TP_STATUS_CSUMNOTREADY,
                            TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
                            VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
                            VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4)  # noqa: F401
