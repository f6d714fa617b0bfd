/* ICMP errors about a session's packets, translated back (lb.h; conntrack's RELATED
 * with NAT, nf_nat_icmp_reply_translation, does the same).
 *
 * A pod that answers a client's datagram with "port unreachable", or a router on the
 * way that says "fragmentation needed" / "packet too big" about a pod's reply, quotes
 * the packet as it saw it: translated.  The client knows only the VIP, so it would
 * drop the error (and path MTU discovery through a VIP would never work).  The quoted
 * packet I went one way of a session; the entry R of the other way (the key of I
 * reversed) holds the translation that undoes I's:
 *   - inner: I's source becomes R's new destination (address, port) when R rewrites
 *     destinations, I's destination R's new source when R rewrites sources;
 *   - outer: the error's source becomes R's new source when it was I's destination
 *     (the pod itself answered: it now speaks as the VIP), its destination R's new
 *     destination when it was I's source (an error for the pod about its reply);
 *     an error from a router keeps the router's own address;
 *   - checksums: both IPv4 header checksums, the quoted TCP/UDP checksum when the
 *     quote holds it (incremental), the ICMP checksum recomputed over the message.
 * Handled: ICMPv4 destination unreachable (fragmentation needed among them), time
 * exceeded, parameter problem; ICMPv6 destination unreachable, packet too big, time
 * exceeded, parameter problem; a quote of a TCP or UDP packet (IPv6 without extension
 * headers) with its ports.  Anything else is left alone (not translated), never
 * half-translated: every check comes before the first write.
 */
#include <string.h>

#include "csum.h"
#include "lb.h"

static int is_error(const struct flow_key *k)
{
    uint16_t t = k->tp_src;

    if (k->present & FK_ICMPV4)
        return t == 3 || t == 11 || t == 12;
    if (k->present & FK_ICMPV6)
        return t >= 1 && t <= 4;
    return 0;
}

/* Writes n bytes at p, keeping an IPv4 header checksum at hsum (or NULL) and a TCP/UDP
 * checksum at l4sum (or NULL) right. */
static void put(uint8_t *p, const uint8_t *v, size_t n, uint8_t *hsum, uint8_t *l4sum,
                int udp)
{
    uint8_t old[16];

    memcpy(old, p, n);
    memcpy(p, v, n);
    if (hsum)
        csum_replace(hsum, old, v, n, false);
    if (l4sum)
        csum_replace(l4sum, old, v, n, udp);
}

static void put16(uint8_t *p, uint16_t v, uint8_t *l4sum, int udp)
{
    uint8_t b[2];

    wr16(b, v);
    put(p, b, 2, NULL, l4sum, udp);
}

int lb_icmp_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now)
{
    uint8_t *f = pb->data, *ihsum = NULL, *l4sum = NULL;
    int v6 = !!(k->present & FK_IPV6), udp, alen = v6 ? 16 : 4;
    int32_t ic, end = lay->l3_end, ihl, ip4, asrc, adst;
    uint8_t isrc[16], idst[16], osrc[16], odst[16];
    const struct lb_entry *r;
    struct lb_key key;
    uint8_t proto;
    uint64_t sum;

    if (!is_error(k) || lay->l4 < 0 || lay->frag)
        return 0;
    ic = lay->l4 + 8;                     /* the quoted packet */
    if (!v6) {
        if (end - ic < 20 || f[ic] >> 4 != 4)
            return 0;
        ihl = (f[ic] & 15) * 4;
        if (ihl < 20 || ihl > end - ic || rd16(f + ic + 6) & 0x1fff)
            return 0;                     /* a later fragment quoted: no ports */
        proto = f[ic + 9];
        asrc = ic + 12;
        adst = ic + 16;
        ihsum = f + ic + 10;
    } else {
        if (end - ic < 40 || f[ic] >> 4 != 6)
            return 0;
        ihl = 40;
        proto = f[ic + 6];
        asrc = ic + 8;
        adst = ic + 24;
    }
    ip4 = ic + ihl;                       /* the quoted TCP/UDP header */
    if ((proto != 6 && proto != 17) || end - ip4 < 4)
        return 0;
    udp = proto == 17;
    memset(&key, 0, sizeof key);          /* the quoted packet's reply direction */
    key.v6 = (uint8_t)v6;
    key.proto = proto;
    memcpy(key.src, f + adst, alen);
    memcpy(key.dst, f + asrc, alen);
    key.sport = rd16(f + ip4 + 2);
    key.dport = rd16(f + ip4);
    if (!(r = lb_lookup(lb, &key, now)))
        return 0;
    if (end - ip4 >= (udp ? 8 : 18) && !(udp && rd16(f + ip4 + 6) == 0))
        l4sum = f + ip4 + (udp ? 6 : 16);
    memset(isrc, 0, sizeof isrc);
    memset(idst, 0, sizeof idst);
    memcpy(isrc, f + asrc, alen);
    memcpy(idst, f + adst, alen);
    memcpy(osrc, k->nw_src, 16);
    memcpy(odst, k->nw_dst, 16);
    /* inner */
    if (r->flags & LB_E_DST) {
        put(f + asrc, r->new_dst, (size_t)alen, ihsum, l4sum, udp);
        put16(f + ip4, r->new_dport, l4sum, udp);
    }
    if (r->flags & LB_E_SRC) {
        put(f + adst, r->new_src, (size_t)alen, ihsum, l4sum, udp);
        put16(f + ip4 + 2, r->new_sport, l4sum, udp);
    }
    /* outer */
    {
        int32_t os = lay->l3 + (v6 ? 8 : 12), od = lay->l3 + (v6 ? 24 : 16);
        uint8_t *hsum = v6 ? NULL : f + lay->l3 + 10;

        if ((r->flags & LB_E_SRC) && !memcmp(osrc, idst, 16)) {
            put(f + os, r->new_src, (size_t)alen, hsum, NULL, 0);
            memcpy(k->nw_src, r->new_src, (size_t)alen);
        }
        if ((r->flags & LB_E_DST) && !memcmp(odst, isrc, 16)) {
            put(f + od, r->new_dst, (size_t)alen, hsum, NULL, 0);
            memcpy(k->nw_dst, r->new_dst, (size_t)alen);
        }
    }
    /* the ICMP checksum, over the whole message (and IPv6's pseudo-header) */
    wr16(f + lay->l4 + 2, 0);
    sum = csum_add(0, f + lay->l4, (size_t)(end - lay->l4));
    if (v6) {
        uint8_t ph[8] = {0};

        sum = csum_add(sum, k->nw_src, 16);
        sum = csum_add(sum, k->nw_dst, 16);
        wr32(ph, (uint32_t)(end - lay->l4));
        ph[7] = 58;
        sum = csum_add(sum, ph, 8);
    }
    wr16(f + lay->l4 + 2, (uint16_t)~csum_fold(sum));
    lb->c.icmp_errors++;
    return 1;
}
