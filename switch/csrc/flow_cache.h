/* The exact-match flow cache of one datapath thread.
 *
 * What it caches: for a packet's whole flow key (struct flow_key, compared with
 * memcmp, never by hash alone), the action program the OpenFlow tables chose for it
 * and the ids of the flow entries it traversed (whose counters a hit bumps).  Like
 * VPP's sticky table it does not need to be 100% reliable: every packet it does not
 * answer goes to the slow path, which is always correct, so inserts may fail and
 * entries may be evicted without harm.
 *
 * Layout: a power-of-2 number of buckets (run time) of WAYS slots (compile time).  A
 * bucket is one 64-byte cache line holding, per way, the key's hash, the last-used
 * time, the program index and the insert epoch (parallel arrays, so a lookup touches
 * that line and, only on a hash match, the slot's out-of-line key).  Keys and flow ids
 * live out of line in `entries`; programs are interned in a fixed pool of PROG_POOL
 * reference-counted programs shared by every slot that uses the same actions (all the
 * sessions NATed to one pod share one program).
 *
 * Expiry: a slot unused for CACHE_IDLE_MS is dead; dead slots are reclaimed lazily
 * when a lookup or insert meets them (and, when the program pool is full, by a short
 * sweep of RECLAIM_BUCKETS buckets), so the table refills with live flows.
 *
 * Invalidation, lazy and O(1): a global epoch counts invalidations.  A slot remembers
 * the epoch it was inserted in; invalidate_all() and invalidate_flow(id) bump the
 * epoch and record it as the epoch of "everything" or of that flow id.  A slot is live
 * only if it was inserted no earlier than both its flow ids' and the global
 * invalidation epochs (this is the per-flow-id generation scheme, with one stamp per
 * slot instead of one per flow id).  32-bit epochs compared with wrap-around.
 *
 * Threads: a flow_cache belongs to one thread (the datapath thread, or whoever holds
 * the datapath's command lock while that thread is not running).  Other threads never
 * touch it: they queue commands.  The counters it updates live in a struct
 * cache_stats owned by the caller, which other threads may read (relaxed atomics).
 */
#ifndef KP_FLOW_CACHE_H
#define KP_FLOW_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "actions.h"
#include "flow_key.h"

#define WAYS 4
#define CACHE_IDLE_MS 10000
#define PROG_POOL 4096
#define RECLAIM_BUCKETS 64
#define MAX_IDS_PER_ENTRY 8
#define MAX_FLOW_IDS (1u << 18)
#define MAX_BUCKETS (1u << 20)

_Static_assert((WAYS & (WAYS - 1)) == 0, "WAYS must be a power of 2");

struct cache_bucket {
    uint32_t hash[WAYS];
    uint32_t used[WAYS];      /* last hit, ms on the datapath's 32-bit clock */
    uint32_t prog[WAYS];      /* index into the program pool; 0 = empty slot */
    uint32_t epoch[WAYS];     /* epoch of the insert */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct cache_bucket) == 64, "a bucket is one cache line");

struct cache_entry {          /* slot b * WAYS + w's out-of-line part */
    struct flow_key key;
    uint8_t n_ids;
    uint8_t pad[3];
    uint32_t flow_ids[MAX_IDS_PER_ENTRY];
};

struct prog_slot {
    struct action_prog prog;
    uint32_t refcnt;
    uint32_t hash;
    uint32_t next;            /* chain in the intern table */
};

struct cache_stats {          /* written by the owner, read by anyone (relaxed) */
    uint64_t hits, misses, inserts, insert_failures, evictions, expired, invalidated;
    uint64_t entries, buckets;
};

#define PROG_HASH 8192        /* intern table heads; a power of 2 >= PROG_POOL */

struct flow_cache {
    uint32_t n_buckets;
    struct cache_bucket *buckets;
    struct cache_entry *entries;
    uint32_t epoch, all_inval;
    uint32_t *flow_inval;     /* MAX_FLOW_IDS invalidation epochs */
    struct prog_slot *progs;  /* PROG_POOL + 1; index 0 means "none" */
    uint32_t prog_heads[PROG_HASH];
    uint32_t free_progs[PROG_POOL];
    uint32_t n_free;
    uint32_t reclaim_cursor;
    struct cache_stats *st;
};

/* murmur3-32 of the key's 25 words (fastpath_ref.key_hash). */
uint32_t flow_key_hash(const struct flow_key *k);

/* NULL if out of memory.  n_buckets must be a power of 2 <= MAX_BUCKETS.  Any thread
 * may build a cache; it writes nothing to st until flow_cache_adopt. */
struct flow_cache *flow_cache_new(uint32_t n_buckets, struct cache_stats *st);
void flow_cache_free(struct flow_cache *c);
/* The owner, on putting c in service: its stats now describe c (entries 0). */
void flow_cache_adopt(struct flow_cache *c);

/* A hit returns the program and sets *ent to the slot's entry (for its flow ids);
 * NULL is a miss.  Counts a hit or a miss. */
const struct action_prog *flow_cache_lookup(struct flow_cache *c, const struct flow_key *k,
                                            uint32_t hash, uint32_t now_ms,
                                            const struct cache_entry **ent,
                                            uint32_t *prog_index);

/* Lossy: false (and insert_failures++) when the program is too long or the pool is
 * full of live programs.  A full bucket evicts its least recently used way. */
bool flow_cache_insert(struct flow_cache *c, const struct flow_key *k,
                       const struct action_op *ops, uint32_t n_ops,
                       const uint32_t *flow_ids, uint32_t n_ids, uint32_t now_ms);

void flow_cache_invalidate_flow(struct flow_cache *c, uint32_t flow_id);
void flow_cache_invalidate_all(struct flow_cache *c);

/* Bucket index of a key, for tests that need collisions. */
uint32_t flow_cache_bucket_of(const struct flow_cache *c, const struct flow_key *k);

#endif
