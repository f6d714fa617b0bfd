/* The megaflow tier of the flow cache: wildcard entries below the exact-match slots.
 *
 * What it caches: (mask, key & mask) -> the action program and the flow ids of the
 * OpenFlow entries a packet traversed, the same pair an exact slot holds.  The mask is
 * what the agent's classification looked at (megaflow.py: the union of the (field, mask)
 * of every subtable its lookups probed in every table it went through, plus in_port,
 * and `present` always whole), so every packet equal to the classified one on those
 * bits gets the same answer from the tables.  One slow-path classification then serves
 * every new 5-tuple of a wildcard flow (a service's static DNAT flow, say) instead of
 * one: an exact miss probes the megaflows, and a megaflow hit also puts the exact key
 * in the exact slots (as OVS's EMC insertion), so the next packet of that 5-tuple is an
 * exact hit.
 *
 * Layout (tuple-space search, as OVS's dpcls): one subtable per distinct mask, at most
 * MF_SUBTABLES; a lookup masks the key with each subtable's mask in turn, in the
 * subtables' probe order (a hit moves its subtable one place up when it has more hits
 * than the one before it, so the busy masks are probed first), hashes the masked key
 * with the subtable's index and probes one bucket.  The buckets (MF_BUCKETS of MF_WAYS
 * slots, one 64-byte line each: hash, last use, program, subtable per way) and their
 * out-of-line entries (masked key, 64-bit insert epoch, flow ids) are one fixed table
 * shared by the subtables; nothing is allocated after the cache is built.  A masked key
 * is in at most one slot of its subtable (an insert replaces it in place); an insert
 * takes that slot, else the first free or dead way, else evicts the least recently
 * used way of the bucket.  A subtable lives while it has entries: the last entry's
 * free releases it, so masks come and go with the flows.
 *
 * Memory per megaflow: MF_BYTES_PER_FLOW = 96 (a quarter of the bucket line + the
 * 80-byte entry: 64-byte masked key, epoch, ids); the whole tier is fixed at
 * MF_BUCKETS * MF_WAYS entries (1.5 MiB) plus MF_SUBTABLES masks.
 *
 * Invalidation: exactly the exact slots' rule (flow_cache.h): an entry is live while
 * its insert epoch is no older than the global and its flow ids' invalidation epochs,
 * so invalidate_flow / invalidate_all cover megaflows too.  Entries keep the full
 * 64-bit epoch (no age sweep needed).  Dead or idle (CACHE_IDLE_MS) entries are skipped
 * by lookups and reaped by inserts: each megaflow insert first reaps MF_SWEEP_BUCKETS
 * buckets at a cursor, and a program-pool reclaim reaps RECLAIM_BUCKETS more.
 *
 * Threads: the flow cache's owner only (flow_cache.h); the counters are in its
 * struct cache_stats.  The twin is fastpath_ref.FlowCache (its _mf_* methods): same
 * hash, same slots, same probe order, same counters.
 */
#ifndef KP_MEGAFLOW_H
#define KP_MEGAFLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "flow_cache.h"
#include "flow_key.h"

#define MF_SUBTABLES 32
#define MF_BUCKETS 4096          /* a power of 2 */
#define MF_WAYS 4
#define MF_SWEEP_BUCKETS 4
#define MF_WORDS 8

_Static_assert((MF_BUCKETS & (MF_BUCKETS - 1)) == 0, "MF_BUCKETS must be a power of 2");
_Static_assert(MF_SUBTABLES <= 255, "a subtable index fits the probe order's bytes");

/* A key in megaflow form: the compact cache key's first four words (in_port, present,
 * MACs, eth_type, vlan, ip_proto, tos, tcp_flags, L4 ports, flow label), then the 16
 * bytes of nw_src and of nw_dst as struct flow_key has them (IPv4 in the first 4). */
struct mf_key {
    uint64_t w[MF_WORDS];
};

struct mf_bucket {
    uint32_t hash[MF_WAYS];
    uint32_t used[MF_WAYS];   /* last hit, ms */
    uint32_t prog[MF_WAYS];   /* program pool index; 0 = empty slot */
    uint32_t sub[MF_WAYS];    /* subtable */
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct mf_bucket) == 64, "a megaflow bucket is one cache line");

struct mf_entry {
    struct mf_key key;        /* masked */
    uint64_t epoch;           /* of the insert, 64-bit */
    uint64_t ids;             /* packed as cache_entry's */
};
#define MF_BYTES_PER_FLOW (sizeof(struct mf_bucket) / MF_WAYS + sizeof(struct mf_entry))
_Static_assert(MF_BYTES_PER_FLOW == 96, "FASTPATH.md states 96 bytes per megaflow");

struct mf_subtable {
    struct mf_key mask;
    uint64_t hits;
    uint32_t n;               /* entries; 0 = free subtable */
};

struct megaflows {
    struct mf_bucket buckets[MF_BUCKETS];
    struct mf_entry entries[MF_BUCKETS * MF_WAYS];
    struct mf_subtable subs[MF_SUBTABLES];
    uint8_t order[MF_SUBTABLES];  /* the subtables in use, in probe order */
    uint32_t n_order;
    uint32_t cursor;              /* the sweep's next bucket */
};

/* A mask blob (struct flow_key layout, each field holding its mask bits) in megaflow
 * form, present always whole; false for a mask no cacheable key can use (bits beyond
 * a field's width, a non-zero pad, ARP / neighbour-discovery fields). */
bool mf_mask_of(const struct flow_key *m, struct mf_key *out);
/* A cacheable key fk (k its cache_key_of) in megaflow form. */
void mf_key_of(const struct flow_key *fk, const struct cache_key *k, struct mf_key *out);

struct megaflows *mf_new(void);
void mf_free(struct megaflows *m);

/* The program index of the first live entry matching key in probe order (0: none);
 * sets *ids.  Counts nothing (flow_cache_lookup does). */
uint32_t mf_lookup(struct flow_cache *c, const struct mf_key *key, uint32_t now, uint64_t *ids);
/* key & mask -> program pi (held by the caller); false (mf_insert_failures) when all
 * MF_SUBTABLES are in use by other masks. */
bool mf_insert(struct flow_cache *c, const struct mf_key *key, const struct mf_key *mask,
               uint32_t pi, uint64_t ids, uint32_t now);
/* Reaps the dead and idle entries of n buckets from the cursor. */
void mf_sweep(struct flow_cache *c, uint32_t n, uint32_t now);

#endif
