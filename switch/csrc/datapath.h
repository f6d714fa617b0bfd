/* The datapath: ports, one flow cache, and the thread that moves packets.
 *
 * The datapath thread owns the receive rings, the transmit batches and the flow cache.
 * Python talks to it through two small queues, never by touching its state:
 *  - commands (insert, invalidate, resize) go down a fixed-size, mutex-protected
 *    queue that the thread drains between batches, so invalidations are applied in
 *    the order they were asked for, after the inserts queued before them;
 *  - misses come up a fixed-size byte ring (key + frame per record) with a drop
 *    counter when it is full; next_misses() waits on a condition variable.
 * While the thread is not running, whoever holds cmd_lock owns the cache and applies
 * commands at once.  Counters other threads read are relaxed atomics.  Nothing on the
 * per-packet path allocates. */
#ifndef KP_DATAPATH_H
#define KP_DATAPATH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "actions.h"
#include "flow_cache.h"
#include "flow_key.h"
#include "lb.h"
#include "megaflow.h"
#include "port_io.h"

#define MISS_RING_BYTES (8u << 20)
#define MISS_QUEUE_LEN 1024
#define CMD_QUEUE_LEN 256

struct flow_counter {
    uint64_t packets, bytes, last_hit_ns;
};

/* One queued miss, as next_misses hands it over: the frame follows the header. */
struct miss_rec {
    uint32_t rec_len;         /* header + frame, rounded up to 8 */
    uint32_t skip;            /* 1: padding to the end of the ring, not a miss */
    uint32_t in_port;
    uint32_t pkt_len;
    struct flow_key key;
};
#define MISS_HDR_LEN ((sizeof(struct miss_rec) + 7u) & ~7u)

enum cmd_kind { CMD_INSERT = 1, CMD_INVALIDATE_FLOW, CMD_INVALIDATE_ALL, CMD_SWAP_CACHE };

struct dp_cmd {
    uint32_t kind;
    uint32_t flow_id;
    uint32_t n_ops, n_ids;
    struct flow_key key;
    struct action_op ops[MAX_OPS];
    uint32_t ids[MAX_IDS_PER_INSERT];
    uint32_t has_mask;                 /* insert: the megaflow too, with mask */
    struct mf_key mask;
    struct flow_cache *cache;
};

struct datapath {
    uint32_t n_ports;
    struct dp_port *ports;
    struct flow_cache *cache;
    struct cache_stats cst;
    uint64_t parse_errors, malformed, refused, miss_queue_drops, cmd_queue_drops, mf_cmd_drops;
    struct flow_counter *counters;     /* MAX_FLOW_IDS */
    struct lb *lb;                     /* VIPs and sessions: its lock, see lb.h */

    pthread_t thread;
    int running;                       /* under cmd_lock */
    int stopping;                      /* atomic */
    int wake_fd;                       /* eventfd: commands queued, or stop */

    pthread_mutex_t cmd_lock;
    pthread_cond_t cmd_space;
    uint32_t cmd_head, cmd_count;      /* cmd_count also read without the lock */
    struct dp_cmd cmds[CMD_QUEUE_LEN];

    pthread_mutex_t miss_lock;
    pthread_cond_t miss_cv;            /* CLOCK_MONOTONIC */
    uint8_t *miss_buf;
    uint64_t miss_head, miss_tail;
    uint32_t miss_count;
};

/* NULL on error, with errno set and a message in err.  kind: every port's backend. */
struct datapath *dp_new(const uint32_t *port_nos, const char *const *ifnames, uint32_t n,
                        enum port_kind kind, uint32_t buckets, char *err, size_t errlen);
void dp_free(struct datapath *dp);
int dp_start(struct datapath *dp);   /* 0 or an errno */
void dp_stop(struct datapath *dp);

/* Waits up to timeout_ms for misses; returns a malloc'd buffer of up to max_count
 * records (count in *n, total bytes in *len), or NULL when none came. */
uint8_t *dp_next_misses(struct datapath *dp, int timeout_ms, uint32_t max_count, uint32_t *n,
                        size_t *len);

/* Lossy: a full command queue drops the insert (counted as an insert failure, and a
 * megaflow insert failure with a mask).  mask: NULL, or the megaflow's (mf_mask_of). */
void dp_cache_insert(struct datapath *dp, const struct flow_key *k,
                     const struct action_op *ops, uint32_t n_ops, const uint32_t *ids,
                     uint32_t n_ids, const struct mf_key *mask);
/* These wait for room in the queue: an invalidation is never lost. */
void dp_invalidate_flow(struct datapath *dp, uint32_t flow_id);
void dp_invalidate_all(struct datapath *dp);
int dp_set_buckets(struct datapath *dp, uint32_t buckets);   /* 0, EINVAL or ENOMEM */

/* Runs ops on a copy of frame and transmits the outputs now (any thread). */
int dp_execute(struct datapath *dp, uint32_t in_port, const uint8_t *frame, uint32_t len,
               const struct action_op *ops, uint32_t n_ops);

struct dp_port *dp_port(struct datapath *dp, uint32_t port_no);

#endif
