/* The in-switch load balancer (see lb.h; twin: fastpath_ref.LoadBalancer). */
#define _GNU_SOURCE
#include "lb.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csum.h"
#include "keyed_hash.h"
#include "session_hash.h"
#include "steer.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define NO_SLOT 0xFFFFFFFFu

static const uint32_t default_timeouts_s[LB_N_TIMEOUTS] = {86400, 120, 120, 30};

/* ------------------------------------------------------------------ the bucket hash */

/* A session key's bucket hash. */
static uint64_t key_hash(const struct lb *lb, const struct lb_key *key)
{
    uint64_t w[5];

    _Static_assert(sizeof(struct lb_key) == 40, "five words");
    memcpy(w, key, sizeof w);
    return siphash13(w, 5, lb->k0, lb->k1);
}

/* The client's slot in source_sessions: the same hash of its address, the key's halves
 * swapped (another function of the same secret). */
static uint32_t source_slot(const struct lb *lb, const uint8_t *addr)
{
    uint64_t w[2];

    memcpy(w, addr, sizeof w);
    return (uint32_t)siphash13(w, 2, lb->k1, lb->k0) & (LB_SOURCE_SLOTS - 1);
}

static void candidates(const struct lb *lb, uint64_t h, uint32_t *b1, uint32_t *b2)
{
    *b1 = (uint32_t)h & (lb->n_buckets - 1);
    *b2 = (uint32_t)(h >> 32) & (lb->n_buckets - 1);
}

void lb_buckets_of(const struct lb *lb, const struct lb_key *key, uint32_t *b1, uint32_t *b2)
{
    candidates(lb, key_hash(lb, key), b1, b2);
}

void lb_set_hash_key(struct lb *lb, uint64_t k0, uint64_t k1)
{
    lb->k0 = k0;
    lb->k1 = k1;
}

/* ------------------------------------------------------------------ life cycle */

static int alloc_table(uint32_t buckets, uint32_t **hashes, struct lb_entry **entries)
{
    *hashes = calloc((size_t)buckets * LB_WAYS, sizeof **hashes);
    *entries = calloc((size_t)buckets * LB_WAYS, sizeof **entries);
    if (*hashes && *entries)
        return 0;
    free(*hashes);
    free(*entries);
    return ENOMEM;
}

struct lb *lb_new(uint32_t buckets)
{
    struct lb *lb = calloc(1, sizeof *lb);
    uint64_t key[2];

    if (!lb)
        return NULL;
    pthread_mutex_init(&lb->lock, NULL);
    lb->vips = calloc(LB_MAX_VIPS, sizeof *lb->vips);
    lb->source_sessions = calloc(LB_SOURCE_SLOTS, sizeof *lb->source_sessions);
    lb->frags = calloc(LB_FRAG_SLOTS, sizeof *lb->frags);
    if (!lb->vips || !lb->source_sessions || !lb->frags ||
        alloc_table(buckets, &lb->hashes, &lb->entries)) {
        free(lb->vips);
        free(lb->source_sessions);
        free(lb->frags);
        free(lb);
        return NULL;
    }
    lb->n_buckets = buckets;
    lb->next_sid = 1;
    keyed_hash_random_key(key);
    lb->k0 = key[0];
    lb->k1 = key[1];
    memcpy(lb->timeout_ms, default_timeouts_s, sizeof lb->timeout_ms);
    for (int i = 0; i < LB_N_TIMEOUTS; i++)
        lb->timeout_ms[i] *= 1000u;
    return lb;
}

static void vip_free(struct lb_vip *v)
{
    if (!v)
        return;
    free(v->table);
    free(v->pods);
    free(v->pod_sessions);
    free(v);
}

void lb_vip_free(struct lb_vip *v) { vip_free(v); }

void lb_free(struct lb *lb)
{
    uint32_t i;

    if (!lb)
        return;
    for (i = 0; i < LB_MAX_VIPS; i++)
        vip_free(lb->vips[i]);
    free(lb->vips);
    free(lb->source_sessions);
    free(lb->frags);
    free(lb->hashes);
    free(lb->entries);
    pthread_mutex_destroy(&lb->lock);
    free(lb);
}

void lb_lock(struct lb *lb)
{
    __atomic_add_fetch(&lb->waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&lb->lock);
    __atomic_sub_fetch(&lb->waiters, 1, __ATOMIC_RELAXED);
}

void lb_unlock(struct lb *lb) { pthread_mutex_unlock(&lb->lock); }

void lb_yield(struct lb *lb)
{
    int spins;

    /* A mutex is not fair: without stepping aside, a busy datapath thread would take
     * it back before the waiter ever ran. */
    for (spins = 0; spins < 100 && __atomic_load_n(&lb->waiters, __ATOMIC_RELAXED); spins++) {
        pthread_mutex_unlock(&lb->lock);
        sched_yield();
        pthread_mutex_lock(&lb->lock);
    }
}

int lb_configure(struct lb *lb, uint32_t buckets, const uint32_t timeouts_s[LB_N_TIMEOUTS],
                 const uint8_t *const hairpin[2])
{
    int i;

    if (buckets == 0 || buckets > LB_MAX_BUCKETS || (buckets & (buckets - 1)))
        return EINVAL;
    for (i = 0; i < LB_N_TIMEOUTS; i++)
        if (timeouts_s[i] == 0 || timeouts_s[i] > 864000u)
            return EINVAL;
    if (buckets != lb->n_buckets) {
        uint32_t *hashes;
        struct lb_entry *entries;

        if (alloc_table(buckets, &hashes, &entries))
            return ENOMEM;
        free(lb->hashes);
        free(lb->entries);
        lb->hashes = hashes;
        lb->entries = entries;
        lb->n_buckets = buckets;
        lb->live = 0;
        memset(lb->source_sessions, 0, LB_SOURCE_SLOTS * sizeof *lb->source_sessions);
    }
    for (i = 0; i < LB_N_TIMEOUTS; i++)
        lb->timeout_ms[i] = timeouts_s[i] * 1000u;
    for (i = 0; i < 2; i++) {
        memset(lb->hairpin_src[i], 0, 16);
        lb->hairpin_set[i] = hairpin[i] != NULL;
        if (hairpin[i])
            memcpy(lb->hairpin_src[i], hairpin[i], i ? 16 : 4);
    }
    return 0;
}

/* ------------------------------------------------------------------ VIPs */

struct lb_vip *lb_vip_build(uint32_t id, uint32_t version, uint32_t new_len, uint32_t basis,
                            const uint8_t *table, const uint8_t *pods, uint32_t n_pods,
                            char *err, size_t errlen)
{
    struct lb_vip *v;
    uint32_t i;

    if (id == 0 || id >= LB_MAX_VIPS || (version != 4 && version != 6) || new_len == 0 ||
        new_len > LB_MAX_TABLE || n_pods == 0 || n_pods > LB_MAX_PODS || basis > 0xFFFF) {
        snprintf(err, errlen, "VIP %u: version %u, %u entries, %u pods, basis %u", id,
                 version, new_len, n_pods, basis);
        return NULL;
    }
    v = calloc(1, sizeof *v);
    if (!v || !(v->table = malloc((size_t)new_len * sizeof *v->table)) ||
        !(v->pods = calloc(n_pods, sizeof *v->pods)) ||
        !(v->pod_sessions = calloc(n_pods, sizeof *v->pod_sessions))) {
        vip_free(v);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v->id = id;
    v->version = version;
    v->new_len = new_len;
    v->basis = basis;
    v->n_pods = n_pods;
    for (i = 0; i < new_len; i++) {
        v->table[i] = rd16(table + 2 * i);
        if (v->table[i] >= n_pods) {
            snprintf(err, errlen, "VIP %u: entry %u names pod %u of %u", id, i, v->table[i],
                     n_pods);
            vip_free(v);
            return NULL;
        }
    }
    for (i = 0; i < n_pods; i++) {
        const uint8_t *r = pods + 20 * i;
        static const uint8_t zero[12];

        if (version == 4 && memcmp(r + 4, zero, 12)) {
            snprintf(err, errlen, "VIP %u: pod %u is not an IPv4 address", id, i);
            vip_free(v);
            return NULL;
        }
        memcpy(v->pods[i].addr, r, 16);
        v->pods[i].port = rd16(r + 16);
    }
    return v;
}

void lb_vip_set(struct lb *lb, uint32_t id, struct lb_vip *vip)
{
    struct lb_vip *old;
    uint32_t i, j;

    if (id == 0 || id >= LB_MAX_VIPS)
        return;
    old = lb->vips[id];
    if (vip && old) {
        vip->packets = old->packets;
        vip->bytes = old->bytes;
        vip->sessions = old->sessions;
        vip->untracked = old->untracked;
        for (i = 0; i < vip->n_pods; i++)
            for (j = 0; j < old->n_pods; j++)
                if (!memcmp(&vip->pods[i], &old->pods[j], sizeof vip->pods[i])) {
                    vip->pod_sessions[i] = old->pod_sessions[j];
                    break;
                }
    }
    lb->vips[id] = vip;
    vip_free(old);
}

/* ------------------------------------------------------------------ sessions */

int lb_key_of(const struct flow_key *k, struct lb_key *out)
{
    memset(out, 0, sizeof *out);
    if (!(k->present & (FK_IPV4 | FK_IPV6)) || !(k->present & (FK_TCP | FK_UDP | FK_SCTP)))
        return 0;
    out->v6 = !!(k->present & FK_IPV6);
    memcpy(out->src, k->nw_src, out->v6 ? 16 : 4);
    memcpy(out->dst, k->nw_dst, out->v6 ? 16 : 4);
    out->sport = k->tp_src;
    out->dport = k->tp_dst;
    out->proto = k->ip_proto;
    return 1;
}

/* SCTP sessions (kp_proto/sctp.py is the twin and says why): what the packet's chunks
 * do to one.  They share TCP's three states and timeouts: an association opens (INIT,
 * nothing back yet), is established once the pod answers, and closes (ABORT or a
 * SHUTDOWN chunk) with the short closing timeout so the last chunks of the close still
 * find their translation.  Only the first SCTP_MAX_CHUNKS chunks are looked at. */
#define SCTP_STARTS 1u      /* kp_proto.sctp.STARTS: the first chunk is an INIT, tag 0 */
#define SCTP_CLOSES 2u      /* kp_proto.sctp.CLOSES: ABORT or SHUTDOWN* */
#define SCTP_MAX_CHUNKS 16  /* kp_proto.sctp.MAX_CHUNKS_SEEN */

static unsigned sctp_summary(const uint8_t *f, const struct pkt_layout *lay)
{
    int32_t off, end = lay->l3_end;
    unsigned out = 0;
    int n;

    if (lay->l4 < 0 || end - lay->l4 < 12)
        return 0;
    off = lay->l4 + 12;
    for (n = 0; n < SCTP_MAX_CHUNKS && end - off >= 4; n++) {
        uint8_t type = f[off];
        uint16_t clen = rd16(f + off + 2);

        if (n == 0 && type == 1 && !rd32(f + lay->l4 + 4))
            out |= SCTP_STARTS;
        if (type == 6 || type == 7 || type == 8 || type == 14)
            out |= SCTP_CLOSES;
        if (clen < 4)
            break;
        off += (clen + 3) & ~3;
    }
    return out;
}

static int entry_live(const struct lb *lb, const struct lb_entry *e, uint64_t now)
{
    /* last_ms may be ahead of now: the entry was used by another thread (execute())
     * whose clock was read after this one's. */
    return e->sid && (e->last_ms >= now || now - e->last_ms < lb->timeout_ms[e->state]);
}

/* The entry no longer counts in its client's share (LB_E_COUNTED). */
static void uncount(struct lb *lb, struct lb_entry *e)
{
    if (e->flags & LB_E_COUNTED) {
        uint32_t *n = &lb->source_sessions[source_slot(lb, e->key.src)];

        if (*n)
            (*n)--;
        e->flags &= (uint8_t)~LB_E_COUNTED;
    }
}

static void entry_free(struct lb *lb, uint32_t slot)
{
    struct lb_entry *e = &lb->entries[slot];

    if (e->sid) {
        uncount(lb, e);
        e->sid = 0;
        lb->live--;
    }
}

void lb_sweep(struct lb *lb, uint64_t now, uint32_t budget)
{
    uint32_t n = lb->n_buckets * LB_WAYS, i;

    if (!lb->live || !n)
        return;
    for (i = 0; i < budget && i < n; i++) {
        uint32_t s = lb->sweep_next++ % n;

        if (lb->entries[s].sid && !entry_live(lb, &lb->entries[s], now)) {
            entry_free(lb, s);
            lb->c.expired++;
        }
    }
    lb->sweep_next %= n;
}

/* The other entry of slot's session, or NO_SLOT when it is gone. */
static uint32_t partner_of(const struct lb *lb, uint32_t slot)
{
    const struct lb_entry *e = &lb->entries[slot];
    uint32_t p = e->partner;

    return p < lb->n_buckets * LB_WAYS && lb->entries[p].sid == e->sid ? p : NO_SLOT;
}

static uint32_t tag_of(uint64_t h) { return (uint32_t)(h ^ (h >> 32)); }

/* The live entry of key, or NO_SLOT; a dead one met on the way is reclaimed. */
static uint32_t find(struct lb *lb, const struct lb_key *key, uint64_t h, uint64_t now)
{
    uint32_t b[2], tag = tag_of(h), i, w;

    candidates(lb, h, &b[0], &b[1]);
    for (i = 0; i < 2; i++) {
        for (w = 0; w < LB_WAYS; w++) {
            uint32_t s = b[i] * LB_WAYS + w;
            struct lb_entry *e = &lb->entries[s];

            if (lb->hashes[s] != tag || !e->sid || memcmp(&e->key, key, sizeof *key))
                continue;
            if (entry_live(lb, e, now))
                return s;
            entry_free(lb, s);
            lb->c.expired++;
        }
        if (b[1] == b[0])
            break;
    }
    return NO_SLOT;
}

const struct lb_entry *lb_lookup(struct lb *lb, const struct lb_key *key, uint64_t now)
{
    uint32_t s = lb->live ? find(lb, key, key_hash(lb, key), now) : NO_SLOT;

    return s == NO_SLOT ? NULL : &lb->entries[s];
}

/* A free (or dead) slot for key; else the slot of the oldest closed session there
 * (FIN or RST seen: it only waits for late packets), ended to make room, as conntrack
 * drops its least useful entries when full; NO_SLOT when both its buckets are full of
 * live, open sessions.  A client that opens and closes connections one after the other
 * would otherwise fill the table with closed ones for the closing timeout. */
static uint32_t free_slot(struct lb *lb, uint64_t h, uint64_t now)
{
    uint32_t b[2], i, w, victim = NO_SLOT;

    candidates(lb, h, &b[0], &b[1]);
    for (i = 0; i < 2; i++)
        for (w = 0; w < LB_WAYS; w++) {
            uint32_t s = b[i] * LB_WAYS + w;
            const struct lb_entry *e = &lb->entries[s];

            if (!e->sid)
                return s;
            if (!entry_live(lb, e, now)) {
                entry_free(lb, s);
                lb->c.expired++;
                return s;
            }
            if (e->state == LB_TO_TCP_CLOSING &&
                (victim == NO_SLOT || e->last_ms < lb->entries[victim].last_ms))
                victim = s;
        }
    if (victim != NO_SLOT) {
        uint32_t p = partner_of(lb, victim);

        if (p != NO_SLOT)
            entry_free(lb, p);
        entry_free(lb, victim);
        lb->c.expired++;
    }
    return victim;
}

/* The set-field of the packet's L4 source or destination port (0: it has no ports). */
static uint8_t port_field(const struct flow_key *k, int src)
{
    if (k->present & FK_TCP)
        return src ? FLD_TCP_SRC : FLD_TCP_DST;
    if (k->present & FK_UDP)
        return src ? FLD_UDP_SRC : FLD_UDP_DST;
    if (k->present & FK_SCTP)
        return src ? FLD_SCTP_SRC : FLD_SCTP_DST;
    return 0;
}

/* One address and port set-field pair (the address alone when the packet has no ports). */
static uint32_t nat_ops(struct action_op *ops, const struct flow_key *k, int src,
                        const uint8_t *addr, uint16_t port)
{
    int v6 = !!(k->present & FK_IPV6);

    memset(ops, 0, 2 * sizeof *ops);
    ops[0].kind = ops[1].kind = OP_SET_FIELD;
    ops[0].field = src ? (v6 ? FLD_IPV6_SRC : FLD_IPV4_SRC) : (v6 ? FLD_IPV6_DST : FLD_IPV4_DST);
    memcpy(ops[0].bytes, addr, v6 ? 16 : 4);
    ops[1].field = port_field(k, src);
    ops[1].arg = port;
    return ops[1].field ? 2 : 1;
}

/* Rewrites the packet's destination and/or source (flags), with checksums, and the key
 * with it (no parse: see actions_nat). */
void lb_rewrite(struct pkt_buf *pb, struct flow_key *k, const struct pkt_layout *lay,
                uint8_t flags, const uint8_t *dst, uint16_t dport, const uint8_t *src,
                uint16_t sport)
{
    struct action_op ops[4];
    uint32_t n = 0;

    if (flags & LB_E_DST)
        n += nat_ops(ops + n, k, 0, dst, dport);
    if (flags & LB_E_SRC)
        n += nat_ops(ops + n, k, 1, src, sport);
    actions_nat(pb->data, k, lay, ops, n);
    if ((flags & (LB_E_DST | LB_E_SRC)) == (LB_E_DST | LB_E_SRC))
        k->present |= FK_LB_LOOPBACK;
}

void lb_count_vip(struct lb *lb, uint32_t vip_id, uint32_t len)
{
    struct lb_vip *v = vip_id < LB_MAX_VIPS ? lb->vips[vip_id] : NULL;

    if (v) {
        v->packets++;
        v->bytes += len;
    }
}

int lb_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                 const struct pkt_layout *lay, uint64_t now, uint32_t len)
{
    struct lb_key key;
    struct lb_entry *e;
    uint32_t s, p;
    uint16_t fl = k->tcp_flags;
    int tcp = !!(k->present & FK_TCP), sctp = !!(k->present & FK_SCTP);
    unsigned chunks;

    if (lay->frag & PKT_FRAG_LATER)
        return lb_frag_translate(lb, pb, k, lay, now, len);
    if (k->present & (FK_ICMPV4 | FK_ICMPV6))
        return lb->live ? lb_icmp_translate(lb, pb, k, lay, now) : 0;
    if (!lb->live || !lb_key_of(k, &key))
        return 0;
    s = find(lb, &key, key_hash(lb, &key), now);
    if (s == NO_SLOT)
        return 0;
    e = &lb->entries[s];
    p = partner_of(lb, s);
    chunks = sctp ? sctp_summary(pb->data, lay) : 0;
    if (tcp && e->state == LB_TO_TCP_CLOSING &&
        (fl & (TCP_SYN | TCP_RST | TCP_FIN)) == TCP_SYN) {
        /* A new connection on a closed one's ports: the session is over, as conntrack
         * ends one. Either way: a client's SYN makes a new session; a SYN-ACK that
         * meets the reply side is a connection that is not the session's (the client
         * reached the pod directly from a port its VIP connection used) and must not
         * be translated as the old session's reply. */
        if (p != NO_SLOT)
            entry_free(lb, p);
        entry_free(lb, s);
        return 0;
    }
    if (sctp && e->state == LB_TO_TCP_CLOSING && (chunks & SCTP_STARTS)) {
        /* An INIT on a closed association's ports: a new session, as for TCP. */
        if (p != NO_SLOT)
            entry_free(lb, p);
        entry_free(lb, s);
        return 0;
    }
    if (sctp) {
        uint8_t st = e->state;

        if (chunks & SCTP_CLOSES)
            st = LB_TO_TCP_CLOSING;
        else if (st == LB_TO_TCP_OPENING && !(e->flags & LB_E_FORWARD))
            st = LB_TO_TCP_ESTABLISHED;     /* the pod answered (INIT ACK) */
        e->state = st;
        if (p != NO_SLOT)
            lb->entries[p].state = st;
    }
    if (tcp) {
        uint8_t st = e->state;

        if (fl & (TCP_FIN | TCP_RST))
            st = LB_TO_TCP_CLOSING;
        else if (st == LB_TO_TCP_OPENING && !(e->flags & LB_E_FORWARD) && (fl & TCP_ACK))
            st = LB_TO_TCP_ESTABLISHED;
        e->state = st;
        if (p != NO_SLOT)
            lb->entries[p].state = st;
        if (st == LB_TO_TCP_CLOSING) {
            uncount(lb, e);
            if (p != NO_SLOT)
                uncount(lb, &lb->entries[p]);
        }
    }
    e->last_ms = now;
    if (p != NO_SLOT)
        lb->entries[p].last_ms = now;
    lb_count_vip(lb, e->vip_id, len);
    lb_frag_remember(lb, pb, k, lay, now, e->flags, e->new_dst, e->new_src, e->vip_id);
    lb_rewrite(pb, k, lay, e->flags, e->new_dst, e->new_dport, e->new_src, e->new_sport);
    return 1;
}

static int starts_session(const struct flow_key *k, const uint8_t *frame,
                          const struct pkt_layout *lay)
{
    if (k->present & FK_TCP)
        return (k->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) == TCP_SYN;
    if (k->present & FK_SCTP)
        return !!(sctp_summary(frame, lay) & SCTP_STARTS);
    return !!(k->present & FK_UDP);
}

/* Inserts both entries of a new session: 1, or 0 when the table has no room for them
 * (counted: table_full, source_limited; a reply 5-tuple in use is neither). */
static int insert_session(struct lb *lb, const struct lb_entry *fwd, const struct lb_entry *rev,
                          uint64_t now)
{
    uint64_t hf = key_hash(lb, &fwd->key), hr = key_hash(lb, &rev->key);
    uint32_t sf, sr, sid, *mine = &lb->source_sessions[source_slot(lb, fwd->key.src)];
    uint32_t share = lb->n_buckets * LB_WAYS / 2 / LB_SOURCE_SHARE;

    if (*mine >= (share ? share : 1)) {
        lb->c.source_limited++;
        return 0;
    }
    /* The reply's 5-tuple taken by another session (the same client port to two VIPs
     * with the same pod): this one cannot have its replies told apart. */
    if (find(lb, &rev->key, hr, now) != NO_SLOT)
        return 0;
    if ((sf = free_slot(lb, hf, now)) == NO_SLOT) {
        lb->c.table_full++;
        return 0;
    }
    lb->entries[sf] = *fwd;          /* claimed, so free_slot cannot hand it out again */
    lb->entries[sf].flags &= (uint8_t)~LB_E_COUNTED;    /* (counted once inserted) */
    lb->entries[sf].sid = 1;
    if ((sr = free_slot(lb, hr, now)) == NO_SLOT) {
        lb->entries[sf].sid = 0;
        lb->c.table_full++;
        return 0;
    }
    sid = lb->next_sid++;
    if (!lb->next_sid)
        lb->next_sid = 1;
    lb->entries[sf].sid = sid;
    lb->entries[sf].flags |= LB_E_COUNTED;
    lb->entries[sf].partner = sr;
    lb->hashes[sf] = tag_of(hf);
    lb->entries[sr] = *rev;
    lb->entries[sr].sid = sid;
    lb->entries[sr].partner = sf;
    lb->hashes[sr] = tag_of(hr);
    lb->live += 2;
    (*mine)++;
    return 1;
}

int lb_select(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
              const struct pkt_layout *lay, uint32_t vip_id, uint64_t now, uint32_t len)
{
    struct lb_vip *v = vip_id < LB_MAX_VIPS ? lb->vips[vip_id] : NULL;
    int v6 = !!(k->present & FK_IPV6), tcp = !!(k->present & FK_TCP);
    struct lb_entry fwd, rev;
    const struct lb_pod *pod;
    struct lb_key key;
    uint32_t pi;
    int keyed;

    if (!v || !(k->present & (FK_IPV4 | FK_IPV6)) || (v->version == 6) != v6) {
        lb->c.dropped++;
        return 0;
    }
    pi = v->table[session_hash(k, v->basis) % v->new_len];
    pod = &v->pods[pi];
    keyed = lb_key_of(k, &key);
    memset(&fwd, 0, sizeof fwd);
    memset(&rev, 0, sizeof rev);
    fwd.key = key;
    fwd.flags = LB_E_DST | LB_E_FORWARD;
    memcpy(fwd.new_dst, pod->addr, 16);
    fwd.new_dport = pod->port ? pod->port : key.dport;
    if (keyed && !memcmp(pod->addr, key.src, 16)) {
        /* Hairpin: a pod reaching itself through its VIP.  Its replies would go straight
         * back to its own address, untranslated; seen from the VIP they come back. */
        fwd.flags |= LB_E_SRC;
        memcpy(fwd.new_src, lb->hairpin_set[key.v6] ? lb->hairpin_src[key.v6] : key.dst, 16);
        fwd.new_sport = key.sport;
    }
    fwd.vip_id = vip_id;
    fwd.last_ms = now;
    fwd.state = tcp || (k->present & FK_SCTP) ? LB_TO_TCP_OPENING : LB_TO_UDP;
    rev = fwd;
    rev.flags = LB_E_SRC | (fwd.flags & LB_E_SRC ? LB_E_DST : 0);
    memcpy(rev.key.src, pod->addr, 16);
    memcpy(rev.key.dst, fwd.flags & LB_E_SRC ? fwd.new_src : key.src, 16);
    rev.key.sport = fwd.new_dport;
    rev.key.dport = key.sport;
    memcpy(rev.new_src, key.dst, 16);
    rev.new_sport = key.dport;
    memcpy(rev.new_dst, key.src, 16);
    rev.new_dport = key.sport;
    if (keyed && starts_session(k, pb->data, lay) && insert_session(lb, &fwd, &rev, now) > 0) {
        lb->c.created++;
        if (lb->steer_threads > 1 && steer_ports(key.sport, key.dport) % lb->steer_threads !=
                                         steer_ports(rev.key.sport, rev.key.dport) %
                                             lb->steer_threads)
            lb->c.split++;    /* its replies reach a thread without it (steer.h) */
        v->sessions++;
        v->pod_sessions[pi]++;
    } else {
        lb->c.untracked++;
        v->untracked++;
    }
    v->packets++;
    v->bytes += len;
    lb_frag_remember(lb, pb, k, lay, now, fwd.flags, fwd.new_dst, fwd.new_src, vip_id);
    /* (no ports: a protocol without them gets the address alone) */
    lb_rewrite(pb, k, lay, fwd.flags & (LB_E_DST | LB_E_SRC), fwd.new_dst, fwd.new_dport,
            fwd.new_src, fwd.new_sport);
    return 1;
}

uint64_t lb_flush(struct lb *lb, uint32_t vip_id, const uint8_t *pod, uint32_t version,
                  uint16_t port)
{
    uint64_t n = 0;
    uint32_t s, total = lb->n_buckets * LB_WAYS;

    for (s = 0; s < total; s++) {
        struct lb_entry *e = &lb->entries[s];
        uint32_t p;

        if (!e->sid || !(e->flags & LB_E_FORWARD))
            continue;
        if (vip_id != LB_ALL_VIPS && e->vip_id != vip_id)
            continue;
        if (pod && (e->key.v6 != (version == 6) || memcmp(e->new_dst, pod, 16) ||
                    (port && e->new_dport != port)))
            continue;
        p = partner_of(lb, s);
        if (p != NO_SLOT)
            entry_free(lb, p);
        entry_free(lb, s);
        n++;
    }
    lb->c.flushed += n;
    memset(lb->frags, 0, LB_FRAG_SLOTS * sizeof *lb->frags);   /* no fragment to a flushed pod */
    lb->frags_used = 0;
    return n;
}

uint64_t lb_sessions(const struct lb *lb) { return lb->live / 2; }
