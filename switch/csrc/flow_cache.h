/* The exact-match flow cache of one datapath thread.
 *
 * What it caches: for a packet's whole flow key, the action program the OpenFlow
 * tables chose for it and the ids of the flow entries it traversed (whose counters a
 * hit bumps).  Like VPP's sticky table it does not need to be 100% reliable: every
 * packet it does not answer goes to the slow path, which is always correct, so inserts
 * may fail, entries may be evicted and some keys may never be cached, without harm.
 *
 * The cached key (struct cache_key, 40 bytes) is a compact, exact re-encoding of the
 * parser's struct flow_key: every field a cacheable packet can have, no hash-only
 * compare.  IPv6 addresses are stored as indices into a reference-counted pool of
 * interned addresses (ADDR_POOL, shared by every slot that uses the address: a pod's
 * or a VIP's address by all its sessions); a lookup compares the pool's 16 bytes with
 * the packet's, so the compare is still of the whole key.  Keys the compact form
 * cannot hold are never cached (they count as misses and take the slow path): ARP and
 * IPv6 neighbour discovery packets (kp sends them to the controller anyway), in_port
 * above 0xffff, and any blob that the parser could not have produced
 * (cache_key_of() says which).  An entry holds up to MAX_IDS_PER_ENTRY (3) flow ids;
 * an insert with more fails (insert_failures).
 *
 * Memory per cached flow: 64 bytes = a quarter of the 64-byte bucket line (hash,
 * last use, program, epoch) + the 48-byte out-of-line entry (key + flow ids).  Not
 * counted (fixed per cache, independent of the number of buckets): the program pool,
 * the IPv6 address pool, the per-flow-id invalidation epochs (8 bytes each) and the
 * megaflow tier (megaflow.h: 96 bytes per megaflow, 1.5 MiB).
 *
 * Layout: a power-of-2 number of buckets (run time) of WAYS slots (compile time).  A
 * key has two candidate buckets, like OVS's EMC with its two hash positions: the first
 * is hash & (n_buckets - 1), the second is derived from the same 32-bit hash
 * (cache_alt_bucket: no second hash).  A lookup probes the first bucket's line, and
 * the second only if the key is not in the first; inserts prefer the first bucket, so
 * most hits touch one line.  Two positions turn a bucket that more than WAYS live flows
 * hash to (Poisson: at 10,000 flows in 16,384 buckets, a handful of buckets get 5+)
 * from an LRU thrash, where those flows evict each other on every packet and every
 * packet takes the slow path, into a spill to the second bucket; eviction only happens
 * when both buckets are full of live slots (the LRU of their 2 x WAYS slots).  No
 * cuckoo moves: a key never changes slot once inserted.  A key is in at most one slot.
 * A bucket is one 64-byte cache line holding, per way, the key's hash, the last-used
 * time, the program index and the insert epoch (parallel arrays, so a lookup touches
 * that line and, only on a hash match, the slot's out-of-line entry, compared as five
 * 64-bit words).  Programs are interned in a fixed pool of PROG_POOL
 * reference-counted programs shared by every slot that uses the same actions (all the
 * sessions NATed to one pod share one program).
 *
 * Expiry: a slot unused for CACHE_IDLE_MS is dead; dead slots are reclaimed lazily
 * when a lookup or insert meets them (and, when the program or address pool is full,
 * by a short sweep of RECLAIM_BUCKETS buckets), so the table refills with live flows.
 *
 * Invalidation, lazy and O(1): a global epoch counts invalidations.  A slot remembers
 * the epoch it was inserted in; invalidate_all() and invalidate_flow(id) bump the
 * epoch and record it as the epoch of "everything" or of that flow id.  A slot is live
 * only if it was inserted no earlier than both its flow ids' and the global
 * invalidation epochs (this is the per-flow-id generation scheme, with one stamp per
 * slot instead of one per flow id).
 *
 * Epochs are 64-bit and never wrap (2^64 invalidations: 584 years at 10^9 a second).
 * (With 32-bit epochs compared with wrap-around, a flow id's stamp from 2^31
 * invalidations back looked newer than every insert, so every entry with that id was
 * dead at birth: after about 17 hours at 8,000 sessions a second nothing was cached.)
 * The bucket line has room for only 32 bits of a slot's insert epoch, so it keeps the
 * low half and the full epoch is the current one minus the 32-bit distance: exact for
 * a slot younger than 2^32 invalidations.  The age sweep keeps every slot younger:
 * each invalidation looks at one bucket (age_cursor, round the table in at most
 * MAX_BUCKETS = 2^20 invalidations) and drops the slots AGE_LIMIT (2^31) or more
 * invalidations old, counted as invalidated (dropping is always safe).
 *
 * Below the exact slots is the megaflow tier (megaflow.h): an exact miss probes it, and
 * a megaflow hit inserts the exact key here.  flow_cache_lookup does both; its counters
 * say which tier answered (hits, mf_hits) or neither (misses).
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
#define MAX_IDS_PER_ENTRY 3      /* flow ids an entry holds */
#define MAX_IDS_PER_INSERT 8     /* flow ids cache_insert accepts (more: ValueError) */
#define ADDR_POOL 65536          /* distinct IPv6 addresses (shared between entries) */
#define ADDR_HASH 65536          /* address intern table heads; a power of 2 */
#define MAX_FLOW_IDS (1u << 18)
#define MAX_BUCKETS (1u << 20)

_Static_assert((WAYS & (WAYS - 1)) == 0, "WAYS must be a power of 2");

#define AGE_LIMIT (1u << 31)     /* an exact slot this many invalidations old is dropped */

struct cache_bucket {
    uint32_t hash[WAYS];
    uint32_t used[WAYS];      /* last hit, ms on the datapath's 32-bit clock */
    uint32_t prog[WAYS];      /* index into the program pool; 0 = empty slot */
    uint32_t epoch[WAYS];     /* low 32 bits of the epoch of the insert (see the top) */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct cache_bucket) == 64, "a bucket is one cache line");

/* The compact cache key (see the top): five 64-bit words, compared whole. */
struct cache_key {
    union {
        struct {
            uint16_t in_port;
            uint16_t present;     /* FK_*, never FK_ARP or FK_ND_* */
            uint8_t eth_dst[6];
            uint8_t eth_src[6];
            uint16_t eth_type;
            uint16_t vlan;        /* vlan_vid (13 bits, with OFPVID_PRESENT) | pcp << 13 */
            uint8_t ip_proto;
            uint8_t ip_tos;       /* dscp << 2 | ecn */
            uint16_t tcp_flags;
            uint16_t tp_src;
            uint16_t tp_dst;
            uint32_t ipv6_flabel;
            uint32_t nw_src;      /* IPv4 address (wire order), or IPv6 pool index */
            uint32_t nw_dst;
        };
        uint64_t w[5];
    };
};
_Static_assert(sizeof(struct cache_key) == 40, "five words");

#define IDS_BITS 21               /* three ids packed in a word; all ones = none */
#define IDS_NONE ((1u << IDS_BITS) - 1)
_Static_assert(MAX_FLOW_IDS < IDS_NONE, "a flow id fits IDS_BITS");
_Static_assert(MAX_IDS_PER_ENTRY * IDS_BITS <= 64, "the ids fit a word");

struct cache_entry {          /* slot b * WAYS + w's out-of-line part */
    struct cache_key key;
    uint64_t ids;             /* MAX_IDS_PER_ENTRY x IDS_BITS, unused ones IDS_NONE */
};
_Static_assert(sizeof(struct cache_bucket) / WAYS + sizeof(struct cache_entry) <= 64,
               "a cached flow costs at most 64 bytes");
#define BYTES_PER_FLOW (sizeof(struct cache_bucket) / WAYS + sizeof(struct cache_entry))

/* Flow id i of a packed ids word (IDS_NONE past the last). */
static inline uint32_t cache_ids_get(uint64_t ids, unsigned i)
{
    return (uint32_t)(ids >> (i * IDS_BITS)) & IDS_NONE;
}

static inline uint32_t cache_entry_id(const struct cache_entry *e, unsigned i)
{
    return cache_ids_get(e->ids, i);
}

/* n (<= MAX_IDS_PER_ENTRY) flow ids packed, the unused places IDS_NONE. */
static inline uint64_t cache_pack_ids(const uint32_t *ids, uint32_t n)
{
    uint64_t w = ~(uint64_t)0;
    uint32_t i;

    for (i = 0; i < n; i++) {
        w &= ~((uint64_t)IDS_NONE << (i * IDS_BITS));
        w |= (uint64_t)ids[i] << (i * IDS_BITS);
    }
    return w;
}

struct addr_slot {
    uint8_t addr[16];
    uint32_t refcnt;
    uint32_t hash;
    uint32_t next;            /* chain in the intern table */
    uint32_t pad;
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
    uint64_t mf_hits, mf_inserts, mf_insert_failures, mf_entries, mf_subtables;
};

struct megaflows;             /* megaflow.h */
struct mf_key;

#define PROG_HASH 8192        /* intern table heads; a power of 2 >= PROG_POOL */

struct flow_cache {
    uint32_t n_buckets;
    struct cache_bucket *buckets;
    struct cache_entry *entries;
    uint64_t epoch, all_inval;
    uint64_t *flow_inval;     /* MAX_FLOW_IDS invalidation epochs */
    uint32_t age_cursor;      /* the next bucket the age sweep looks at */
    struct megaflows *mf;
    struct prog_slot *progs;  /* PROG_POOL + 1; index 0 means "none" */
    uint32_t prog_heads[PROG_HASH];
    uint32_t free_progs[PROG_POOL];
    uint32_t n_free;
    struct addr_slot *addrs;  /* ADDR_POOL + 1; index 0 means "none" */
    uint32_t *addr_heads;     /* ADDR_HASH */
    uint32_t *free_addrs;     /* ADDR_POOL: returned indices */
    uint32_t n_free_addrs;
    uint32_t addr_top;        /* indices 1..addr_top have been handed out */
    uint32_t n_addrs;         /* live interned addresses */
    uint32_t reclaim_cursor;
    struct cache_stats *st;
};

/* The compact form of a parsed key, in k (IPv6 addresses left 0: the pool indices are
 * the cache's business).  Always fills k; true if the key is cacheable, i.e. k (with
 * the IPv6 addresses) says everything fk says (see the top). */
bool cache_key_of(const struct flow_key *fk, struct cache_key *k);

/* The hash of a key (fastpath_ref.key_hash): SipHash-1-3 under the process secret
 * (keyed_hash.h: nobody outside can aim keys at one bucket) of k's first four words
 * and then either its fifth word or, for IPv6 (v6 = fk's nw_src then nw_dst, 32
 * bytes), the four words of the addresses; low 32 bits. */
uint32_t cache_key_hash(const struct cache_key *k, const uint8_t *v6);

/* The same for a parsed key (any 100 bytes: key_hash is total). */
uint32_t flow_key_hash(const struct flow_key *k);

/* The key's second bucket: the first (hash & mask) XOR the hash's upper half rotated
 * into place with bit 0 set, so it differs from the first whenever there are two
 * buckets or more, and comes from bits the first bucket did not use (up to 2^16
 * buckets).  No second hash: the bucket line stores the hash, so it is also where a
 * slot's other position could be found. */
static inline uint32_t cache_alt_bucket(uint32_t hash, uint32_t mask)
{
    return (hash & mask) ^ ((hash >> 16 | hash << 16 | 1) & mask);
}

/* NULL if out of memory.  n_buckets must be a power of 2 <= MAX_BUCKETS.  Any thread
 * may build a cache; it writes nothing to st until flow_cache_adopt. */
struct flow_cache *flow_cache_new(uint32_t n_buckets, struct cache_stats *st);
void flow_cache_free(struct flow_cache *c);
/* The owner, on putting c in service: its stats now describe c (entries 0). */
void flow_cache_adopt(struct flow_cache *c);

/* fk the parsed key, k its cache_key_of (cacheable), v6 its IPv6 addresses (NULL
 * unless FK_IPV6), hash from cache_key_hash.  The exact slots, then the megaflows (a
 * megaflow hit also inserts the exact key).  A hit returns the program and sets *ids
 * to the entry's packed flow ids; NULL is a miss.  Counts one of hits, mf_hits,
 * misses.  The program stays valid until the next insert (the datapath runs it at
 * once).  flow_cache_miss counts a miss for a packet that is not cacheable. */
const struct action_prog *flow_cache_lookup(struct flow_cache *c, const struct flow_key *fk,
                                            const struct cache_key *k, const uint8_t *v6,
                                            uint32_t hash, uint32_t now_ms, uint64_t *ids);

void flow_cache_miss(struct flow_cache *c);

/* Lossy: false (and insert_failures++) when the key is not cacheable, the program is
 * too long, there are more than MAX_IDS_PER_ENTRY ids, or a pool (programs, IPv6
 * addresses) is full of live entries.  Where it goes: the slot already holding the key
 * (in either bucket), else the first free or dead way of the first bucket, then of the
 * second, else (both full of live slots) the least recently used way of the two, which
 * is evicted (ties: the first bucket's, the lower way).  With a mask (mf_mask_of), the
 * megaflow entry (mask, key & mask) goes in too (megaflow.h; mf_inserts or
 * mf_insert_failures).  Returns whether the exact entry went in. */
bool flow_cache_insert(struct flow_cache *c, const struct flow_key *k,
                       const struct action_op *ops, uint32_t n_ops,
                       const uint32_t *flow_ids, uint32_t n_ids, uint32_t now_ms,
                       const struct mf_key *mask);

void flow_cache_invalidate_flow(struct flow_cache *c, uint32_t flow_id);
void flow_cache_invalidate_all(struct flow_cache *c);

/* Test hook: the epoch as after n more invalidations of no entry (the age sweep then
 * covers the whole table, as n real ones would have by then). */
void flow_cache_advance_epoch(struct flow_cache *c, uint64_t n);

/* For megaflow.c: the program pool and the liveness rule both tiers share. */
void flow_cache_prog_unref(struct flow_cache *c, uint32_t pi);
bool flow_cache_ids_live(const struct flow_cache *c, uint64_t epoch, uint64_t ids);
/* The exact key fk (cacheable; k, v6, hash as for lookup) -> program pi, which the
 * caller holds; counts inserts or insert_failures. */
bool flow_cache_place(struct flow_cache *c, const struct cache_key *k, const uint8_t *v6,
                      uint32_t hash, uint32_t pi, uint64_t ids, uint32_t now_ms);

/* A key's first and second bucket indices, for tests that need collisions. */
uint32_t flow_cache_bucket_of(const struct flow_cache *c, const struct flow_key *k);
uint32_t flow_cache_alt_bucket_of(const struct flow_cache *c, const struct flow_key *k);

#endif
