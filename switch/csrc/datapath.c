/* The datapath thread and the queues between it and Python (see datapath.h). */
#define _GNU_SOURCE
#include "datapath.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "csum.h"
#include "parse.h"
#include "segment.h"

#define RX_BURSTS_PER_ROUND 16    /* per port, so one busy port cannot starve the others */
#define IDLE_POLL_MS 100
#define IDLE_SPIN_ROUNDS 1024     /* empty rounds before sleeping in poll: at a high rate
                                     the thread stays awake, and the sender's core is
                                     spared a wake-up per batch (AF_XDP's receive runs
                                     there, bench/run.py) */
#define ATOMIC_ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#define OWNER_ADD(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct dp_port *dp_thread_port(struct dp_thread *th, uint32_t port_no)
{
    uint32_t i;

    for (i = 0; i < th->dp->n_ports; i++)
        if (th->ports[i].port_no == port_no)
            return &th->ports[i];
    return NULL;
}

struct dp_port *dp_port(struct datapath *dp, uint32_t port_no)
{
    return dp_thread_port(&dp->threads[0], port_no);
}

void dp_lb_lock_all(struct datapath *dp)
{
    uint32_t t;

    for (t = 0; t < dp->n_threads; t++)
        lb_lock(dp->threads[t].lb);
}

void dp_lb_unlock_all(struct datapath *dp)
{
    uint32_t t;

    for (t = dp->n_threads; t-- > 0;)
        lb_unlock(dp->threads[t].lb);
}

/* ------------------------------------------------------------------ commands */

static void apply_cmd(struct dp_thread *dp, struct dp_cmd *c, uint32_t now_ms)
{
    switch (c->kind) {
    case CMD_INSERT:
        flow_cache_insert(dp->cache, &c->key, c->ops, c->n_ops, c->ids, c->n_ids, now_ms,
                          c->has_mask ? &c->mask : NULL);
        break;
    case CMD_INVALIDATE_FLOW:
        flow_cache_invalidate_flow(dp->cache, c->flow_id);
        break;
    case CMD_INVALIDATE_ALL:
        flow_cache_invalidate_all(dp->cache);
        break;
    case CMD_SWAP_CACHE:
        flow_cache_free(dp->cache);
        dp->cache = c->cache;
        flow_cache_adopt(dp->cache);
        break;
    default:
        break;
    }
}

/* Called with cmd_lock held by the cache's owner. */
static void drain_cmds_locked(struct dp_thread *dp, uint32_t now_ms)
{
    while (dp->cmd_count) {
        apply_cmd(dp, &dp->cmds[dp->cmd_head], now_ms);
        dp->cmd_head = (dp->cmd_head + 1) % CMD_QUEUE_LEN;
        __atomic_store_n(&dp->cmd_count, dp->cmd_count - 1, __ATOMIC_RELAXED);
    }
    pthread_cond_broadcast(&dp->cmd_space);
}

static uint32_t now_ms(void) { return (uint32_t)(mono_ns() / 1000000u); }

static void wake(struct dp_thread *th);

/* Session slots lb_sweep looks at per round: a few hundred nanoseconds of a round.  An
 * idle thread rounds every IDLE_POLL_MS (2,560 slots a second: the default 1,024
 * buckets are swept in under 2 s), a busy one thousands of times a second. */
#define LB_SWEEP_PER_ROUND 256u

/* Queues c for one thread (or, with that thread not running, applies it).  With wait,
 * blocks for room; without, returns -1 when the queue is full. */
static int push_cmd(struct dp_thread *dp, const struct dp_cmd *c, int wait)
{
    pthread_mutex_lock(&dp->cmd_lock);
    if (!dp->running) {
        struct dp_cmd copy = *c;

        drain_cmds_locked(dp, now_ms());
        apply_cmd(dp, &copy, now_ms());
        pthread_mutex_unlock(&dp->cmd_lock);
        return 0;
    }
    while (dp->cmd_count == CMD_QUEUE_LEN) {
        if (!wait || !dp->running) {
            pthread_mutex_unlock(&dp->cmd_lock);
            return -1;
        }
        pthread_cond_wait(&dp->cmd_space, &dp->cmd_lock);
    }
    dp->cmds[(dp->cmd_head + dp->cmd_count) % CMD_QUEUE_LEN] = *c;
    __atomic_store_n(&dp->cmd_count, dp->cmd_count + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&dp->cmd_lock);
    wake(dp);
    return 0;
}

void dp_cache_insert(struct datapath *dp, const struct flow_key *k,
                     const struct action_op *ops, uint32_t n_ops, const uint32_t *ids,
                     uint32_t n_ids, const struct mf_key *mask)
{
    struct dp_cmd c;
    uint32_t t;

    if (n_ops > MAX_OPS || n_ids > MAX_IDS_PER_INSERT) {
        ATOMIC_ADD(dp->cmd_queue_drops, 1);   /* uncacheable: counted, like a full pool */
        if (mask)
            ATOMIC_ADD(dp->mf_cmd_drops, 1);
        return;
    }
    memset(&c, 0, sizeof c);
    c.kind = CMD_INSERT;
    c.key = *k;
    c.n_ops = n_ops;
    c.n_ids = n_ids;
    memcpy(c.ops, ops, n_ops * sizeof *ops);
    memcpy(c.ids, ids, n_ids * sizeof *ids);
    if (mask) {
        c.has_mask = 1;
        c.mask = *mask;
    }
    for (t = 0; t < dp->n_threads; t++)
        if (push_cmd(&dp->threads[t], &c, 0)) {
            ATOMIC_ADD(dp->cmd_queue_drops, 1);
            if (mask)
                ATOMIC_ADD(dp->mf_cmd_drops, 1);
        }
}

void dp_invalidate_flow(struct datapath *dp, uint32_t flow_id)
{
    struct dp_cmd c = {.kind = CMD_INVALIDATE_FLOW, .flow_id = flow_id};
    uint32_t t;

    for (t = 0; t < dp->n_threads; t++)
        push_cmd(&dp->threads[t], &c, 1);
}

void dp_invalidate_all(struct datapath *dp)
{
    struct dp_cmd c = {.kind = CMD_INVALIDATE_ALL};
    uint32_t t;

    for (t = 0; t < dp->n_threads; t++)
        push_cmd(&dp->threads[t], &c, 1);
}

int dp_set_buckets(struct datapath *dp, uint32_t buckets)
{
    struct flow_cache *caches[DP_MAX_THREADS];
    struct dp_cmd c = {.kind = CMD_SWAP_CACHE};
    uint32_t t;

    if (buckets == 0 || buckets > MAX_BUCKETS || (buckets & (buckets - 1)))
        return EINVAL;
    for (t = 0; t < dp->n_threads; t++)     /* all or none */
        if (!(caches[t] = flow_cache_new(buckets, &dp->threads[t].cst))) {
            while (t-- > 0)
                flow_cache_free(caches[t]);
            return ENOMEM;
        }
    for (t = 0; t < dp->n_threads; t++) {
        c.cache = caches[t];
        push_cmd(&dp->threads[t], &c, 1);
    }
    return 0;
}

/* ------------------------------------------------------------------ misses */

static void miss_push(struct dp_thread *th, uint32_t in_port, const struct flow_key *k,
                      const uint8_t *frame, uint32_t len)
{
    struct datapath *dp = th->dp;
    size_t rec_len = (MISS_HDR_LEN + len + 7u) & ~(size_t)7u;
    size_t pos, room, pad;
    struct miss_rec *r;

    pthread_mutex_lock(&dp->miss_lock);
    pos = (size_t)(dp->miss_head % MISS_RING_BYTES);
    pad = MISS_RING_BYTES - pos < rec_len ? MISS_RING_BYTES - pos : 0;
    room = MISS_RING_BYTES - (size_t)(dp->miss_head - dp->miss_tail);
    if (dp->miss_count >= MISS_QUEUE_LEN || room < pad + rec_len) {
        pthread_mutex_unlock(&dp->miss_lock);
        ATOMIC_ADD(th->miss_queue_drops, 1);   /* execute() pushes from its thread too */
        return;
    }
    if (pad) {        /* records are contiguous: skip the ring's tail end */
        r = (struct miss_rec *)(dp->miss_buf + pos);
        r->rec_len = (uint32_t)pad;
        r->skip = 1;
        dp->miss_head += pad;
        pos = 0;
    }
    r = (struct miss_rec *)(dp->miss_buf + pos);
    r->rec_len = (uint32_t)rec_len;
    r->skip = 0;
    r->in_port = in_port;
    r->pkt_len = len;
    r->thread = th->index;
    r->pad = 0;
    r->key = *k;
    memcpy((uint8_t *)r + MISS_HDR_LEN, frame, len);
    dp->miss_head += rec_len;
    dp->miss_count++;
    pthread_cond_signal(&dp->miss_cv);
    pthread_mutex_unlock(&dp->miss_lock);
}

uint8_t *dp_next_misses(struct datapath *dp, int timeout_ms, uint32_t max_count, uint32_t *n,
                        size_t *len)
{
    struct timespec dl;
    uint8_t *out = NULL;
    uint64_t t;
    size_t total = 0;
    uint32_t i, take;

    *n = 0;
    *len = 0;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&dp->miss_lock);
    while (!dp->miss_count && timeout_ms > 0)
        if (pthread_cond_timedwait(&dp->miss_cv, &dp->miss_lock, &dl) == ETIMEDOUT)
            break;
    take = dp->miss_count < max_count ? dp->miss_count : max_count;
    /* Measure, then copy out, so the ring is released before Python builds objects. */
    for (t = dp->miss_tail, i = 0; i < take;) {
        struct miss_rec *r = (struct miss_rec *)(dp->miss_buf + t % MISS_RING_BYTES);

        if (!r->skip) {
            total += r->rec_len;
            i++;
        }
        t += r->rec_len;
    }
    if (take && (out = malloc(total))) {
        size_t o = 0;

        for (i = 0; i < take;) {
            struct miss_rec *r =
                (struct miss_rec *)(dp->miss_buf + dp->miss_tail % MISS_RING_BYTES);

            if (!r->skip) {
                memcpy(out + o, r, r->rec_len);
                o += r->rec_len;
                i++;
            }
            dp->miss_tail += r->rec_len;
        }
        dp->miss_count -= take;
        *n = take;
        *len = total;
    }
    pthread_mutex_unlock(&dp->miss_lock);
    return out;
}

/* ------------------------------------------------------------------ packets */

struct emit_ctx {
    struct dp_thread *th;
    int direct;               /* execute(): send now, from the caller's thread */
    uint32_t seg_size;        /* the sender's TCP GSO size, or 0 */
    struct dp_port *port;     /* the packet's port (the datapath thread's packets) */
    uint32_t now;
    uint64_t now_ns;
    int depth;                /* times the load balancer has handed it back */
};

static void emit_out(void *ctx_, uint32_t port_no, const uint8_t *frame, uint32_t len)
{
    struct emit_ctx *ctx = ctx_;
    struct dp_port *p = dp_thread_port(ctx->th, port_no);

    if (!p)
        return;
    if (!__atomic_load_n(&p->up, __ATOMIC_RELAXED)) {
        PSTAT_ADD(p, tx_dropped, 1);
        return;
    }
    if (ctx->direct)
        port_tx_direct(p, frame, len, ctx->seg_size);
    else
        port_tx_queue(p, frame, len, ctx->seg_size);
}

struct miss_ctx {
    struct dp_thread *th;
    uint32_t in_port;
};

static void push_segment_miss(void *ctx_, const uint8_t *seg, uint32_t len)
{
    struct miss_ctx *ctx = ctx_;
    struct flow_key k;
    struct pkt_layout lay;

    if (parse_packet(seg, len, ctx->in_port, &k, &lay) != PARSE_RUNT)
        miss_push(ctx->th, ctx->in_port, &k, seg, len);
}

static void lookup_and_run(struct emit_ctx *ctx, struct pkt_buf *pb, struct flow_key *k);

/* kp_lb: the load balancer translates the packet, which then goes through the tables
 * again (the cache first).  Only once: a program that hands a translated packet to
 * the load balancer again drops it. */
static void lb_recirculate(void *ctx_, struct pkt_buf *pb, uint32_t in_port, uint32_t vip_id)
{
    struct emit_ctx *ctx = ctx_;
    struct dp_thread *dp = ctx->th;
    struct pkt_layout lay;
    struct flow_key k;

    if (ctx->depth || parse_packet(pb->data, pb->len, in_port, &k, &lay) == PARSE_RUNT) {
        dp->lb->c.dropped++;
        return;
    }
    if (!lb_select(dp->lb, pb, &k, &lay, vip_id, ctx->now_ns / 1000000u, pb->len))
        return;
    if (ctx->direct) {    /* execute(): the slow path's thread must not touch the cache */
        miss_push(dp, in_port, &k, pb->data, pb->len);
        return;
    }
    ctx->depth++;
    lookup_and_run(ctx, pb, &k);
}

/* The cache's answer for the packet (or the slow path's, as a miss), run. */
static void lookup_and_run(struct emit_ctx *ctx, struct pkt_buf *pb, struct flow_key *k)
{
    struct dp_thread *dp = ctx->th;
    struct action_env env = {emit_out, lb_recirculate, ctx};
    const struct action_prog *prog;
    uint64_t ids = 0;
    struct cache_key ck;
    uint32_t id, port_no = ctx->port->port_no;
    unsigned i;

    if (cache_key_of(k, &ck)) {
        const uint8_t *v6 = (k->present & FK_IPV6) ? k->nw_src : NULL;

        prog = flow_cache_lookup(dp->cache, k, &ck, v6, cache_key_hash(&ck, v6), ctx->now,
                                 &ids);
    } else {
        flow_cache_miss(dp->cache);
        prog = NULL;
    }
    if (!prog) {
        /* The slow path sends frames on cut only to fit the MTU: a TCP super-frame
         * goes to it as the sender's segments instead (the last may differ in flags). */
        struct miss_ctx mc = {dp, port_no};

        if (!ctx->seg_size || !tcp_segment(pb->data, pb->len, SEG_ANY_MTU, ctx->seg_size,
                                           ctx->port->gso_buf, GSO_SCRATCH, push_segment_miss,
                                           &mc))
            miss_push(dp, port_no, k, pb->data, pb->len);
        return;
    }
    for (i = 0; i < MAX_IDS_PER_ENTRY && (id = cache_ids_get(ids, i)) != IDS_NONE; i++) {
        struct flow_counter *fc = &dp->counters[id];

        OWNER_ADD(fc->packets, 1);
        OWNER_ADD(fc->bytes, pb->len);
        __atomic_store_n(&fc->last_hit_ns, ctx->now_ns, __ATOMIC_RELAXED);
    }
    /* OP_LB ends the program: nothing reads prog after a recirculation (whose cache
     * insert may have released it). */
    actions_run(pb, port_no, prog->ops, prog->n_ops, &env);
}

/* The sender left the L4 checksum for the NIC to finish (a veth peer has checksum
 * offload): the backend said so (AF_PACKET), or cannot say and the checksum field
 * holds the pseudo-header sum (AF_XDP, csum_holds_pseudo).  Never a fragment's. */
static int csum_unfinished(const uint8_t *frame, uint32_t flags, const struct flow_key *k,
                           const struct pkt_layout *lay)
{
    int udp = !!(k->present & FK_UDP), v6 = !!(k->present & FK_IPV6);

    if (!(k->present & (FK_TCP | FK_UDP)) || lay->l3 < 0 || lay->l4 < 0 ||
        lay->l3_end < lay->l4 + (udp ? 8 : 20))
        return 0;
    if (flags & RXF_CSUM_PARTIAL)
        return 1;
    if (!(flags & RXF_CSUM_UNTOLD) || (!v6 && (rd16(frame + lay->l3 + 6) & 0x3fff)))
        return 0;
    return csum_holds_pseudo(frame + lay->l4 + (udp ? 6 : 16), frame + lay->l3 + (v6 ? 8 : 12),
                             v6 ? 32 : 8, udp ? 17 : 6, (uint32_t)(lay->l3_end - lay->l4));
}

/* csum_start, csum_offset: where the sender's virtio-net header says its partial
 * checksum is (-1: it did not say). */
static void process_frame(struct dp_thread *dp, struct dp_port *port, uint8_t *frame,
                          uint32_t len, uint32_t headroom, uint32_t flags, uint32_t seg_size,
                          uint32_t now, uint64_t now_ns, int32_t csum_start,
                          int32_t csum_offset)
{
    struct emit_ctx ctx = {dp, 0, seg_size, port, now, now_ns, 0};
    struct pkt_buf pb = {frame, len, headroom};
    struct flow_key k;
    struct pkt_layout lay;
    enum parse_result pr;

    PSTAT_ADD(port, rx_packets, 1);
    PSTAT_ADD(port, rx_bytes, len);
    pr = parse_packet(frame, len, port->port_no, &k, &lay);
    if (pr == PARSE_RUNT) {
        OWNER_ADD(dp->parse_errors, 1);
        return;
    }
    if (pr == PARSE_MALFORMED)
        OWNER_ADD(dp->malformed, 1);
    if (pr == PARSE_REFUSED) {    /* never forwarded by its outer fields (parse.h) */
        OWNER_ADD(dp->refused, 1);
        return;
    }
    /* The sender's stack left the checksum for the NIC to finish (the veth peer has
     * checksum offload): finish it where the sender said (AF_PACKET tells), or every
     * receiver would drop the packet; one pointing outside the datagram cannot be
     * finished.  AF_XDP cannot tell: csum_unfinished guesses from the field. */
    if ((flags & RXF_CSUM_PARTIAL) &&
        csum_finish_partial(frame, &k, &lay, csum_start, csum_offset)) {
        PSTAT_ADD(port, rx_errors, 1);
        return;
    }
    if (!(flags & RXF_CSUM_PARTIAL) && csum_unfinished(frame, flags, &k, &lay))
        csum_complete_partial(frame, lay.l4, lay.l3_end, !!(k.present & FK_UDP));
    /* A session's packets are translated before the tables see them (lb.h); with no
     * session in the table, not even the call. */
    if (lb_active(dp->lb))
        lb_translate(dp->lb, &pb, &k, &lay, now_ns / 1000000u, len);
    lookup_and_run(&ctx, &pb, &k);
}

struct gso_ctx {
    struct dp_thread *dp;
    struct dp_port *port;
    uint32_t flags, now;
    uint64_t now_ns;
};

static void process_datagram(void *ctx_, const uint8_t *seg, uint32_t len)
{
    struct gso_ctx *ctx = ctx_;

    /* seg is the port's gso_buf, ACTION_HEADROOM in: ours to rewrite in place. */
    process_frame(ctx->dp, ctx->port, (uint8_t *)seg, len, ACTION_HEADROOM,
                  ctx->flags & ~(uint32_t)RXF_CSUM_PARTIAL, 0, ctx->now, ctx->now_ns,
                  -1, -1);
}

/* Handles one burst of frames a port's backend handed over. */
static void process_burst(struct dp_thread *dp, struct dp_port *port,
                          struct port_rx_frame *f, uint32_t n, uint32_t now, uint64_t now_ns)
{
    int up = __atomic_load_n(&port->up, __ATOMIC_RELAXED);
    uint32_t i;

    for (i = 0; i < n; i++, f++) {
        int udp = !!(f->flags & RXF_GSO_UDP);

        if (!up) {
            PSTAT_ADD(port, rx_dropped, 1);
            continue;
        }
        if (f->gso_size && f->gso_size < SEG_MIN_SIZE) {   /* segment.h: refused, not cut */
            PSTAT_ADD(port, rx_errors, 1);
            continue;
        }
        if (f->gso_size && udp) {    /* the sender's datagrams, each switched on its own */
            struct gso_ctx g = {dp, port, f->flags, now, now_ns};

            if (udp_segment(f->data, f->len, f->gso_size, port->gso_buf + ACTION_HEADROOM,
                            GSO_SCRATCH - ACTION_HEADROOM, process_datagram, &g))
                continue;
        }
        process_frame(dp, port, f->data, f->len, f->headroom, f->flags,
                      udp ? 0 : f->gso_size, now, now_ns, f->csum_start, f->csum_offset);
    }
}

/* A port's socket reported an error: take it (so that poll does not report it again
 * at once: a busy loop), and stop polling a port whose interface is gone. */
static void port_error(struct dp_port *p, struct pollfd *pfd)
{
    int err = 0;
    socklen_t len = sizeof err;

    PSTAT_ADD(p, rx_errors, 1);
    if (getsockopt(pfd->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || (pfd->revents & POLLNVAL) ||
        err == ENXIO || err == ENODEV || (pfd->revents & POLLHUP))
        pfd->fd = -1;
}

static void *dp_thread(void *arg)
{
    struct dp_thread *dp = arg;
    uint32_t n_ports = dp->dp->n_ports;
    struct pollfd *pfd = calloc(n_ports + 1, sizeof *pfd);
    struct port_rx_frame *rx = calloc(RX_BURST, sizeof *rx);
    uint32_t i, idle = 0;

    if (!pfd || !rx) {
        free(pfd);
        free(rx);
        return NULL;
    }
    for (i = 0; i < n_ports; i++) {
        pfd[i].fd = dp->ports[i].fd;
        pfd[i].events = POLLIN | POLLERR;
    }
    pfd[n_ports].fd = dp->wake_fd;
    pfd[n_ports].events = POLLIN;
    pthread_mutex_lock(&dp->lb->lock);     /* held but while polling: see lb.h */
    while (!__atomic_load_n(&dp->dp->stopping, __ATOMIC_ACQUIRE)) {
        uint64_t now_ns = mono_ns();
        uint32_t now = (uint32_t)(now_ns / 1000000u), got = 0;

        if (__atomic_load_n(&dp->cmd_count, __ATOMIC_RELAXED)) {
            pthread_mutex_lock(&dp->cmd_lock);
            drain_cmds_locked(dp, now);
            pthread_mutex_unlock(&dp->cmd_lock);
        }
        for (i = 0; i < n_ports; i++) {
            struct dp_port *p = &dp->ports[i];
            uint32_t n, b;

            for (b = 0; b < RX_BURSTS_PER_ROUND && (n = port_rx_burst(p, rx, RX_BURST)); b++) {
                process_burst(dp, p, rx, n, now, now_ns);
                port_rx_release(p);
                got += n;
            }
        }
        for (i = 0; i < n_ports; i++)
            if (port_tx_pending(&dp->ports[i]))
                port_tx_flush(&dp->ports[i]);
        if (!got && idle < IDLE_SPIN_ROUNDS) {
            idle++;
            lb_yield(dp->lb);
        } else if (!got) {
            uint64_t v;

            idle = 0;
            pthread_mutex_unlock(&dp->lb->lock);
            if (poll(pfd, n_ports + 1, IDLE_POLL_MS) > 0) {
                if ((pfd[n_ports].revents & POLLIN) && read(dp->wake_fd, &v, sizeof v) < 0) {
                    /* EAGAIN: another reader (none) took it; nothing to do */
                }
                for (i = 0; i < n_ports; i++)
                    if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL))
                        port_error(&dp->ports[i], &pfd[i]);
            }
            pthread_mutex_lock(&dp->lb->lock);
        } else {
            idle = 0;
            lb_yield(dp->lb);
        }
        lb_sweep(dp->lb, now_ns / 1000000u, LB_SWEEP_PER_ROUND);
    }
    pthread_mutex_unlock(&dp->lb->lock);
    free(pfd);
    free(rx);
    return NULL;
}

static void wake(struct dp_thread *th)
{
    uint64_t one = 1;

    if (write(th->wake_fd, &one, sizeof one) < 0) {
        /* saturated counter: a wake is already pending */
    }
}

static void stop_threads(struct datapath *dp)
{
    uint32_t t;
    int any = 0;

    for (t = 0; t < dp->n_threads; t++) {
        pthread_mutex_lock(&dp->threads[t].cmd_lock);
        any |= dp->threads[t].running;
        pthread_mutex_unlock(&dp->threads[t].cmd_lock);
    }
    if (!any)
        return;
    __atomic_store_n(&dp->stopping, 1, __ATOMIC_RELEASE);
    for (t = 0; t < dp->n_threads; t++) {
        struct dp_thread *th = &dp->threads[t];
        int running;

        pthread_mutex_lock(&th->cmd_lock);
        running = th->running;
        pthread_mutex_unlock(&th->cmd_lock);
        if (!running)
            continue;
        wake(th);
        pthread_join(th->thread, NULL);
        pthread_mutex_lock(&th->cmd_lock);
        th->running = 0;
        drain_cmds_locked(th, now_ms());   /* the caller now owns the cache */
        pthread_mutex_unlock(&th->cmd_lock);
    }
}

/* All threads or none. */
int dp_start(struct datapath *dp)
{
    uint32_t t;
    int r = 0;

    __atomic_store_n(&dp->stopping, 0, __ATOMIC_RELEASE);
    for (t = 0; t < dp->n_threads && !r; t++) {
        struct dp_thread *th = &dp->threads[t];

        pthread_mutex_lock(&th->cmd_lock);
        if (!th->running) {
            r = pthread_create(&th->thread, NULL, dp_thread, th);
            if (!r)
                th->running = 1;
        }
        pthread_mutex_unlock(&th->cmd_lock);
    }
    if (r)
        stop_threads(dp);
    return r;
}

void dp_stop(struct datapath *dp)
{
    stop_threads(dp);
}

/* ------------------------------------------------------------------ execute */

int dp_execute(struct datapath *dp, uint32_t thread, uint32_t in_port, const uint8_t *frame,
               uint32_t len, const struct action_op *ops, uint32_t n_ops)
{
    struct dp_thread *th = &dp->threads[thread < dp->n_threads ? thread : 0];
    struct emit_ctx ctx = {th, 1, 0, NULL, 0, mono_ns(), 0};
    struct action_env env = {emit_out, lb_recirculate, &ctx};
    struct pkt_buf pb;
    uint8_t *buf = malloc((size_t)len + ACTION_HEADROOM);   /* slow path */
    int lb = 0;
    uint32_t i;

    for (i = 0; i < n_ops; i++)
        lb |= ops[i].kind == OP_LB;

    if (!buf)
        return ENOMEM;
    memcpy(buf + ACTION_HEADROOM, frame, len);
    pb.data = buf + ACTION_HEADROOM;
    pb.len = len;
    pb.headroom = ACTION_HEADROOM;
    if (lb)
        lb_lock(th->lb);
    actions_run(&pb, in_port, ops, n_ops, &env);
    if (lb)
        lb_unlock(th->lb);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ life cycle */

static int thread_init(struct datapath *dp, uint32_t t, uint32_t buckets)
{
    struct dp_thread *th = &dp->threads[t];

    th->dp = dp;
    th->index = t;
    pthread_mutex_init(&th->cmd_lock, NULL);
    pthread_cond_init(&th->cmd_space, NULL);
    th->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    th->ports = calloc(dp->n_ports ? dp->n_ports : 1, sizeof *th->ports);
    th->counters = calloc(MAX_FLOW_IDS, sizeof *th->counters);
    th->cache = flow_cache_new(buckets, &th->cst);
    th->lb = lb_new(LB_DEFAULT_BUCKETS);
    if (th->wake_fd < 0 || !th->ports || !th->counters || !th->cache || !th->lb)
        return -1;
    th->lb->steer_threads = dp->n_threads_wanted;
    flow_cache_adopt(th->cache);
    return 0;
}

static void thread_free(struct dp_thread *th, uint32_t n_open)
{
    uint32_t i;

    for (i = 0; th->ports && i < n_open; i++)
        port_close(&th->ports[i]);
    if (th->wake_fd >= 0)
        close(th->wake_fd);
    flow_cache_free(th->cache);
    lb_free(th->lb);
    free(th->ports);
    free(th->counters);
    pthread_mutex_destroy(&th->cmd_lock);
    pthread_cond_destroy(&th->cmd_space);
}

struct datapath *dp_new(const uint32_t *port_nos, const char *const *ifnames, uint32_t n,
                        enum port_kind kind, uint32_t buckets, uint32_t threads, char *err,
                        size_t errlen)
{
    struct datapath *dp;
    pthread_condattr_t ca;
    uint32_t i, t;
    int failed = 0;

    if (threads < 1 || threads > DP_MAX_THREADS) {
        snprintf(err, errlen, "%u datapath threads: want 1..%u", threads, DP_MAX_THREADS);
        errno = EINVAL;
        return NULL;
    }
    /* AF_XDP takes one thread: an XSK receives one queue, and the queue a frame comes
     * in on is the sender's choice (a veth peer's transmit queue follows its socket's
     * random hash), so a session's two directions could reach two threads.  That
     * needs symmetric RSS or a hand-off between threads (FASTPATH.md, "Threads"). */
    if (kind == PORT_AFXDP && threads > 1) {
        snprintf(err, errlen, "AF_XDP ports take one datapath thread, not %u (several threads "
                 "run on AF_PACKET fanout)", threads);
        errno = EOPNOTSUPP;
        return NULL;
    }
    dp = calloc(1, sizeof *dp);
    if (!dp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&dp->miss_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dp->miss_cv, &ca);
    pthread_condattr_destroy(&ca);
    dp->n_ports = n;
    dp->n_threads_wanted = threads;
    dp->miss_buf = malloc(MISS_RING_BYTES);
    dp->threads = calloc(threads, sizeof *dp->threads);
    if (dp->threads)
        for (t = 0; t < threads; t++)
            dp->threads[t].wake_fd = -1;
    for (t = 0; dp->threads && t < threads && !failed; t++) {
        dp->n_threads = t + 1;
        failed = thread_init(dp, t, buckets);
    }
    if (!dp->miss_buf || !dp->threads || failed) {
        snprintf(err, errlen, "out of memory");
        dp->n_ports = 0;       /* none opened yet */
        dp_free(dp);
        errno = ENOMEM;
        return NULL;
    }
    /* Thread t's socket on every port; with several threads each port's sockets form
     * one fanout group (port_open: the first creates it). */
    for (i = 0; i < n; i++) {
        int group = threads > 1 ? 0 : -1;

        for (t = 0; t < threads; t++) {
            struct dp_port *p = &dp->threads[t].ports[i];

            if (port_open(p, kind, port_nos[i], ifnames[i], group, err, errlen)) {
                int e = errno;

                dp->n_ports = i;       /* thread_free closes the ports fully open */
                for (; t-- > 0;)
                    port_close(&dp->threads[t].ports[i]);
                dp_free(dp);
                errno = e;
                return NULL;
            }
            group = p->fanout;
        }
    }
    return dp;
}

void dp_free(struct datapath *dp)
{
    uint32_t t;

    if (!dp)
        return;
    if (dp->threads) {
        dp_stop(dp);
        for (t = 0; t < dp->n_threads; t++)
            thread_free(&dp->threads[t], dp->n_ports);
    }
    free(dp->threads);
    free(dp->miss_buf);
    pthread_mutex_destroy(&dp->miss_lock);
    pthread_cond_destroy(&dp->miss_cv);
    free(dp);
}
