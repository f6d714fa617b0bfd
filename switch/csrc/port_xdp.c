/* Port I/O on AF_XDP (port_io.h's second backend), on the raw socket and bpf(2) API:
 * no libxdp or libbpf.
 *
 * Per port: a UMEM of XDP_FRAMES chunks of XDP_FRAME bytes, the first half given to
 * the kernel on the fill ring for receiving, the second half kept on a free stack for
 * transmitting (a chunk comes back to it through the completion ring once sent).
 * Receive reads descriptors off the rx ring in bursts and hands the chunks back on the
 * fill ring at rx_release; transmit copies each output into a free chunk (one packet
 * may be output several times with different rewrites in between, as on AF_PACKET)
 * and makes a batch visible on the tx ring with one store, then one sendto when the
 * kernel wants a wake-up (always in copy mode).
 *
 * The XDP program is ours, six instructions: redirect the frame to the XSKMAP entry of
 * its receive queue (our socket), or let the kernel have it when the entry is empty.
 * It is attached through a BPF link: the attachment belongs to the link's file
 * descriptor, so the kernel detaches the program when the port closes, when the
 * process exits and when it is killed (a crashed test leaves no program behind).
 * Native (driver) mode first, generic (skb) mode when the driver has none; zero copy
 * when the driver offers it, copy mode otherwise (veth: native, copy).
 *
 * What AF_XDP does not tell (see switch/FASTPATH.md, "AF_XDP ports"):
 *  - checksum state: a frame whose sender left its L4 checksum to offload arrives
 *    unfinished with no flag saying so; frames are marked RXF_CSUM_UNTOLD and the
 *    datapath finishes a checksum whose field holds the pseudo-header sum;
 *  - GSO: none; frames are at most a chunk.  Native XDP on a veth turns the peer's
 *    segmentation offloads off itself; in generic mode, a GRO or TSO super-frame does
 *    not fit a chunk and the kernel drops it (the peer needs tso/gso off);
 *  - VLAN offload: a tag the sender's driver carried out of band (a veth's
 *    tx-vlan-offload) is not in the frame XDP sees. */
#define _GNU_SOURCE
#include "port_io.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "actions.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define XDP_UMEM_LEN ((size_t)XDP_FRAMES * XDP_FRAME)
#define XDP_BUSY_TRIES 50         /* binds to a queue still busy, XDP_BUSY_WAIT_MS apart */
#define XDP_BUSY_WAIT_MS 10
#define XDP_KICK_TRIES 8          /* sendto calls per flush at most (copy mode sends
                                     32 frames per call) */

static int sys_bpf(int cmd, union bpf_attr *attr)
{
    return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

static int close_fd(int fd)
{
    if (fd >= 0)
        close(fd);
    return -1;
}

static void ring_unmap(struct xdp_ring *r)
{
    if (r->map)
        munmap(r->map, r->map_len);
    memset(r, 0, sizeof *r);
}

static void xdp_close(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;

    /* The link first: no frame is steered to a socket that is going away. */
    x->link_fd = close_fd(x->link_fd);
    x->prog_fd = close_fd(x->prog_fd);
    x->map_fd = close_fd(x->map_fd);
    ring_unmap(&x->rx);
    ring_unmap(&x->tx);
    ring_unmap(&x->fill);
    ring_unmap(&x->comp);
    p->fd = close_fd(p->fd);
    if (x->umem)
        munmap(x->umem, XDP_UMEM_LEN);
    x->umem = NULL;
}

static int fail(struct dp_port *p, char *err, size_t errlen, const char *what)
{
    int e = errno;

    snprintf(err, errlen, "%s: AF_XDP: %s: %s", p->ifname, what, strerror(e));
    xdp_close(p);
    errno = e;
    return -1;
}

static int ring_map(int fd, struct xdp_ring *r, const struct xdp_ring_offset *off,
                    uint32_t n, size_t entry, off_t pgoff)
{
    r->map_len = off->desc + (size_t)n * entry;
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                  pgoff);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        return -1;
    }
    r->producer = (uint32_t *)((uint8_t *)r->map + off->producer);
    r->consumer = (uint32_t *)((uint8_t *)r->map + off->consumer);
    r->flags = (uint32_t *)((uint8_t *)r->map + off->flags);
    r->ring = (uint8_t *)r->map + off->desc;
    r->size = n;
    r->mask = n - 1;
    return 0;
}

/* The socket, its UMEM registration, its four rings, bound to queue 0 with bind_flags.
 * -1 with errno and *what set. */
static int xsk_setup(struct dp_port *p, uint16_t bind_flags, const char **what)
{
    struct xdp_state *x = &p->u.xdp;
    struct xdp_umem_reg reg;
    struct xdp_mmap_offsets off;
    struct sockaddr_xdp sxdp;
    socklen_t optlen = sizeof off;
    uint32_t n;

    *what = "socket(AF_XDP)";
    p->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        return -1;
    memset(&reg, 0, sizeof reg);
    reg.addr = (uint64_t)(uintptr_t)x->umem;
    reg.len = XDP_UMEM_LEN;
    reg.chunk_size = XDP_FRAME;
    reg.headroom = 0;         /* XDP_PACKET_HEADROOM is before each frame already */
    *what = "XDP_UMEM_REG";
    if (setsockopt(p->fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg))
        return -1;
    *what = "ring sizes";
    n = XDP_RX_FRAMES;
    if (setsockopt(p->fd, SOL_XDP, XDP_UMEM_FILL_RING, &n, sizeof n) ||
        setsockopt(p->fd, SOL_XDP, XDP_RX_RING, &n, sizeof n))
        return -1;
    n = XDP_TX_FRAMES;
    if (setsockopt(p->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &n, sizeof n) ||
        setsockopt(p->fd, SOL_XDP, XDP_TX_RING, &n, sizeof n))
        return -1;
    *what = "XDP_MMAP_OFFSETS";
    if (getsockopt(p->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
        return -1;
    *what = "mmap rings";
    if (ring_map(p->fd, &x->rx, &off.rx, XDP_RX_FRAMES, sizeof(struct xdp_desc),
                 XDP_PGOFF_RX_RING) ||
        ring_map(p->fd, &x->tx, &off.tx, XDP_TX_FRAMES, sizeof(struct xdp_desc),
                 XDP_PGOFF_TX_RING) ||
        ring_map(p->fd, &x->fill, &off.fr, XDP_RX_FRAMES, sizeof(uint64_t),
                 XDP_UMEM_PGOFF_FILL_RING) ||
        ring_map(p->fd, &x->comp, &off.cr, XDP_TX_FRAMES, sizeof(uint64_t),
                 XDP_UMEM_PGOFF_COMPLETION_RING))
        return -1;
    memset(&sxdp, 0, sizeof sxdp);
    sxdp.sxdp_family = AF_XDP;
    sxdp.sxdp_ifindex = (uint32_t)p->ifindex;
    sxdp.sxdp_queue_id = 0;
    sxdp.sxdp_flags = bind_flags;
    /* A socket closed on this queue a moment ago holds it until the kernel's deferred
     * release has run (a restart, or "auto" after a refusal): wait for that a little. */
    *what = "bind";
    for (n = 0; bind(p->fd, (struct sockaddr *)&sxdp, sizeof sxdp); n++) {
        struct timespec ts = {0, XDP_BUSY_WAIT_MS * 1000000L};

        if (errno != EBUSY || n == XDP_BUSY_TRIES)
            return -1;
        nanosleep(&ts, NULL);
    }
    x->bind_flags = bind_flags;
    return 0;
}

static void xsk_teardown(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;

    ring_unmap(&x->rx);
    ring_unmap(&x->tx);
    ring_unmap(&x->fill);
    ring_unmap(&x->comp);
    p->fd = close_fd(p->fd);
}

/* The number of receive queues the interface uses, from sysfs. */
static uint32_t rx_queues(const char *ifname)
{
    char path[96];
    uint32_t n = 0;

    for (;;) {
        snprintf(path, sizeof path, "/sys/class/net/%s/queues/rx-%u", ifname, n);
        if (access(path, F_OK))
            return n ? n : 1;
        n++;
    }
}

static int load_prog(struct dp_port *p, char *log, size_t loglen)
{
    struct xdp_state *x = &p->u.xdp;
    struct bpf_insn prog[] = {
        /* r2 = ctx->rx_queue_index */
        {BPF_LDX | BPF_MEM | BPF_W, 2, 1, (int16_t)offsetof(struct xdp_md, rx_queue_index), 0},
        /* r1 = the XSKMAP (a two-slot load of the map's fd) */
        {BPF_LD | BPF_DW | BPF_IMM, 1, BPF_PSEUDO_MAP_FD, 0, x->map_fd},
        {0, 0, 0, 0, 0},
        /* r3 = what to do when the queue has no socket: let the kernel have it */
        {BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS},
        {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    union bpf_attr a;

    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = sizeof prog / sizeof prog[0];
    a.license = (uint64_t)(uintptr_t)"GPL";
    a.log_buf = (uint64_t)(uintptr_t)log;
    a.log_size = (uint32_t)loglen;
    a.log_level = 1;
    snprintf(a.prog_name, sizeof a.prog_name, "kp_xsk_redir");
    log[0] = 0;
    x->prog_fd = sys_bpf(BPF_PROG_LOAD, &a);
    return x->prog_fd < 0 ? -1 : 0;
}

static int attach(struct dp_port *p, uint32_t mode)
{
    struct xdp_state *x = &p->u.xdp;
    union bpf_attr a;

    memset(&a, 0, sizeof a);
    a.link_create.prog_fd = (uint32_t)x->prog_fd;
    a.link_create.target_ifindex = (uint32_t)p->ifindex;
    a.link_create.attach_type = BPF_XDP;
    a.link_create.flags = mode;
    x->link_fd = sys_bpf(BPF_LINK_CREATE, &a);
    if (x->link_fd < 0)
        return -1;
    x->attach_flags = mode;
    return 0;
}

static int xdp_open(struct dp_port *p, char *err, size_t errlen)
{
    struct xdp_state *x = &p->u.xdp;
    union bpf_attr a;
    uint32_t key = 0, nq, i;
    int val, e_drv;
    const char *what;
    char log[512];

    x->prog_fd = x->map_fd = x->link_fd = p->fd = -1;
    nq = rx_queues(p->ifname);
    if (nq > 1) {
        errno = EOPNOTSUPP;
        snprintf(err, errlen, "%s: AF_XDP: %u receive queues; kp-switch's AF_XDP port binds "
                 "queue 0 only (ethtool -L %s rx 1)", p->ifname, nq, p->ifname);
        return -1;
    }
    if (p->mtu + 14 + 8 > XDP_FRAME - XDP_PACKET_HEADROOM) {
        errno = EMSGSIZE;
        snprintf(err, errlen, "%s: AF_XDP: MTU %u does not fit a %u-byte frame", p->ifname,
                 p->mtu, XDP_FRAME);
        return -1;
    }
    x->umem = mmap(NULL, XDP_UMEM_LEN, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (x->umem == MAP_FAILED) {
        x->umem = NULL;
        return fail(p, err, errlen, "mmap UMEM");
    }
    /* Zero copy where the driver offers it; a refusal leaves a socket that cannot be
     * bound again, so copy mode starts over on a new one. */
    if (xsk_setup(p, XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP, &what)) {
        xsk_teardown(p);
        if (xsk_setup(p, XDP_COPY | XDP_USE_NEED_WAKEUP, &what))
            return fail(p, err, errlen, what);
    }
    /* Every receive chunk to the kernel; the fill ring holds them all. */
    for (i = 0; i < XDP_RX_FRAMES; i++)
        ((uint64_t *)x->fill.ring)[i] = (uint64_t)i * XDP_FRAME;
    __atomic_store_n(x->fill.producer, XDP_RX_FRAMES, __ATOMIC_RELEASE);
    for (i = 0; i < XDP_TX_FRAMES; i++)
        x->tx_free[i] = (uint64_t)(XDP_RX_FRAMES + i) * XDP_FRAME;
    x->n_free = XDP_TX_FRAMES;
    x->rx_cons = __atomic_load_n(x->rx.consumer, __ATOMIC_RELAXED);
    x->tx_prod = __atomic_load_n(x->tx.producer, __ATOMIC_RELAXED);

    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_XSKMAP;
    a.key_size = sizeof key;
    a.value_size = sizeof val;
    a.max_entries = 1;
    snprintf(a.map_name, sizeof a.map_name, "kp_xsks");
    x->map_fd = sys_bpf(BPF_MAP_CREATE, &a);
    if (x->map_fd < 0)
        return fail(p, err, errlen, "BPF_MAP_CREATE (XSKMAP; needs root)");
    val = p->fd;
    memset(&a, 0, sizeof a);
    a.map_fd = (uint32_t)x->map_fd;
    a.key = (uint64_t)(uintptr_t)&key;
    a.value = (uint64_t)(uintptr_t)&val;
    a.flags = BPF_ANY;
    if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a))
        return fail(p, err, errlen, "XSKMAP update");
    if (load_prog(p, log, sizeof log)) {
        int e = errno;

        snprintf(err, errlen, "%s: AF_XDP: loading the XDP program: %s%s%.200s", p->ifname,
                 strerror(e), log[0] ? ": " : "", log);
        xdp_close(p);
        errno = e;
        return -1;
    }
    if (attach(p, XDP_FLAGS_DRV_MODE)) {
        e_drv = errno;
        if (attach(p, XDP_FLAGS_SKB_MODE)) {
            int e = errno;

            snprintf(err, errlen, "%s: AF_XDP: attaching the XDP program: native: %s; "
                     "generic: %s", p->ifname, strerror(e_drv), strerror(e));
            xdp_close(p);
            errno = e;
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ receive */

static uint32_t xdp_rx_burst(struct dp_port *p, struct port_rx_frame *out, uint32_t max)
{
    struct xdp_state *x = &p->u.xdp;
    uint32_t avail = __atomic_load_n(x->rx.producer, __ATOMIC_ACQUIRE) - x->rx_cons;
    uint32_t n = 0, i;

    if (max > RX_BURST)
        max = RX_BURST;
    if (avail > max)
        avail = max;
    for (i = 0; i < avail; i++) {
        const struct xdp_desc *d =
            &((const struct xdp_desc *)x->rx.ring)[(x->rx_cons + i) & x->rx.mask];
        uint64_t chunk = d->addr & ~(uint64_t)(XDP_FRAME - 1);
        uint64_t off = d->addr - chunk;

        x->rx_addrs[i] = chunk;
        /* The kernel's word, checked all the same: a chunk of ours, the frame in it. */
        if (chunk >= (uint64_t)XDP_RX_FRAMES * XDP_FRAME || off + d->len > XDP_FRAME ||
            d->len < 14) {
            PSTAT_ADD(p, rx_errors, 1);
            if (chunk >= (uint64_t)XDP_RX_FRAMES * XDP_FRAME)
                x->rx_addrs[i] = UINT64_MAX;     /* not ours: not given back */
            continue;
        }
        out[n].data = x->umem + d->addr;
        out[n].len = d->len;
        out[n].headroom = (uint32_t)off;
        out[n].flags = RXF_CSUM_UNTOLD;
        out[n].gso_size = 0;
        out[n].csum_start = out[n].csum_offset = -1;
        n++;
    }
    x->rx_held = avail;
    return n;
}

static void xdp_rx_release(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;
    uint32_t prod, i, n = 0;

    if (!x->rx_held)
        return;
    /* The fill ring has room for every receive chunk, so for all of these. */
    prod = __atomic_load_n(x->fill.producer, __ATOMIC_RELAXED);
    for (i = 0; i < x->rx_held; i++)
        if (x->rx_addrs[i] != UINT64_MAX)
            ((uint64_t *)x->fill.ring)[(prod + n++) & x->fill.mask] = x->rx_addrs[i];
    x->rx_cons += x->rx_held;
    __atomic_store_n(x->rx.consumer, x->rx_cons, __ATOMIC_RELEASE);
    __atomic_store_n(x->fill.producer, prod + n, __ATOMIC_RELEASE);
    x->rx_held = 0;
    if (__atomic_load_n(x->fill.flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP)
        (void)recvfrom(p->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* ------------------------------------------------------------------ transmit */

/* Chunks the kernel has finished sending, back on the free stack. */
static void reclaim(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;
    uint32_t cons = __atomic_load_n(x->comp.consumer, __ATOMIC_RELAXED);
    uint32_t n = __atomic_load_n(x->comp.producer, __ATOMIC_ACQUIRE) - cons, i;

    for (i = 0; i < n; i++) {
        uint64_t a = ((const uint64_t *)x->comp.ring)[(cons + i) & x->comp.mask];

        a &= ~(uint64_t)(XDP_FRAME - 1);
        if (a >= (uint64_t)XDP_RX_FRAMES * XDP_FRAME && a < XDP_UMEM_LEN &&
            x->n_free < XDP_TX_FRAMES)
            x->tx_free[x->n_free++] = a;
    }
    __atomic_store_n(x->comp.consumer, cons + n, __ATOMIC_RELEASE);
}

static void kick(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;
    int i;

    if (!(x->bind_flags & XDP_COPY) &&
        !(__atomic_load_n(x->tx.flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP))
        return;
    /* Copy mode sends a bounded number of frames per call, and says EAGAIN when it
     * left some (or the device was busy); the next flush goes on with the rest. */
    for (i = 0; i < XDP_KICK_TRIES; i++) {
        if (__atomic_load_n(x->tx.consumer, __ATOMIC_ACQUIRE) == x->tx_prod)
            break;
        if (sendto(p->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
            continue;
        if (errno != EAGAIN && errno != EINTR)
            break;            /* EBUSY, ENOBUFS, ENETDOWN: later */
    }
}

static void xdp_tx_flush(struct dp_port *p)
{
    struct xdp_state *x = &p->u.xdp;

    if (x->tx_queued) {
        x->tx_prod += x->tx_queued;
        x->tx_queued = 0;
        __atomic_store_n(x->tx.producer, x->tx_prod, __ATOMIC_RELEASE);
    }
    kick(p);
    reclaim(p);
}

static void xdp_tx_one(struct dp_port *p, const uint8_t *frame, uint32_t len)
{
    struct xdp_state *x = &p->u.xdp;
    struct xdp_desc *d;
    uint64_t a;

    if (len > XDP_FRAME) {
        PSTAT_ADD(p, tx_errors, 1);
        return;
    }
    if (!x->n_free)
        reclaim(p);
    if (!x->n_free) {
        xdp_tx_flush(p);
        if (!x->n_free) {
            PSTAT_ADD(p, tx_dropped, 1);
            return;
        }
    }
    a = x->tx_free[--x->n_free];
    memcpy(x->umem + a, frame, len);
    /* Every transmit chunk is free, queued or with the kernel, and the tx ring has a
     * slot for each: it cannot be full here. */
    d = &((struct xdp_desc *)x->tx.ring)[(x->tx_prod + x->tx_queued) & x->tx.mask];
    d->addr = a;
    d->len = len;
    d->options = 0;
    x->tx_queued++;
    PSTAT_ADD(p, tx_packets, 1);
    PSTAT_ADD(p, tx_bytes, len);
    if (x->tx_queued == TX_BATCH)
        xdp_tx_flush(p);
}

/* Queued frames, or frames the kernel has not taken yet (copy mode takes them only in
 * a sendto): both want a flush. */
static int xdp_tx_pending(const struct dp_port *p)
{
    const struct xdp_state *x = &p->u.xdp;

    return x->tx_queued || __atomic_load_n(x->tx.consumer, __ATOMIC_RELAXED) != x->tx_prod ||
           x->n_free < XDP_TX_FRAMES;
}

static void xdp_describe(const struct dp_port *p, char *buf, size_t len)
{
    const struct xdp_state *x = &p->u.xdp;

    snprintf(buf, len, "afxdp %s %s",
             x->attach_flags == XDP_FLAGS_DRV_MODE ? "native" : "generic",
             (x->bind_flags & XDP_ZEROCOPY) ? "zerocopy" : "copy");
}

const struct port_backend port_xdp_backend = {
    "afxdp", xdp_open, xdp_close, xdp_rx_burst, xdp_rx_release,
    xdp_tx_one, xdp_tx_flush, xdp_tx_pending, xdp_describe,
};
