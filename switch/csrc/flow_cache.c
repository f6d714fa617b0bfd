/* The flow cache (see flow_cache.h for what, why and who).  Its twin is
 * fastpath_ref.FlowCache: same hash, same slot choice, same counters, so the
 * differential tests can replay one sequence of operations on both. */
#include "flow_cache.h"

#include <stdlib.h>
#include <string.h>

#include "keyed_hash.h"
#include "megaflow.h"

#define STAT_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)

static inline uint32_t rotl32(uint32_t x, int r) { return x << r | x >> (32 - r); }

static uint32_t murmur3(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t h = 0, k;
    size_t i;

    for (i = 0; i + 4 <= len; i += 4) {
        memcpy(&k, p + i, 4);
        k *= 0xcc9e2d51;
        k = rotl32(k, 15);
        k *= 0x1b873593;
        h ^= k;
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;
    return h;
}

enum {
    CACHEABLE = FK_ETH | FK_VLAN | FK_IP | FK_IPV4 | FK_IPV6 | FK_TCP | FK_UDP | FK_ICMPV4 |
                FK_ICMPV6 | FK_SCTP,
};

bool cache_key_of(const struct flow_key *fk, struct cache_key *k)
{
    static const uint8_t zero[16];
    bool ok;

    memset(k, 0, sizeof *k);
    k->in_port = (uint16_t)fk->in_port;
    k->present = (uint16_t)fk->present;
    memcpy(k->eth_dst, fk->eth_dst, 6);
    memcpy(k->eth_src, fk->eth_src, 6);
    k->eth_type = fk->eth_type;
    k->vlan = (uint16_t)((fk->vlan_vid & 0x1fff) | (fk->vlan_pcp & 7) << 13);
    k->ip_proto = fk->ip_proto;
    k->ip_tos = (uint8_t)((fk->ip_dscp & 63) << 2 | (fk->ip_ecn & 3));
    k->tcp_flags = fk->tcp_flags;
    k->tp_src = fk->tp_src;
    k->tp_dst = fk->tp_dst;
    k->ipv6_flabel = fk->ipv6_flabel;
    if (!(fk->present & FK_IPV6)) {
        memcpy(&k->nw_src, fk->nw_src, 4);
        memcpy(&k->nw_dst, fk->nw_dst, 4);
    }
    ok = fk->in_port <= 0xffff && !(fk->present & ~(uint32_t)CACHEABLE) &&
         fk->vlan_vid <= 0x1fff && fk->vlan_pcp <= 7 && fk->ip_dscp <= 63 && fk->ip_ecn <= 3 &&
         !fk->pad && !memcmp(fk->nd_target, zero, 16) && !memcmp(fk->arp_sha, zero, 6) &&
         !memcmp(fk->arp_tha, zero, 6);
    if (ok && !(fk->present & FK_IPV6))
        ok = !memcmp(fk->nw_src + 4, zero, 12) && !memcmp(fk->nw_dst + 4, zero, 12);
    return ok;
}

uint32_t cache_key_hash(const struct cache_key *k, const uint8_t *v6)
{
    uint64_t w[8];

    memcpy(w, k->w, 4 * sizeof w[0]);
    if (v6) {
        memcpy(w + 4, v6, 32);
        return (uint32_t)siphash13(w, 8, keyed_hash_secret[0], keyed_hash_secret[1]);
    }
    w[4] = k->w[4];
    return (uint32_t)siphash13(w, 5, keyed_hash_secret[0], keyed_hash_secret[1]);
}

uint32_t flow_key_hash(const struct flow_key *fk)
{
    struct cache_key k;

    cache_key_of(fk, &k);
    return cache_key_hash(&k, (fk->present & FK_IPV6) ? fk->nw_src : NULL);
}

static uint32_t addr_hash(const uint8_t *a)
{
    uint64_t x[2];

    memcpy(x, a, sizeof x);
    /* the secret's halves swapped: another function of it than the buckets' */
    return (uint32_t)siphash13(x, 2, keyed_hash_secret[1], keyed_hash_secret[0]);
}


/* a - b on a wrapping 32-bit clock or epoch counter. */
static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

struct flow_cache *flow_cache_new(uint32_t n_buckets, struct cache_stats *st)
{
    struct flow_cache *c;
    uint32_t i;

    if (n_buckets == 0 || n_buckets > MAX_BUCKETS || (n_buckets & (n_buckets - 1)))
        return NULL;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->n_buckets = n_buckets;
    c->buckets = aligned_alloc(64, (size_t)n_buckets * sizeof *c->buckets);
    c->entries = calloc((size_t)n_buckets * WAYS, sizeof *c->entries);
    c->flow_inval = calloc(MAX_FLOW_IDS, sizeof *c->flow_inval);
    c->mf = mf_new();
    c->progs = calloc(PROG_POOL + 1, sizeof *c->progs);
    c->addrs = calloc(ADDR_POOL + 1, sizeof *c->addrs);
    c->addr_heads = calloc(ADDR_HASH, sizeof *c->addr_heads);
    c->free_addrs = calloc(ADDR_POOL, sizeof *c->free_addrs);
    if (!c->buckets || !c->entries || !c->flow_inval || !c->progs || !c->addrs ||
        !c->addr_heads || !c->free_addrs || !c->mf) {
        flow_cache_free(c);
        return NULL;
    }
    memset(c->buckets, 0, (size_t)n_buckets * sizeof *c->buckets);
    for (i = 0; i < PROG_POOL; i++)       /* popped from the end: index 1 first */
        c->free_progs[i] = PROG_POOL - i;
    c->n_free = PROG_POOL;
    c->st = st;
    return c;
}

void flow_cache_adopt(struct flow_cache *c)
{
    __atomic_store_n(&c->st->entries, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->st->buckets, c->n_buckets, __ATOMIC_RELAXED);
    __atomic_store_n(&c->st->mf_entries, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->st->mf_subtables, 0, __ATOMIC_RELAXED);
}

void flow_cache_free(struct flow_cache *c)
{
    if (!c)
        return;
    free(c->buckets);
    free(c->entries);
    free(c->flow_inval);
    free(c->progs);
    free(c->addrs);
    free(c->addr_heads);
    free(c->free_addrs);
    mf_free(c->mf);
    free(c);
}

uint32_t flow_cache_bucket_of(const struct flow_cache *c, const struct flow_key *k)
{
    return flow_key_hash(k) & (c->n_buckets - 1);
}

uint32_t flow_cache_alt_bucket_of(const struct flow_cache *c, const struct flow_key *k)
{
    return cache_alt_bucket(flow_key_hash(k), c->n_buckets - 1);
}

static void reclaim(struct flow_cache *c, uint32_t now);

/* The pool index of address a (interning it if new, reference count 0), or 0 if the
 * pool is full of addresses still referenced by live slots. */
static uint32_t addr_intern(struct flow_cache *c, const uint8_t *a, uint32_t now)
{
    uint32_t h = addr_hash(a), ai;

    for (ai = c->addr_heads[h & (ADDR_HASH - 1)]; ai; ai = c->addrs[ai].next)
        if (c->addrs[ai].hash == h && !memcmp(c->addrs[ai].addr, a, 16))
            return ai;
    if (c->n_addrs == ADDR_POOL)
        reclaim(c, now);
    if (c->n_addrs == ADDR_POOL)
        return 0;
    ai = c->n_free_addrs ? c->free_addrs[--c->n_free_addrs] : ++c->addr_top;
    memcpy(c->addrs[ai].addr, a, 16);
    c->addrs[ai].refcnt = 0;
    c->addrs[ai].hash = h;
    c->addrs[ai].next = c->addr_heads[h & (ADDR_HASH - 1)];
    c->addr_heads[h & (ADDR_HASH - 1)] = ai;
    c->n_addrs++;
    return ai;
}

static void addr_unref(struct flow_cache *c, uint32_t ai)
{
    struct addr_slot *as = &c->addrs[ai];
    uint32_t *link;

    if (--as->refcnt)
        return;
    for (link = &c->addr_heads[as->hash & (ADDR_HASH - 1)]; *link; link = &c->addrs[*link].next) {
        if (*link == ai) {
            *link = as->next;
            break;
        }
    }
    c->free_addrs[c->n_free_addrs++] = ai;
    c->n_addrs--;
}

void flow_cache_prog_unref(struct flow_cache *c, uint32_t pi)
{
    struct prog_slot *ps = &c->progs[pi];
    uint32_t *link;

    if (--ps->refcnt)
        return;
    for (link = &c->prog_heads[ps->hash & (PROG_HASH - 1)]; *link; link = &c->progs[*link].next) {
        if (*link == pi) {
            *link = ps->next;
            break;
        }
    }
    c->free_progs[c->n_free++] = pi;
}

static void free_slot(struct flow_cache *c, uint32_t bi, int w)
{
    struct cache_bucket *b = &c->buckets[bi];
    const struct cache_entry *e = &c->entries[bi * WAYS + w];
    uint32_t pi = b->prog[w];

    b->prog[w] = 0;
    STAT_ADD(c->st->entries, -1);
    flow_cache_prog_unref(c, pi);
    if (e->key.present & FK_IPV6) {
        addr_unref(c, e->key.nw_src);
        addr_unref(c, e->key.nw_dst);
    }
}

bool flow_cache_ids_live(const struct flow_cache *c, uint64_t epoch, uint64_t ids)
{
    uint32_t id;
    unsigned i;

    if (epoch < c->all_inval)
        return false;
    for (i = 0; i < MAX_IDS_PER_ENTRY && (id = cache_ids_get(ids, i)) != IDS_NONE; i++)
        if (epoch < c->flow_inval[id])
            return false;
    return true;
}

/* A slot's full insert epoch from its low 32 bits (exact below 2^32 old: see the top). */
static inline uint64_t slot_epoch(const struct flow_cache *c, uint32_t low)
{
    return c->epoch - (uint32_t)((uint32_t)c->epoch - low);
}

static bool slot_live(const struct flow_cache *c, const struct cache_bucket *b, int w,
                      const struct cache_entry *e)
{
    return flow_cache_ids_live(c, slot_epoch(c, b->epoch[w]), e->ids);
}

/* Frees slot w if it is dead (idle too long, or invalidated); true if it is free. */
static bool reap(struct flow_cache *c, uint32_t bi, int w, uint32_t now)
{
    struct cache_bucket *b = &c->buckets[bi];

    if (!b->prog[w])
        return true;
    if (sdiff(now, b->used[w]) > CACHE_IDLE_MS)
        STAT_ADD(c->st->expired, 1);
    else if (!slot_live(c, b, w, &c->entries[bi * WAYS + w]))
        STAT_ADD(c->st->invalidated, 1);
    else
        return false;
    free_slot(c, bi, w);
    return true;
}

/* Slot key a (IPv6 addresses as pool indices) against the looked-up key k (IPv6
 * addresses in v6): word compares, then the addresses through the pool. */
static inline bool key_eq(const struct flow_cache *c, const struct cache_key *a,
                          const struct cache_key *k, const uint8_t *v6)
{
    if ((a->w[0] ^ k->w[0]) | (a->w[1] ^ k->w[1]) | (a->w[2] ^ k->w[2]) |
        (a->w[3] ^ k->w[3]))
        return false;
    if (!v6)
        return a->w[4] == k->w[4];
    return !memcmp(c->addrs[a->nw_src].addr, v6, 16) &&
           !memcmp(c->addrs[a->nw_dst].addr, v6 + 16, 16);
}

void flow_cache_miss(struct flow_cache *c) { STAT_ADD(c->st->misses, 1); }

/* The way of bucket bi holding key k, or -1. */
static inline int find_way(const struct flow_cache *c, uint32_t bi, const struct cache_key *k,
                           const uint8_t *v6, uint32_t hash)
{
    const struct cache_bucket *b = &c->buckets[bi];
    int w;

    for (w = 0; w < WAYS; w++)
        if (b->prog[w] && b->hash[w] == hash &&
            key_eq(c, &c->entries[bi * WAYS + w].key, k, v6))
            return w;
    return -1;
}

/* The exact tier: the program index of the live slot holding k, or 0 (a dead one is
 * reaped).  Sets *ids. */
static uint32_t exact_lookup(struct flow_cache *c, const struct cache_key *k, const uint8_t *v6,
                             uint32_t hash, uint32_t now, uint64_t *ids)
{
    uint32_t mask = c->n_buckets - 1, bi = hash & mask, b2;
    struct cache_bucket *b;
    int w = find_way(c, bi, k, v6, hash);

    if (w < 0) {                      /* not in the first bucket: the second, if distinct */
        b2 = cache_alt_bucket(hash, mask);
        if (b2 != bi) {
            bi = b2;
            w = find_way(c, bi, k, v6, hash);
        }
    }
    /* A key is in at most one slot of its two buckets (insert sees to it), so a dead
     * one is a miss. */
    if (w < 0 || reap(c, bi, w, now))
        return 0;
    b = &c->buckets[bi];
    b->used[w] = now;
    *ids = c->entries[bi * WAYS + w].ids;
    return b->prog[w];
}

const struct action_prog *flow_cache_lookup(struct flow_cache *c, const struct flow_key *fk,
                                            const struct cache_key *k, const uint8_t *v6,
                                            uint32_t hash, uint32_t now, uint64_t *ids)
{
    struct mf_key mk;
    uint32_t pi = exact_lookup(c, k, v6, hash, now, ids);

    if (pi) {
        STAT_ADD(c->st->hits, 1);
        return &c->progs[pi].prog;
    }
    if (c->st->mf_entries) {
        mf_key_of(fk, k, &mk);
        pi = mf_lookup(c, &mk, now, ids);
    }
    if (pi) {
        STAT_ADD(c->st->mf_hits, 1);
        c->progs[pi].refcnt++;        /* held while the exact copy goes in (EMC insert) */
        flow_cache_place(c, k, v6, hash, pi, *ids, now);
        flow_cache_prog_unref(c, pi);
        return &c->progs[pi].prog;
    }
    STAT_ADD(c->st->misses, 1);
    return NULL;
}

static void reclaim(struct flow_cache *c, uint32_t now)
{
    uint32_t i, n = c->n_buckets < RECLAIM_BUCKETS ? c->n_buckets : RECLAIM_BUCKETS;
    int w;

    for (i = 0; i < n; i++) {
        uint32_t bi = c->reclaim_cursor;

        c->reclaim_cursor = (bi + 1) & (c->n_buckets - 1);
        for (w = 0; w < WAYS; w++)
            reap(c, bi, w, now);
    }
    mf_sweep(c, RECLAIM_BUCKETS, now);
}

/* The pool index of a program equal to ops (interning it if new), or 0 if the pool is
 * full of programs still referenced by live slots. */
static uint32_t intern(struct flow_cache *c, const struct action_op *ops, uint32_t n_ops,
                       uint32_t now)
{
    struct action_prog p;
    uint32_t h, pi;
    size_t sz = sizeof p.n_ops + n_ops * sizeof p.ops[0];

    memset(&p, 0, sizeof p);
    p.n_ops = n_ops;
    memcpy(p.ops, ops, n_ops * sizeof *ops);
    h = murmur3(&p, sz);
    for (pi = c->prog_heads[h & (PROG_HASH - 1)]; pi; pi = c->progs[pi].next)
        if (c->progs[pi].hash == h && !memcmp(&c->progs[pi].prog, &p, sz))
            return pi;
    if (!c->n_free)
        reclaim(c, now);
    if (!c->n_free)
        return 0;
    pi = c->free_progs[--c->n_free];
    c->progs[pi].prog = p;
    c->progs[pi].refcnt = 0;
    c->progs[pi].hash = h;
    c->progs[pi].next = c->prog_heads[h & (PROG_HASH - 1)];
    c->prog_heads[h & (PROG_HASH - 1)] = pi;
    return pi;
}

bool flow_cache_insert(struct flow_cache *c, const struct flow_key *fk,
                       const struct action_op *ops, uint32_t n_ops,
                       const uint32_t *flow_ids, uint32_t n_ids, uint32_t now,
                       const struct mf_key *mask)
{
    struct cache_key k;
    const uint8_t *v6 = (fk->present & FK_IPV6) ? fk->nw_src : NULL;
    uint32_t pi = 0;
    uint64_t ids;
    bool done;

    if (cache_key_of(fk, &k) && n_ops <= MAX_OPS && n_ids <= MAX_IDS_PER_ENTRY)
        pi = intern(c, ops, n_ops, now);
    if (!pi) {
        STAT_ADD(c->st->insert_failures, 1);
        if (mask)
            STAT_ADD(c->st->mf_insert_failures, 1);
        return false;
    }
    ids = cache_pack_ids(flow_ids, n_ids);
    c->progs[pi].refcnt++;      /* held until both inserts are done */
    done = flow_cache_place(c, &k, v6, cache_key_hash(&k, v6), pi, ids, now);
    if (mask) {
        struct mf_key mk;

        mf_key_of(fk, &k, &mk);
        mf_insert(c, &mk, mask, pi, ids, now);
    }
    flow_cache_prog_unref(c, pi);
    return done;
}

bool flow_cache_place(struct flow_cache *c, const struct cache_key *key, const uint8_t *v6,
                      uint32_t h, uint32_t pi, uint64_t ids, uint32_t now)
{
    struct cache_key k = *key;
    uint32_t bi = 0, bis[2], src = 0, dst = 0;
    struct cache_bucket *b;
    struct cache_entry *e;
    int j, nb, w, slot = -1;

    c->progs[pi].refcnt++;      /* the slot's reference */
    if (v6) {
        src = addr_intern(c, v6, now);
        if (src)
            c->addrs[src].refcnt++;
        dst = src ? addr_intern(c, v6 + 16, now) : 0;
        if (dst)
            c->addrs[dst].refcnt++;
        if (!dst) {
            if (src)
                addr_unref(c, src);
            flow_cache_prog_unref(c, pi);
            STAT_ADD(c->st->insert_failures, 1);
            return false;
        }
        k.nw_src = src;
        k.nw_dst = dst;
    }
    bis[0] = h & (c->n_buckets - 1);
    bis[1] = cache_alt_bucket(h, c->n_buckets - 1);
    nb = bis[1] == bis[0] ? 1 : 2;
    for (j = 0; j < nb && slot < 0; j++) {            /* the same key: replace in place */
        b = &c->buckets[bis[j]];
        for (w = 0; w < WAYS && slot < 0; w++) {
            const struct cache_key *o = &c->entries[bis[j] * WAYS + w].key;

            if (b->prog[w] && b->hash[w] == h && !((o->w[0] ^ k.w[0]) | (o->w[1] ^ k.w[1]) |
                                                   (o->w[2] ^ k.w[2]) | (o->w[3] ^ k.w[3]) |
                                                   (o->w[4] ^ k.w[4]))) {
                free_slot(c, bis[j], w);
                bi = bis[j];
                slot = w;
            }
        }
    }
    for (j = 0; j < nb && slot < 0; j++)              /* the first free or dead way, */
        for (w = 0; w < WAYS && slot < 0; w++)        /* first bucket first */
            if (reap(c, bis[j], w, now)) {
                bi = bis[j];
                slot = w;
            }
    if (slot < 0) {             /* all live: evict the LRU way of the two buckets */
        int32_t age, oldest = -1;

        for (j = 0; j < nb; j++) {
            b = &c->buckets[bis[j]];
            for (w = 0; w < WAYS; w++) {
                age = sdiff(now, b->used[w]);
                if (slot < 0 || age > oldest) {
                    oldest = age;
                    bi = bis[j];
                    slot = w;
                }
            }
        }
        STAT_ADD(c->st->evictions, 1);
        free_slot(c, bi, slot);
    }
    b = &c->buckets[bi];
    b->hash[slot] = h;
    b->used[slot] = now;
    b->prog[slot] = pi;
    b->epoch[slot] = (uint32_t)c->epoch;
    e = &c->entries[bi * WAYS + slot];
    e->key = k;
    e->ids = ids;
    STAT_ADD(c->st->inserts, 1);
    STAT_ADD(c->st->entries, 1);
    return true;
}

/* Drops the slots of n buckets (from age_cursor) AGE_LIMIT or more epochs old. */
static void age_sweep(struct flow_cache *c, uint32_t n)
{
    uint32_t i, bi;
    int w;

    for (i = 0; i < n; i++) {
        bi = c->age_cursor;
        c->age_cursor = (bi + 1) & (c->n_buckets - 1);
        for (w = 0; w < WAYS; w++) {
            struct cache_bucket *b = &c->buckets[bi];

            if (b->prog[w] && (uint32_t)((uint32_t)c->epoch - b->epoch[w]) >= AGE_LIMIT) {
                STAT_ADD(c->st->invalidated, 1);
                free_slot(c, bi, w);
            }
        }
    }
}

void flow_cache_invalidate_flow(struct flow_cache *c, uint32_t flow_id)
{
    if (flow_id >= MAX_FLOW_IDS)
        return;
    c->epoch++;
    c->flow_inval[flow_id] = c->epoch;
    age_sweep(c, 1);
}

void flow_cache_invalidate_all(struct flow_cache *c)
{
    c->epoch++;
    c->all_inval = c->epoch;
    age_sweep(c, 1);
}

void flow_cache_advance_epoch(struct flow_cache *c, uint64_t n)
{
    c->epoch += n;
    age_sweep(c, c->n_buckets);
}
