/* Port I/O on AF_PACKET (port_io.h's first backend).  Receive uses a TPACKET_V3 ring:
 * the kernel packs frames into blocks that we read in place with no system call per
 * packet, and PACKET_RESERVE leaves headroom before each frame so a VLAN tag can be
 * put back or pushed without a copy.  PACKET_IGNORE_OUTGOING keeps the switch from
 * receiving its own transmissions (an AF_PACKET socket otherwise sees every frame the
 * interface sends, ours included, and would loop them).  PACKET_VNET_HDR puts the
 * skb's virtio-net header before each received frame: the only place a UDP GSO
 * frame's segment size is told.  A socket with that option must also prefix what it
 * sends, so the port's send socket (port_io.c), which receives nothing, sends.
 * Transmit copies each output into a batch slot, because one packet may be output
 * several times with different rewrites in between, and sends a batch with one
 * sendmmsg.
 *
 * With several datapath threads, each has its own socket on the port (its own ring and
 * batch), and the sockets form one fanout group whose program (steer.h) picks the
 * socket, so that both directions of a session reach the thread that holds it.  The
 * group's id comes from PACKET_FANOUT_FLAG_UNIQUEID: no clash with
 * another kp-switch's groups in the same network namespace. */
#define _GNU_SOURCE
#include "port_io.h"

#include <errno.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "actions.h"
#include "csum.h"
#include "steer.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef PACKET_FANOUT_FLAG_UNIQUEID
#define PACKET_FANOUT_FLAG_UNIQUEID 0x2000   /* Linux 4.17 */
#endif
#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000   /* Linux 6.9 */
#endif

/* Joins (or, with p->fanout 0, starts, with the steering program) the port's fanout
 * group; p->fanout is then what joining takes (the id, type and flags).
 * PACKET_IGNORE_OUTGOING is the socket's, and a fanout group's sockets get their frames
 * through the group's hook, which has its own flag for it (Linux 6.9); afp_rx_burst
 * skips our own transmissions where the kernel does not. */
static int afp_fanout(struct dp_port *p)
{
    uint32_t v;
    socklen_t len = sizeof v;

    if (p->fanout == 0) {
        v = (uint32_t)(PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID |
                       PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16;
        if (setsockopt(p->fd, SOL_PACKET, PACKET_FANOUT, &v, sizeof v)) {
            v = (uint32_t)(PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
            if (setsockopt(p->fd, SOL_PACKET, PACKET_FANOUT, &v, sizeof v))
                return -1;
        }
        if (getsockopt(p->fd, SOL_PACKET, PACKET_FANOUT, &v, &len) ||
            setsockopt(p->fd, SOL_PACKET, PACKET_FANOUT_DATA, steer_program(),
                       sizeof(struct sock_fprog)))
            return -1;
        p->fanout = (int)v;   /* id | type << 16 | flags << 24: never 0 (type 6) */
        return 0;
    }
    v = (uint32_t)p->fanout;
    return setsockopt(p->fd, SOL_PACKET, PACKET_FANOUT, &v, sizeof v);
}

static void afp_close(struct dp_port *p)
{
    struct afp_state *a = &p->u.afp;

    if (a->ring)
        munmap(a->ring, a->ring_len);
    if (p->fd >= 0)
        close(p->fd);
    free(a->tx_bufs);
    a->ring = NULL;
    a->tx_bufs = NULL;
    p->fd = -1;
}

static int fail(struct dp_port *p, char *err, size_t errlen, const char *what)
{
    int e = errno;

    snprintf(err, errlen, "%s: %s: %s", p->ifname, what, strerror(e));
    afp_close(p);
    errno = e;
    return -1;
}

static int afp_open(struct dp_port *p, char *err, size_t errlen)
{
    struct afp_state *a = &p->u.afp;
    struct tpacket_req3 req;
    struct sockaddr_ll sll;
    int v;

    /* Protocol 0: receive nothing until bound to the one interface, below. */
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        return fail(p, err, errlen, "socket(AF_PACKET)");
    v = TPACKET_V3;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v))
        return fail(p, err, errlen, "PACKET_VERSION");
    v = ACTION_HEADROOM;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_RESERVE, &v, sizeof v))
        return fail(p, err, errlen, "PACKET_RESERVE");
    v = 1;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &v, sizeof v))
        return fail(p, err, errlen, "PACKET_IGNORE_OUTGOING");
    v = 1;   /* before the ring; a kernel without it just gives no GSO sizes */
    a->vnet = setsockopt(p->fd, SOL_PACKET, PACKET_VNET_HDR, &v, sizeof v) == 0;
    memset(&req, 0, sizeof req);
    req.tp_block_size = RX_BLOCK_SIZE;
    req.tp_block_nr = RX_BLOCKS;
    req.tp_frame_size = TX_SLOT;
    req.tp_frame_nr = RX_BLOCK_SIZE / TX_SLOT * RX_BLOCKS;
    req.tp_retire_blk_tov = RX_BLOCK_TIMEOUT_MS;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req))
        return fail(p, err, errlen, "PACKET_RX_RING");
    a->ring_len = (size_t)RX_BLOCK_SIZE * RX_BLOCKS;
    a->ring = mmap(NULL, a->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   p->fd, 0);
    if (a->ring == MAP_FAILED) {
        a->ring = NULL;
        return fail(p, err, errlen, "mmap rx ring");
    }
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = p->ifindex;
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll))
        return fail(p, err, errlen, "bind");
    if (p->fanout >= 0 && afp_fanout(p))
        return fail(p, err, errlen, "PACKET_FANOUT");
    a->tx_bufs = malloc((size_t)TX_BATCH * TX_SLOT);
    if (!a->tx_bufs) {
        errno = ENOMEM;
        return fail(p, err, errlen, "malloc");
    }
    return 0;
}

/* The sender's GSO segment size for the frame at `frame`, or 0 (not a GSO frame, or no
 * virtio-net header on this port); *udp says whether it is UDP_SEGMENT's (else TCP's). */
static uint16_t rx_gso_size(const struct afp_state *a, const uint8_t *frame, int *udp)
{
    struct virtio_net_hdr vh;
    uint8_t type;

    *udp = 0;
    if (!a->vnet)
        return 0;
    memcpy(&vh, frame - sizeof vh, sizeof vh);   /* the kernel puts it right before */
    type = vh.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (type == VIRTIO_NET_HDR_GSO_UDP_L4)
        *udp = 1;
    else if (type != VIRTIO_NET_HDR_GSO_TCPV4 && type != VIRTIO_NET_HDR_GSO_TCPV6)
        return 0;
    return vh.gso_size;       /* AF_PACKET writes it in host order */
}

/* Where the sender left its checksum to finish (CHECKSUM_PARTIAL: the virtio-net
 * header's csum_start and csum_offset, frame-relative); -1 when it did not say (no
 * virtio-net header, or no NEEDS_CSUM). */
static void rx_csum(const struct afp_state *a, const uint8_t *frame, int32_t *start,
                    int32_t *offset)
{
    struct virtio_net_hdr vh;

    *start = *offset = -1;
    if (!a->vnet)
        return;
    memcpy(&vh, frame - sizeof vh, sizeof vh);
    if (!(vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
        return;
    *start = vh.csum_start;   /* host order, as gso_size */
    *offset = vh.csum_offset;
}

static void afp_rx_release(struct dp_port *p);

/* The frames of the block being handed over, then of the next filled one.  A block
 * goes back to the kernel at the rx_release after its last frame. */
static uint32_t afp_rx_burst(struct dp_port *p, struct port_rx_frame *out, uint32_t max)
{
    struct afp_state *a = &p->u.afp;
    const uint32_t hdrlen = TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) +
                            sizeof(struct sockaddr_ll);
    uint32_t n = 0;

    if (!a->blk) {
        struct tpacket_block_desc *bd =
            (struct tpacket_block_desc *)(a->ring + (size_t)a->cur_block * RX_BLOCK_SIZE);

        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            return 0;
        a->blk = bd;
        a->blk_left = bd->hdr.bh1.num_pkts;
        a->blk_next = (uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt;
        if (!a->blk_left) {       /* retired empty: nothing to hand over */
            afp_rx_release(p);
            return 0;
        }
    }
    while (n < max && a->blk_left) {
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)a->blk_next;
        struct port_rx_frame *f = &out[n];
        int udp;

        a->blk_left--;
        a->blk_next += h->tp_next_offset;
        if (p->fanout >= 0 &&
            ((const struct sockaddr_ll *)((const uint8_t *)h +
                                          TPACKET_ALIGN(sizeof(struct tpacket3_hdr))))
                    ->sll_pkttype == PACKET_OUTGOING)
            continue;     /* ours (or another sender's on this host): see afp_fanout */
        f->data = (uint8_t *)h + h->tp_mac;
        f->len = h->tp_snaplen;
        f->headroom = h->tp_mac > hdrlen ? h->tp_mac - hdrlen : 0;
        f->gso_size = rx_gso_size(a, f->data, &udp);   /* before any rewrite */
        rx_csum(a, f->data, &f->csum_start, &f->csum_offset);
        f->flags = (udp ? RXF_GSO_UDP : 0) |
                   ((h->tp_status & TP_STATUS_CSUMNOTREADY) ? RXF_CSUM_PARTIAL : 0);
        if (h->tp_snaplen < h->tp_len) {      /* did not fit a block: cannot forward */
            PSTAT_ADD(p, rx_errors, 1);
            continue;
        }
        /* The kernel took the VLAN tag off into the header: put it back, so the key
         * and the frame we forward are what was on the wire. */
        if ((h->tp_status & TP_STATUS_VLAN_VALID) && f->len >= 12 && f->headroom >= 4) {
            uint16_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->hv1.tp_vlan_tpid
                                                                       : 0x8100;

            f->data -= 4;
            memmove(f->data, f->data + 4, 12);
            wr16(f->data + 12, tpid);
            wr16(f->data + 14, (uint16_t)h->hv1.tp_vlan_tci);
            f->len += 4;
            f->headroom -= 4;
            if (f->csum_start >= 0)
                f->csum_start += 4;   /* the sender counted from the frame without it */
        }
        n++;
    }
    return n;
}

static void afp_rx_release(struct dp_port *p)
{
    struct afp_state *a = &p->u.afp;

    if (!a->blk || a->blk_left)
        return;
    __atomic_store_n(&a->blk->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    a->blk = NULL;
    a->cur_block = (a->cur_block + 1) % RX_BLOCKS;
}

static void afp_tx_flush(struct dp_port *p)
{
    struct afp_state *a = &p->u.afp;
    uint32_t done = 0, i;

    while (done < a->tx_n) {
        int r = sendmmsg(p->tx_fd, a->tx_msgs + done, a->tx_n - done, MSG_DONTWAIT);

        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            /* The kernel refused the head of the batch: count it and go on with the
             * rest, so one bad frame does not cost the whole batch. */
            if (r < 0 && (errno == EAGAIN || errno == ENOBUFS))
                PSTAT_ADD(p, tx_dropped, 1);
            else
                PSTAT_ADD(p, tx_errors, 1);
            done++;
            continue;
        }
        for (i = done; i < done + (uint32_t)r; i++) {
            PSTAT_ADD(p, tx_packets, 1);
            PSTAT_ADD(p, tx_bytes, a->tx_iov[i].iov_len);
        }
        done += (uint32_t)r;
    }
    a->tx_n = 0;
}

static void afp_tx_one(struct dp_port *p, const uint8_t *frame, uint32_t len)
{
    struct afp_state *a = &p->u.afp;
    uint8_t *slot;

    if (len > TX_SLOT) {
        port_send_one(p, frame, len);
        return;
    }
    if (a->tx_n == TX_BATCH)
        afp_tx_flush(p);
    slot = a->tx_bufs + (size_t)a->tx_n * TX_SLOT;
    memcpy(slot, frame, len);
    a->tx_iov[a->tx_n].iov_base = slot;
    a->tx_iov[a->tx_n].iov_len = len;
    memset(&a->tx_msgs[a->tx_n], 0, sizeof a->tx_msgs[0]);
    a->tx_msgs[a->tx_n].msg_hdr.msg_iov = &a->tx_iov[a->tx_n];
    a->tx_msgs[a->tx_n].msg_hdr.msg_iovlen = 1;
    a->tx_n++;
}

static int afp_tx_pending(const struct dp_port *p)
{
    return p->u.afp.tx_n != 0;
}

static void afp_describe(const struct dp_port *p, char *buf, size_t len)
{
    snprintf(buf, len, p->fanout >= 0 ? "afpacket fanout" : "afpacket");
}

const struct port_backend port_afpacket_backend = {
    "afpacket", afp_open, afp_close, afp_rx_burst, afp_rx_release,
    afp_tx_one, afp_tx_flush, afp_tx_pending, afp_describe,
};
