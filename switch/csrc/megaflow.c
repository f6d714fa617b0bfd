/* The megaflow tier (see megaflow.h for what, why and who).  Its twin is the _mf_*
 * part of fastpath_ref.FlowCache: same hash, slots, probe order and counters. */
#include "megaflow.h"

#include <stdlib.h>
#include <string.h>

#include "keyed_hash.h"

#define STAT_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

bool mf_mask_of(const struct flow_key *m, struct mf_key *out)
{
    static const uint8_t zero[16];
    struct cache_key k;

    if (m->vlan_vid > 0x1fff || m->vlan_pcp > 7 || m->ip_dscp > 63 || m->ip_ecn > 3 ||
        m->pad || memcmp(m->nd_target, zero, 16) || memcmp(m->arp_sha, zero, 6) ||
        memcmp(m->arp_tha, zero, 6))
        return false;
    memset(&k, 0, sizeof k);
    k.in_port = (uint16_t)m->in_port;     /* cacheable keys have in_port <= 0xffff */
    k.present = 0xffff;                   /* which headers: always part of the answer */
    memcpy(k.eth_dst, m->eth_dst, 6);
    memcpy(k.eth_src, m->eth_src, 6);
    k.eth_type = m->eth_type;
    k.vlan = (uint16_t)(m->vlan_vid | m->vlan_pcp << 13);
    k.ip_proto = m->ip_proto;
    k.ip_tos = (uint8_t)(m->ip_dscp << 2 | m->ip_ecn);
    k.tcp_flags = m->tcp_flags;
    k.tp_src = m->tp_src;
    k.tp_dst = m->tp_dst;
    k.ipv6_flabel = m->ipv6_flabel;
    memcpy(out->w, k.w, 4 * sizeof k.w[0]);
    memcpy(&out->w[4], m->nw_src, 16);
    memcpy(&out->w[6], m->nw_dst, 16);
    return true;
}

void mf_key_of(const struct flow_key *fk, const struct cache_key *k, struct mf_key *out)
{
    memcpy(out->w, k->w, 4 * sizeof k->w[0]);
    memcpy(&out->w[4], fk->nw_src, 16);
    memcpy(&out->w[6], fk->nw_dst, 16);
}

struct megaflows *mf_new(void)
{
    struct megaflows *m = aligned_alloc(64, sizeof *m);

    if (m)
        memset(m, 0, sizeof *m);
    return m;
}

void mf_free(struct megaflows *m) { free(m); }

static uint32_t mf_hash(uint32_t sub, const struct mf_key *k)
{
    uint64_t w[MF_WORDS + 1];

    w[0] = sub;
    memcpy(w + 1, k->w, sizeof k->w);
    return (uint32_t)siphash13(w, MF_WORDS + 1, keyed_hash_secret[0], keyed_hash_secret[1]);
}

static inline void mask_key(const struct mf_key *k, const struct mf_key *mask,
                            struct mf_key *out)
{
    int i;

    for (i = 0; i < MF_WORDS; i++)
        out->w[i] = k->w[i] & mask->w[i];
}

static inline bool key_eq(const struct mf_key *a, const struct mf_key *b)
{
    uint64_t d = 0;
    int i;

    for (i = 0; i < MF_WORDS; i++)
        d |= a->w[i] ^ b->w[i];
    return !d;
}

static void slot_free(struct flow_cache *c, uint32_t s)
{
    struct megaflows *m = c->mf;
    struct mf_bucket *b = &m->buckets[s / MF_WAYS];
    uint32_t w = s % MF_WAYS, pi = b->prog[w], sub = b->sub[w], i;

    b->prog[w] = 0;
    STAT_ADD(c->st->mf_entries, -1);
    flow_cache_prog_unref(c, pi);
    if (--m->subs[sub].n)
        return;
    for (i = 0; i < m->n_order && m->order[i] != sub; i++)   /* the last entry: the */
        ;                                                      /* subtable goes */
    if (i < m->n_order) {
        memmove(&m->order[i], &m->order[i + 1], m->n_order - i - 1);
        m->n_order--;
    }
    STAT_ADD(c->st->mf_subtables, -1);
}

static bool slot_dead(const struct flow_cache *c, uint32_t s, uint32_t now, bool *idle)
{
    const struct mf_bucket *b = &c->mf->buckets[s / MF_WAYS];
    uint32_t w = s % MF_WAYS;

    *idle = sdiff(now, b->used[w]) > CACHE_IDLE_MS;
    return *idle || !flow_cache_ids_live(c, c->mf->entries[s].epoch, c->mf->entries[s].ids);
}

/* Frees slot s if it is dead (idle too long, or invalidated); true if it is free. */
static bool reap(struct flow_cache *c, uint32_t s, uint32_t now)
{
    bool idle;

    if (!c->mf->buckets[s / MF_WAYS].prog[s % MF_WAYS])
        return true;
    if (!slot_dead(c, s, now, &idle))
        return false;
    if (idle)
        STAT_ADD(c->st->expired, 1);
    else
        STAT_ADD(c->st->invalidated, 1);
    slot_free(c, s);
    return true;
}

void mf_sweep(struct flow_cache *c, uint32_t n, uint32_t now)
{
    struct megaflows *m = c->mf;
    uint32_t i, w, bi;

    for (i = 0; i < n; i++) {
        bi = m->cursor;
        m->cursor = (bi + 1) & (MF_BUCKETS - 1);
        for (w = 0; w < MF_WAYS; w++)
            reap(c, bi * MF_WAYS + w, now);
    }
}

/* The slot of bucket bi holding masked key mk of subtable sub, or -1. */
static int find_slot(const struct megaflows *m, uint32_t bi, uint32_t sub, uint32_t h,
                     const struct mf_key *mk)
{
    const struct mf_bucket *b = &m->buckets[bi];
    int w;

    for (w = 0; w < MF_WAYS; w++)
        if (b->prog[w] && b->hash[w] == h && b->sub[w] == sub &&
            key_eq(&m->entries[bi * MF_WAYS + w].key, mk))
            return (int)(bi * MF_WAYS + w);
    return -1;
}

uint32_t mf_lookup(struct flow_cache *c, const struct mf_key *key, uint32_t now, uint64_t *ids)
{
    struct megaflows *m = c->mf;
    struct mf_key mk;
    uint32_t pos, sub, h;
    bool idle;
    int s;

    for (pos = 0; pos < m->n_order; pos++) {
        sub = m->order[pos];
        mask_key(key, &m->subs[sub].mask, &mk);
        h = mf_hash(sub, &mk);
        s = find_slot(m, h & (MF_BUCKETS - 1), sub, h, &mk);
        /* Dead entries are skipped, not reaped, so the probe order stays put. */
        if (s < 0 || slot_dead(c, (uint32_t)s, now, &idle))
            continue;
        m->buckets[s / MF_WAYS].used[s % MF_WAYS] = now;
        m->subs[sub].hits++;
        if (pos && m->subs[sub].hits > m->subs[m->order[pos - 1]].hits) {
            m->order[pos] = m->order[pos - 1];
            m->order[pos - 1] = (uint8_t)sub;
        }
        *ids = m->entries[s].ids;
        return m->buckets[s / MF_WAYS].prog[s % MF_WAYS];
    }
    return 0;
}

bool mf_insert(struct flow_cache *c, const struct mf_key *key, const struct mf_key *mask,
               uint32_t pi, uint64_t ids, uint32_t now)
{
    struct megaflows *m = c->mf;
    struct mf_key mk;
    struct mf_bucket *b;
    uint32_t i, sub = MF_SUBTABLES, h, bi, w;
    int s;

    mf_sweep(c, MF_SWEEP_BUCKETS, now);
    for (i = 0; i < m->n_order && sub == MF_SUBTABLES; i++)
        if (key_eq(&m->subs[m->order[i]].mask, mask))
            sub = m->order[i];
    if (sub == MF_SUBTABLES) {               /* a new mask: the lowest free subtable */
        for (sub = 0; sub < MF_SUBTABLES && m->subs[sub].n; sub++)
            ;
        if (sub == MF_SUBTABLES) {
            STAT_ADD(c->st->mf_insert_failures, 1);
            return false;
        }
        m->subs[sub].mask = *mask;
        m->subs[sub].hits = 0;
        m->order[m->n_order++] = (uint8_t)sub;
        STAT_ADD(c->st->mf_subtables, 1);
    }
    m->subs[sub].n++;                        /* held: the frees below cannot drop it */
    c->progs[pi].refcnt++;                   /* the slot's reference */
    mask_key(key, mask, &mk);
    h = mf_hash(sub, &mk);
    bi = h & (MF_BUCKETS - 1);
    s = find_slot(m, bi, sub, h, &mk);       /* the same entry: replaced in place */
    if (s >= 0)
        slot_free(c, (uint32_t)s);
    for (w = 0; w < MF_WAYS && s < 0; w++)   /* the first free or dead way */
        if (reap(c, bi * MF_WAYS + w, now))
            s = (int)(bi * MF_WAYS + w);
    if (s < 0) {                             /* all live: evict the LRU (ties: lower) */
        b = &m->buckets[bi];
        s = (int)(bi * MF_WAYS);
        for (w = 1; w < MF_WAYS; w++)
            if (sdiff(now, b->used[w]) > sdiff(now, b->used[s % MF_WAYS]))
                s = (int)(bi * MF_WAYS + w);
        STAT_ADD(c->st->evictions, 1);
        slot_free(c, (uint32_t)s);
    }
    b = &m->buckets[bi];
    w = (uint32_t)s % MF_WAYS;
    b->hash[w] = h;
    b->used[w] = now;
    b->prog[w] = pi;
    b->sub[w] = sub;
    m->entries[s].key = mk;
    m->entries[s].epoch = c->epoch;
    m->entries[s].ids = ids;
    STAT_ADD(c->st->mf_inserts, 1);
    STAT_ADD(c->st->mf_entries, 1);
    return true;
}
