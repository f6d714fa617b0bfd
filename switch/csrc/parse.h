/* Header parsing into a struct flow_key (see fastpath_ref._parse, its twin). */
#ifndef KP_PARSE_H
#define KP_PARSE_H

#include <stdint.h>

#include "flow_key.h"

/* Where the layers are, for the action executor and checksum code; -1 = absent. */
struct pkt_layout {
    int32_t l3;        /* network header (IP or ARP), after any VLAN tag */
    int32_t l4;        /* TCP/UDP/SCTP/ICMP header, only when its fields were parsed */
    int32_t l3_end;    /* end of the IP datagram (frames may carry padding after it) */
    int32_t sll_off;   /* the MAC inside an ND source link-layer address option */
    int32_t tll_off;   /* ... and inside a target link-layer address option */
    int32_t frag_hdr;  /* IPv6: the fragment header */
    uint32_t frag;     /* PKT_FRAG_*: an IP fragment (an atomic one, RFC 6946, is not) */
};

enum {
    PKT_FRAG = 1,        /* a fragment: the first (offset 0, more fragments) or a later */
    PKT_FRAG_LATER = 2,  /* offset > 0: no L4 header in it */
};

/* IPv6 extension headers walked to find the upper-layer protocol: at most this many
 * (Linux's default max_dst_opts_number and max_hbh_opts_number are 8 too), and the
 * upper-layer header within this many bytes of the fixed header (RFC 7112 wants the
 * whole chain in the first fragment; 1024 leaves room for any real chain in a 1280-byte
 * minimum MTU packet).  A longer chain is PARSE_REFUSED. */
#define IPV6_MAX_EXT_HDRS 8
#define IPV6_MAX_EXT_BYTES 1024

enum parse_result {
    PARSE_RUNT = -1,   /* shorter than an Ethernet header: no key at all */
    PARSE_OK = 0,
    PARSE_MALFORMED = 1, /* an inner header was cut short or invalid: the key holds
                          * the fields of the layers before it */
    PARSE_REFUSED = 2,   /* a header chain kp does not walk (IPv6 extension headers past
                          * the bounds above, hop-by-hop not first): never translated
                          * or forwarded by its outer fields, the datapath drops it
                          * (counted: refused) */
};

/* Fills *key (all of it, zeroing what the packet lacks) and *lay.  Reads at most len
 * bytes of pkt, every read bounds-checked. */
enum parse_result parse_packet(const uint8_t *pkt, uint32_t len, uint32_t in_port,
                               struct flow_key *key, struct pkt_layout *lay);

#endif
