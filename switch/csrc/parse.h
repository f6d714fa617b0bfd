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
};

enum parse_result {
    PARSE_RUNT = -1,   /* shorter than an Ethernet header: no key at all */
    PARSE_OK = 0,
    PARSE_MALFORMED = 1, /* an inner header was cut short or invalid: the key holds
                          * the fields of the layers before it */
};

/* Fills *key (all of it, zeroing what the packet lacks) and *lay.  Reads at most len
 * bytes of pkt, every read bounds-checked. */
enum parse_result parse_packet(const uint8_t *pkt, uint32_t len, uint32_t in_port,
                               struct flow_key *key, struct pkt_layout *lay);

#endif
