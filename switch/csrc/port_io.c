/* Port I/O on AF_PACKET.  Receive uses a TPACKET_V3 ring: the kernel packs frames
 * into blocks that we read in place with no system call per packet, and
 * PACKET_RESERVE leaves headroom before each frame so a VLAN tag can be put back or
 * pushed without a copy.  PACKET_IGNORE_OUTGOING keeps the switch from receiving its
 * own transmissions (an AF_PACKET socket otherwise sees every frame the interface
 * sends, ours included, and would loop them).  PACKET_VNET_HDR puts the skb's
 * virtio-net header before each received frame: the only place a UDP GSO frame's
 * segment size is told.  A socket with that option must also prefix what it sends, so
 * a second socket, which receives nothing, sends.  Transmit copies each output into a
 * batch slot, because one packet may be output several times with different rewrites
 * in between, and sends a batch with one sendmmsg. */
#define _GNU_SOURCE
#include "port_io.h"

#include <errno.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "actions.h"
#include "segment.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif


static int fail(struct dp_port *p, char *err, size_t errlen, const char *what)
{
    int e = errno;

    snprintf(err, errlen, "%s: %s: %s", p->ifname, what, strerror(e));
    port_close(p);
    errno = e;
    return -1;
}

int port_open(struct dp_port *p, uint32_t port_no, const char *ifname, char *err,
              size_t errlen)
{
    struct tpacket_req3 req;
    struct sockaddr_ll sll;
    struct ifreq ifr;
    int v;

    memset(p, 0, sizeof *p);
    p->fd = p->tx_fd = -1;
    p->port_no = port_no;
    p->up = 1;
    if (strlen(ifname) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        snprintf(err, errlen, "%s: interface name too long", ifname);
        return -1;
    }
    strcpy(p->ifname, ifname);
    p->ifindex = (int)if_nametoindex(ifname);
    if (!p->ifindex)
        return fail(p, err, errlen, "no such interface");
    /* Protocol 0: receive nothing until bound to the one interface, below. */
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        return fail(p, err, errlen, "socket(AF_PACKET)");
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, ifname);
    p->mtu = ioctl(p->fd, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu > 0 ? (uint32_t)ifr.ifr_mtu
                                                                     : 1500;
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
    p->vnet = setsockopt(p->fd, SOL_PACKET, PACKET_VNET_HDR, &v, sizeof v) == 0;
    memset(&req, 0, sizeof req);
    req.tp_block_size = RX_BLOCK_SIZE;
    req.tp_block_nr = RX_BLOCKS;
    req.tp_frame_size = TX_SLOT;
    req.tp_frame_nr = RX_BLOCK_SIZE / TX_SLOT * RX_BLOCKS;
    req.tp_retire_blk_tov = RX_BLOCK_TIMEOUT_MS;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req))
        return fail(p, err, errlen, "PACKET_RX_RING");
    p->ring_len = (size_t)RX_BLOCK_SIZE * RX_BLOCKS;
    p->ring = mmap(NULL, p->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   p->fd, 0);
    if (p->ring == MAP_FAILED) {
        p->ring = NULL;
        return fail(p, err, errlen, "mmap rx ring");
    }
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = p->ifindex;
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll))
        return fail(p, err, errlen, "bind");
    p->tx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->tx_fd < 0)
        return fail(p, err, errlen, "socket(AF_PACKET) for sending");
    sll.sll_protocol = 0;     /* send only */
    if (bind(p->tx_fd, (struct sockaddr *)&sll, sizeof sll))
        return fail(p, err, errlen, "bind (sending)");
    p->tx_bufs = malloc((size_t)TX_BATCH * TX_SLOT);
    p->seg_buf = malloc(SEG_SCRATCH(p->mtu));
    p->gso_buf = malloc(GSO_SCRATCH);
    if (!p->tx_bufs || !p->seg_buf || !p->gso_buf)
        return fail(p, err, errlen, "malloc");
    return 0;
}

void port_close(struct dp_port *p)
{
    if (p->ring)
        munmap(p->ring, p->ring_len);
    if (p->fd >= 0)
        close(p->fd);
    if (p->tx_fd >= 0)
        close(p->tx_fd);
    free(p->tx_bufs);
    free(p->seg_buf);
    free(p->gso_buf);
    p->ring = NULL;
    p->fd = p->tx_fd = -1;
    p->tx_bufs = p->seg_buf = p->gso_buf = NULL;
}

struct tpacket_block_desc *port_rx_block(struct dp_port *p)
{
    struct tpacket_block_desc *bd =
        (struct tpacket_block_desc *)(p->ring + (size_t)p->cur_block * RX_BLOCK_SIZE);

    if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
        return NULL;
    return bd;
}

void port_rx_release(struct dp_port *p, struct tpacket_block_desc *bd)
{
    __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    p->cur_block = (p->cur_block + 1) % RX_BLOCKS;
}

static void send_one(struct dp_port *p, const uint8_t *frame, uint32_t len)
{
    if (send(p->tx_fd, frame, len, MSG_DONTWAIT) == (ssize_t)len) {
        PSTAT_ADD(p, tx_packets, 1);
        PSTAT_ADD(p, tx_bytes, len);
    } else if (errno == EAGAIN || errno == ENOBUFS) {
        PSTAT_ADD(p, tx_dropped, 1);
    } else {
        PSTAT_ADD(p, tx_errors, 1);
    }
}

void port_tx_flush(struct dp_port *p)
{
    uint32_t done = 0, i;

    while (done < p->tx_n) {
        int r = sendmmsg(p->tx_fd, p->tx_msgs + done, p->tx_n - done, MSG_DONTWAIT);

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
            PSTAT_ADD(p, tx_bytes, p->tx_iov[i].iov_len);
        }
        done += (uint32_t)r;
    }
    p->tx_n = 0;
}

static void queue_small(void *ctx, const uint8_t *frame, uint32_t len)
{
    struct dp_port *p = ctx;
    uint8_t *slot;

    if (len > TX_SLOT) {
        send_one(p, frame, len);
        return;
    }
    if (p->tx_n == TX_BATCH)
        port_tx_flush(p);
    slot = p->tx_bufs + (size_t)p->tx_n * TX_SLOT;
    memcpy(slot, frame, len);
    p->tx_iov[p->tx_n].iov_base = slot;
    p->tx_iov[p->tx_n].iov_len = len;
    memset(&p->tx_msgs[p->tx_n], 0, sizeof p->tx_msgs[0]);
    p->tx_msgs[p->tx_n].msg_hdr.msg_iov = &p->tx_iov[p->tx_n];
    p->tx_msgs[p->tx_n].msg_hdr.msg_iovlen = 1;
    p->tx_n++;
}

void port_tx_queue(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size)
{
    if ((len > p->mtu + 14 || seg_size) &&
        tcp_segment(frame, len, p->mtu, seg_size, p->seg_buf, SEG_SCRATCH(p->mtu),
                    queue_small, p))
        return;
    queue_small(p, frame, len);
}

static void send_cb(void *ctx, const uint8_t *frame, uint32_t len)
{
    send_one(ctx, frame, len);
}

void port_tx_direct(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size)
{
    if (len > p->mtu + 14 || seg_size) {
        uint8_t *scratch = malloc(SEG_SCRATCH(p->mtu));  /* slow path only */
        int n = scratch ? tcp_segment(frame, len, p->mtu, seg_size, scratch,
                                      SEG_SCRATCH(p->mtu), send_cb, p)
                        : 0;

        free(scratch);
        if (n)
            return;
    }
    send_one(p, frame, len);
}
