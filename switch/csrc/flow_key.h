/* The flow key: every field a packet can be matched on, in one fixed-size struct.
 *
 * The same bytes are the opaque key_blob handed to Python (padding explicit and always
 * zero; the cache stores a compact form of it, struct cache_key in flow_cache.h), whose twin
 * (kp_switch/fastpath_ref.py, _KEY) packs exactly this layout little-endian.
 * Numbers are in host order; addresses are in wire order.  Fields that several
 * protocols use in the same place share storage, as `present` says which apply:
 * tp_src/tp_dst are L4 ports (TCP, UDP, SCTP), ICMP type/code or the ARP opcode; nw_src/nw_dst hold
 * IPv4 (first four bytes), IPv6 or ARP protocol addresses; arp_sha/arp_tha double as
 * the ND source/target link-layer addresses.
 */
#ifndef KP_FLOW_KEY_H
#define KP_FLOW_KEY_H

#include <stddef.h>
#include <stdint.h>

enum {
    FK_ETH = 1u << 1,
    FK_VLAN = 1u << 2,
    FK_IP = 1u << 3,
    FK_IPV4 = 1u << 4,
    FK_IPV6 = 1u << 5,
    FK_TCP = 1u << 6,
    FK_UDP = 1u << 7,
    FK_ICMPV4 = 1u << 8,
    FK_ICMPV6 = 1u << 9,
    FK_ARP = 1u << 10,
    FK_ND_TARGET = 1u << 11,
    FK_ND_SLL = 1u << 12,
    FK_ND_TLL = 1u << 13,
    FK_SCTP = 1u << 14,
    /* Not a header: kp_lb translated the packet as a hairpin (a pod reaching itself
     * through its VIP, source and destination both rewritten), so the tables may send
     * it back out of the port it came in by (OpenFlow's rule against that is for
     * packets that would loop; this one comes back to its sender seen from the VIP). */
    FK_LB_LOOPBACK = 1u << 15,
};
/* The name FK_LB_LOOPBACK has in the key dicts handed to Python (module.c; the
 * twin's is fastpath_ref.LB_LOOPBACK). */
#define LB_LOOPBACK_KEY "lb_loopback"

struct flow_key {
    uint32_t in_port;
    uint32_t present;          /* FK_* */
    uint8_t eth_dst[6];
    uint8_t eth_src[6];
    uint16_t eth_type;         /* the inner one after a VLAN tag */
    uint16_t vlan_vid;         /* with OFPVID_PRESENT (0x1000) */
    uint8_t vlan_pcp;
    uint8_t ip_proto;
    uint8_t ip_dscp;
    uint8_t ip_ecn;
    uint16_t tcp_flags;
    uint16_t pad;              /* always 0 (a blob with it set is not cacheable) */
    uint32_t ipv6_flabel;
    uint16_t tp_src;
    uint16_t tp_dst;
    uint8_t nw_src[16];
    uint8_t nw_dst[16];
    uint8_t nd_target[16];
    uint8_t arp_sha[6];
    uint8_t arp_tha[6];
};

#define FLOW_KEY_SIZE 100
_Static_assert(sizeof(struct flow_key) == FLOW_KEY_SIZE, "key layout is shared with Python");
_Static_assert(offsetof(struct flow_key, ipv6_flabel) == 32, "key layout is shared with Python");
_Static_assert(offsetof(struct flow_key, nw_src) == 40, "key layout is shared with Python");
_Static_assert(offsetof(struct flow_key, arp_tha) == 94, "key layout is shared with Python");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "fastpath_ref packs the key little-endian");

#endif
