/* The datapath: ports, and the threads that move packets, each with its own caches.
 *
 * One to DP_MAX_THREADS datapath threads (kp-switch --threads N), the seed's
 * one-table-per-thread: each thread (struct dp_thread) owns its receive sockets (one
 * per port), its transmit batches, its flow cache (exact + megaflow), its flow
 * counters and its load balancer (VIPs and session table, lb.h).  Threads share no
 * writable state on the packet path but the miss ring (a mutex) and port counters
 * (atomics).  With several threads, each port's receive sockets form an AF_PACKET
 * fanout group whose steering program (steer.h) sends both directions of a session
 * (client -> VIP, pod -> client) to one thread, the one that holds it.  (AF_XDP takes
 * one thread: see dp_new.)
 *
 * Python talks to the threads through small queues, never by touching their state:
 *  - commands (insert, invalidate, resize) go down each thread's fixed-size,
 *    mutex-protected queue, drained between batches, so invalidations are applied in
 *    the order they were asked for, after the inserts queued before them.  Every
 *    command goes to every thread: an invalidation reaches every cache, and a
 *    slow-path answer is cached in each (with hash fanout another thread sees the same
 *    tables' answer for other 5-tuples of a megaflow);
 *  - misses come up one fixed-size byte ring (key + frame per record, and the thread
 *    that missed) with a drop counter when it is full; next_misses() waits on a
 *    condition variable.  execute() of a miss's packet takes its thread, so that a
 *    session the slow path's kp_lb makes lands in the table of the thread that will
 *    see the session's packets.
 * While a thread is not running, whoever holds its cmd_lock owns its cache and applies
 * commands at once.  Counters other threads read are relaxed atomics, and the readers
 * sum them over the threads.  Nothing on the per-packet path allocates. */
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
/* kp-switch --threads N takes 1..DP_MAX_THREADS (the module's MAX_THREADS; the one
 * place this limit is defined).  Each thread costs a flow cache, 6 MiB of flow
 * counters, a session table and a copy of the VIPs' tables. */
#define DP_MAX_THREADS 8

struct flow_counter {
    uint64_t packets, bytes, last_hit_ns;
};

/* One queued miss, as next_misses hands it over: the frame follows the header. */
struct miss_rec {
    uint32_t rec_len;         /* header + frame, rounded up to 8 */
    uint32_t skip;            /* 1: padding to the end of the ring, not a miss */
    uint32_t in_port;
    uint32_t pkt_len;
    uint32_t thread;          /* the datapath thread that missed */
    uint32_t pad;
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

struct datapath;

/* One datapath thread and everything only it touches on the packet path. */
struct dp_thread {
    struct datapath *dp;
    uint32_t index;
    struct dp_port *ports;             /* dp->n_ports: this thread's sockets on each port */
    struct flow_cache *cache;
    struct cache_stats cst;
    uint64_t parse_errors, malformed, refused, miss_queue_drops;   /* owner-written */
    struct flow_counter *counters;     /* MAX_FLOW_IDS */
    struct lb *lb;                     /* its VIPs and sessions: its lock, see lb.h */

    pthread_t thread;
    int running;                       /* under cmd_lock */
    int wake_fd;                       /* eventfd: commands queued, or stop */

    pthread_mutex_t cmd_lock;
    pthread_cond_t cmd_space;
    uint32_t cmd_head, cmd_count;      /* cmd_count also read without the lock */
    struct dp_cmd cmds[CMD_QUEUE_LEN];
};

struct datapath {
    uint32_t n_ports, n_threads;       /* n_threads: those set up (all, once made) */
    uint32_t n_threads_wanted;
    struct dp_thread *threads;         /* n_threads */
    uint64_t cmd_queue_drops, mf_cmd_drops;   /* atomics */
    int stopping;                      /* atomic */

    pthread_mutex_t miss_lock;
    pthread_cond_t miss_cv;            /* CLOCK_MONOTONIC */
    uint8_t *miss_buf;
    uint64_t miss_head, miss_tail;
    uint32_t miss_count;
};

/* NULL on error, with errno set and a message in err.  kind: every port's backend;
 * threads: 1..DP_MAX_THREADS (several only on AF_PACKET: EOPNOTSUPP on AF_XDP). */
struct datapath *dp_new(const uint32_t *port_nos, const char *const *ifnames, uint32_t n,
                        enum port_kind kind, uint32_t buckets, uint32_t threads, char *err,
                        size_t errlen);
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

/* Runs ops on a copy of frame and transmits the outputs now (any thread); a kp_lb in
 * ops makes its session in datapath thread `thread`'s table (the miss's). */
int dp_execute(struct datapath *dp, uint32_t thread, uint32_t in_port, const uint8_t *frame,
               uint32_t len, const struct action_op *ops, uint32_t n_ops);

/* A thread's socket on port_no (NULL: no such port); dp_port is thread 0's. */
struct dp_port *dp_thread_port(struct dp_thread *th, uint32_t port_no);
struct dp_port *dp_port(struct datapath *dp, uint32_t port_no);
/* With every thread's lb lock taken in thread order (lb_binding.c). */
void dp_lb_lock_all(struct datapath *dp);
void dp_lb_unlock_all(struct datapath *dp);

#endif
