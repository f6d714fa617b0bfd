/* Packet parser.  Layer by layer, each header is checked against the bytes that are
 * really there (and, inside IP, against the datagram's own length, so Ethernet
 * padding is never read as L4 data) before a single field is read from it.  A bad
 * layer stops the walk: the key keeps the good outer layers, so a malformed packet
 * still gets a deterministic key and the slow path decides what to do with it. */
#include "parse.h"

#include <string.h>

#include "csum.h"

#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86dd
#define ETH_P_ARP 0x0806

static enum parse_result parse_nd(const uint8_t *pkt, int32_t off, struct flow_key *k,
                                  struct pkt_layout *lay)
{
    int32_t end = lay->l3_end, cur;

    if (end - off < 24)
        return PARSE_MALFORMED;
    k->present |= FK_ND_TARGET;
    memcpy(k->nd_target, pkt + off + 8, 16);
    for (cur = off + 24; cur < end;) {
        uint8_t otype, olen;

        if (end - cur < 8 || pkt[cur + 1] == 0 || pkt[cur + 1] * 8 > end - cur)
            return PARSE_MALFORMED;
        otype = pkt[cur];
        olen = pkt[cur + 1];
        if (olen == 1) {
            if (otype == 1 && k->tp_src == 135 && !(k->present & FK_ND_SLL)) {
                k->present |= FK_ND_SLL;
                memcpy(k->arp_sha, pkt + cur + 2, 6);
                lay->sll_off = cur + 2;
            } else if (otype == 2 && k->tp_src == 136 && !(k->present & FK_ND_TLL)) {
                k->present |= FK_ND_TLL;
                memcpy(k->arp_tha, pkt + cur + 2, 6);
                lay->tll_off = cur + 2;
            }
        }
        cur += olen * 8;
    }
    return PARSE_OK;
}

static enum parse_result parse_l4(const uint8_t *pkt, int32_t off, int v6,
                                  struct flow_key *k, struct pkt_layout *lay)
{
    int32_t avail = lay->l3_end - off;

    switch (k->ip_proto) {
    case 6: {
        int32_t doff;

        if (avail < 20)
            return PARSE_MALFORMED;
        doff = (pkt[off + 12] >> 4) * 4;
        if (doff < 20 || doff > avail)
            return PARSE_MALFORMED;
        k->present |= FK_TCP;
        k->tp_src = rd16(pkt + off);
        k->tp_dst = rd16(pkt + off + 2);
        k->tcp_flags = rd16(pkt + off + 12) & 0x0fff;
        break;
    }
    case 17:
        if (avail < 8)
            return PARSE_MALFORMED;
        k->present |= FK_UDP;
        k->tp_src = rd16(pkt + off);
        k->tp_dst = rd16(pkt + off + 2);
        break;
    case 132:                   /* SCTP: the common header (ports, tag, checksum) */
        if (avail < 12)
            return PARSE_MALFORMED;
        k->present |= FK_SCTP;
        k->tp_src = rd16(pkt + off);
        k->tp_dst = rd16(pkt + off + 2);
        break;
    case 1:
        if (v6)
            return PARSE_OK;
        if (avail < 4)
            return PARSE_MALFORMED;
        k->present |= FK_ICMPV4;
        k->tp_src = pkt[off];
        k->tp_dst = pkt[off + 1];
        break;
    case 58:
        if (!v6)
            return PARSE_OK;
        if (avail < 4)
            return PARSE_MALFORMED;
        k->present |= FK_ICMPV6;
        k->tp_src = pkt[off];
        k->tp_dst = pkt[off + 1];
        lay->l4 = off;
        if ((k->tp_src == 135 || k->tp_src == 136) && k->tp_dst == 0)
            return parse_nd(pkt, off, k, lay);
        return PARSE_OK;
    default:
        return PARSE_OK;
    }
    lay->l4 = off;
    return PARSE_OK;
}

static enum parse_result parse_ipv4(const uint8_t *pkt, uint32_t len, int32_t off,
                                    struct flow_key *k, struct pkt_layout *lay)
{
    int32_t avail = (int32_t)len - off, ihl, tot;

    if (avail < 20 || pkt[off] >> 4 != 4)
        return PARSE_MALFORMED;
    ihl = (pkt[off] & 0x0f) * 4;
    tot = rd16(pkt + off + 2);
    if (ihl < 20 || ihl > avail || tot < ihl || tot > avail)
        return PARSE_MALFORMED;
    k->present |= FK_IP | FK_IPV4;
    k->ip_dscp = pkt[off + 1] >> 2;
    k->ip_ecn = pkt[off + 1] & 3;
    k->ip_proto = pkt[off + 9];
    memcpy(k->nw_src, pkt + off + 12, 4);
    memcpy(k->nw_dst, pkt + off + 16, 4);
    lay->l3_end = off + tot;
    if (rd16(pkt + off + 6) & 0x3fff)
        lay->frag = PKT_FRAG;
    if (rd16(pkt + off + 6) & 0x1fff) {
        lay->frag |= PKT_FRAG_LATER;
        return PARSE_OK;        /* a later fragment carries no L4 header */
    }
    return parse_l4(pkt, off + ihl, 0, k, lay);
}

static enum parse_result parse_ipv6(const uint8_t *pkt, uint32_t len, int32_t off,
                                    struct flow_key *k, struct pkt_layout *lay)
{
    int32_t avail = (int32_t)len - off, end, cur;
    uint8_t tc, nh;
    int i;

    if (avail < 40 || pkt[off] >> 4 != 6)
        return PARSE_MALFORMED;
    if (rd16(pkt + off + 4) + 40 > avail)
        return PARSE_MALFORMED;
    tc = (uint8_t)((pkt[off] & 0x0f) << 4 | pkt[off + 1] >> 4);
    k->present |= FK_IP | FK_IPV6;
    k->ip_dscp = tc >> 2;
    k->ip_ecn = tc & 3;
    k->ipv6_flabel = (uint32_t)(pkt[off + 1] & 0x0f) << 16 | rd16(pkt + off + 2);
    memcpy(k->nw_src, pkt + off + 8, 16);
    memcpy(k->nw_dst, pkt + off + 24, 16);
    end = off + 40 + rd16(pkt + off + 4);
    lay->l3_end = end;
    nh = pkt[off + 6];
    cur = off + 40;
    for (i = 0; i <= IPV6_MAX_EXT_HDRS; i++) {
        k->ip_proto = nh;
        if (cur - (off + 40) > IPV6_MAX_EXT_BYTES)
            return PARSE_REFUSED;   /* too long a chain */
        if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
            return parse_l4(pkt, cur, 1, k, lay);
        if (i == IPV6_MAX_EXT_HDRS || (nh == 0 && i > 0))
            return PARSE_REFUSED;   /* too many; hop-by-hop only first (RFC 8200) */
        if (end - cur < 8)
            return PARSE_MALFORMED;
        if (nh == 44) {                             /* fragment */
            uint16_t fo = rd16(pkt + cur + 2);

            nh = pkt[cur];
            if (fo & 0xfff9) {      /* offset or more fragments: not an atomic one */
                lay->frag = PKT_FRAG;
                lay->frag_hdr = cur;
            }
            cur += 8;
            if (fo >> 3) {
                lay->frag |= PKT_FRAG_LATER;
                k->ip_proto = nh;
                return PARSE_OK;
            }
        } else {                                    /* hop-by-hop, routing, dest opts */
            int32_t hlen = (pkt[cur + 1] + 1) * 8;

            if (hlen > end - cur)
                return PARSE_MALFORMED;
            nh = pkt[cur];
            cur += hlen;
        }
    }
    return PARSE_REFUSED;       /* not reached: the loop returns */
}

static enum parse_result parse_arp(const uint8_t *pkt, uint32_t len, int32_t off,
                                   struct flow_key *k)
{
    const uint8_t *a = pkt + off;

    if ((int32_t)len - off < 28)
        return PARSE_MALFORMED;
    if (rd16(a) != 1 || rd16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4)
        return PARSE_OK;        /* not Ethernet/IPv4 ARP: no ARP fields, not an error */
    k->present |= FK_ARP;
    k->tp_src = rd16(a + 6);
    memcpy(k->arp_sha, a + 8, 6);
    memcpy(k->nw_src, a + 14, 4);
    memcpy(k->arp_tha, a + 18, 6);
    memcpy(k->nw_dst, a + 24, 4);
    return PARSE_OK;
}

enum parse_result parse_packet(const uint8_t *pkt, uint32_t len, uint32_t in_port,
                               struct flow_key *k, struct pkt_layout *lay)
{
    int32_t off = 14;

    memset(k, 0, sizeof *k);
    lay->l3 = lay->l4 = lay->l3_end = lay->sll_off = lay->tll_off = lay->frag_hdr = -1;
    lay->frag = 0;
    if (len < 14)
        return PARSE_RUNT;
    k->in_port = in_port;
    k->present = FK_ETH;
    memcpy(k->eth_dst, pkt, 6);
    memcpy(k->eth_src, pkt + 6, 6);
    k->eth_type = rd16(pkt + 12);
    if (k->eth_type == ETH_P_8021Q || k->eth_type == ETH_P_8021AD) {
        uint16_t tci;

        if (len < 18)
            return PARSE_MALFORMED;
        tci = rd16(pkt + 14);
        k->present |= FK_VLAN;
        k->vlan_vid = (tci & 0x0fff) | 0x1000;
        k->vlan_pcp = tci >> 13;
        k->eth_type = rd16(pkt + 16);
        off = 18;
    }
    lay->l3 = off;
    switch (k->eth_type) {
    case ETH_P_ARP:
        return parse_arp(pkt, len, off, k);
    case ETH_P_IP:
        return parse_ipv4(pkt, len, off, k, lay);
    case ETH_P_IPV6:
        return parse_ipv6(pkt, len, off, k, lay);
    default:
        return PARSE_OK;
    }
}
