/* The load balancer's fragments: a later fragment gets its first's translation (see
 * lb.h, "Fragments", for what and why). */
#include <string.h>

#include "csum.h"
#include "keyed_hash.h"
#include "lb.h"

/* The IP id of a fragment (IPv4: 16 bits; IPv6: the fragment header's 32). */
static uint32_t frag_id(const uint8_t *f, const struct pkt_layout *lay, int v6)
{
    return v6 ? rd32(f + lay->frag_hdr + 4) : rd16(f + lay->l3 + 4);
}

static struct lb_frag *frag_slot(const struct lb *lb, const struct flow_key *k, uint32_t id)
{
    uint64_t w[5];

    memcpy(w, k->nw_src, 16);
    memcpy(w + 2, k->nw_dst, 16);
    w[4] = (uint64_t)id << 8 | k->ip_proto;
    return &lb->frags[siphash13(w, 5, lb->k0 ^ 0x66726167u, lb->k1) & (LB_FRAG_SLOTS - 1)];
}

/* A first fragment was translated (flags, to dst/src): remember it for the later ones. */
void lb_frag_remember(struct lb *lb, const struct pkt_buf *pb, const struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now, uint8_t flags,
                      const uint8_t *dst, const uint8_t *src, uint32_t vip_id)
{
    int v6 = !!(k->present & FK_IPV6);
    uint32_t id;
    struct lb_frag *f;

    if (lay->frag != PKT_FRAG)
        return;
    id = frag_id(pb->data, lay, v6);
    f = frag_slot(lb, k, id);
    memset(f, 0, sizeof *f);
    memcpy(f->src, k->nw_src, 16);
    memcpy(f->dst, k->nw_dst, 16);
    f->id = id;
    f->proto = k->ip_proto;
    f->v6 = (uint8_t)v6;
    f->flags = flags & (LB_E_DST | LB_E_SRC);
    memcpy(f->new_dst, dst, 16);
    memcpy(f->new_src, src, 16);
    f->vip_id = vip_id;
    f->last_ms = now ? now : 1;
    if (lb->frags_used < LB_FRAG_SLOTS)
        lb->frags_used++;
}

int lb_frag_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now, uint32_t len)
{
    int v6 = !!(k->present & FK_IPV6);
    uint32_t id;
    struct lb_frag *f;

    if (!lb->frags_used || !(k->present & (FK_IPV4 | FK_IPV6)))
        return 0;
    id = frag_id(pb->data, lay, v6);
    f = frag_slot(lb, k, id);
    if (!f->last_ms || f->id != id || f->proto != k->ip_proto || f->v6 != v6 ||
        memcmp(f->src, k->nw_src, 16) || memcmp(f->dst, k->nw_dst, 16) ||
        now - f->last_ms >= LB_FRAG_TIMEOUT_MS)
        return 0;
    lb->c.fragments++;
    lb_count_vip(lb, f->vip_id, len);
    lb_rewrite(pb, k, lay, f->flags, f->new_dst, 0, f->new_src, 0);   /* no ports in it */
    return 1;
}
