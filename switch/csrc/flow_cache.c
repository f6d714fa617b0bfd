/* The flow cache (see flow_cache.h for what, why and who).  Its twin is
 * fastpath_ref.FlowCache: same hash, same slot choice, same counters, so the
 * differential tests can replay one sequence of operations on both. */
#include "flow_cache.h"

#include <stdlib.h>
#include <string.h>

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

uint32_t flow_key_hash(const struct flow_key *k) { return murmur3(k, sizeof *k); }

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
    c->progs = calloc(PROG_POOL + 1, sizeof *c->progs);
    if (!c->buckets || !c->entries || !c->flow_inval || !c->progs) {
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
}

void flow_cache_free(struct flow_cache *c)
{
    if (!c)
        return;
    free(c->buckets);
    free(c->entries);
    free(c->flow_inval);
    free(c->progs);
    free(c);
}

uint32_t flow_cache_bucket_of(const struct flow_cache *c, const struct flow_key *k)
{
    return flow_key_hash(k) & (c->n_buckets - 1);
}

static void prog_unref(struct flow_cache *c, uint32_t pi)
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

static void free_slot(struct flow_cache *c, struct cache_bucket *b, int w)
{
    uint32_t pi = b->prog[w];

    b->prog[w] = 0;
    STAT_ADD(c->st->entries, -1);
    prog_unref(c, pi);
}

static bool slot_live(const struct flow_cache *c, const struct cache_bucket *b, int w,
                      const struct cache_entry *e)
{
    uint32_t ep = b->epoch[w];
    unsigned i;

    if (sdiff(ep, c->all_inval) < 0)
        return false;
    for (i = 0; i < e->n_ids; i++)
        if (sdiff(ep, c->flow_inval[e->flow_ids[i]]) < 0)
            return false;
    return true;
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
    free_slot(c, b, w);
    return true;
}

const struct action_prog *flow_cache_lookup(struct flow_cache *c, const struct flow_key *k,
                                            uint32_t hash, uint32_t now,
                                            const struct cache_entry **ent,
                                            uint32_t *prog_index)
{
    uint32_t bi = hash & (c->n_buckets - 1);
    struct cache_bucket *b = &c->buckets[bi];
    int w;

    for (w = 0; w < WAYS; w++) {
        const struct cache_entry *e = &c->entries[bi * WAYS + w];

        if (!b->prog[w] || b->hash[w] != hash || memcmp(&e->key, k, sizeof *k))
            continue;
        if (reap(c, bi, w, now))
            break;
        b->used[w] = now;
        STAT_ADD(c->st->hits, 1);
        *ent = e;
        if (prog_index)
            *prog_index = b->prog[w];
        return &c->progs[b->prog[w]].prog;
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

bool flow_cache_insert(struct flow_cache *c, const struct flow_key *k,
                       const struct action_op *ops, uint32_t n_ops,
                       const uint32_t *flow_ids, uint32_t n_ids, uint32_t now)
{
    uint32_t h, bi, pi;
    struct cache_bucket *b;
    struct cache_entry *e;
    int w, slot = -1;

    if (n_ops > MAX_OPS || n_ids > MAX_IDS_PER_ENTRY) {
        STAT_ADD(c->st->insert_failures, 1);
        return false;
    }
    pi = intern(c, ops, n_ops, now);
    if (!pi) {
        STAT_ADD(c->st->insert_failures, 1);
        return false;
    }
    c->progs[pi].refcnt++;      /* held from here on, so the frees below cannot drop it */
    h = flow_key_hash(k);
    bi = h & (c->n_buckets - 1);
    b = &c->buckets[bi];
    for (w = 0; w < WAYS && slot < 0; w++) {          /* the same key: replace in place */
        if (b->prog[w] && b->hash[w] == h &&
            !memcmp(&c->entries[bi * WAYS + w].key, k, sizeof *k)) {
            free_slot(c, b, w);
            slot = w;
        }
    }
    for (w = 0; w < WAYS && slot < 0; w++)            /* the first free or dead way */
        if (reap(c, bi, w, now))
            slot = w;
    if (slot < 0) {                                   /* all live: evict the LRU way */
        slot = 0;
        for (w = 1; w < WAYS; w++)
            if (sdiff(now, b->used[w]) > sdiff(now, b->used[slot]))
                slot = w;
        STAT_ADD(c->st->evictions, 1);
        free_slot(c, b, slot);
    }
    b->hash[slot] = h;
    b->used[slot] = now;
    b->prog[slot] = pi;
    b->epoch[slot] = c->epoch;
    e = &c->entries[bi * WAYS + slot];
    e->key = *k;
    e->n_ids = (uint8_t)n_ids;
    memset(e->flow_ids, 0, sizeof e->flow_ids);
    memcpy(e->flow_ids, flow_ids, n_ids * sizeof *flow_ids);
    STAT_ADD(c->st->inserts, 1);
    STAT_ADD(c->st->entries, 1);
    return true;
}

void flow_cache_invalidate_flow(struct flow_cache *c, uint32_t flow_id)
{
    if (flow_id >= MAX_FLOW_IDS)
        return;
    c->epoch++;
    c->flow_inval[flow_id] = c->epoch;
}

void flow_cache_invalidate_all(struct flow_cache *c)
{
    c->epoch++;
    c->all_inval = c->epoch;
}
