/* What both port backends share (port_io.h): opening the port's common half (its
 * index, MTU, the AF_PACKET socket that sends execute()'s frames, the scratch
 * buffers), and cutting outputs to the MTU or to the sender's segments before they go
 * to a backend's transmit batch. */
#define _GNU_SOURCE
#include "port_io.h"

#include <errno.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "segment.h"

int port_open(struct dp_port *p, enum port_kind kind, uint32_t port_no, const char *ifname,
              int fanout, char *err, size_t errlen)
{
    struct sockaddr_ll sll;
    struct ifreq ifr;
    const char *what;
    int e;

    memset(p, 0, sizeof *p);
    p->fd = p->tx_fd = -1;
    p->fanout = fanout;
    p->port_no = port_no;
    p->kind = kind;
    p->up = 1;
    if (strlen(ifname) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        snprintf(err, errlen, "%s: interface name too long", ifname);
        return -1;
    }
    strcpy(p->ifname, ifname);
    p->ifindex = (int)if_nametoindex(ifname);
    what = "no such interface";
    if (!p->ifindex)
        goto fail;
    /* Protocol 0: this socket receives nothing; it only sends. */
    what = "socket(AF_PACKET) for sending";
    p->tx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (p->tx_fd < 0)
        goto fail;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, ifname);
    p->mtu = ioctl(p->tx_fd, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu > 0 ? (uint32_t)ifr.ifr_mtu
                                                                        : 1500;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = p->ifindex;
    what = "bind (sending)";
    if (bind(p->tx_fd, (struct sockaddr *)&sll, sizeof sll))
        goto fail;
    p->seg_buf = malloc(SEG_SCRATCH(p->mtu));
    p->gso_buf = malloc(GSO_SCRATCH);
    what = "malloc";
    if (!p->seg_buf || !p->gso_buf) {
        errno = ENOMEM;
        goto fail;
    }
    if (port_backend_of(p)->open(p, err, errlen)) {
        e = errno;
        port_close(p);
        errno = e;
        return -1;
    }
    p->backend_open = 1;
    return 0;
fail:
    e = errno;
    snprintf(err, errlen, "%s: %s: %s", p->ifname, what, strerror(e));
    port_close(p);
    errno = e;
    return -1;
}

void port_close(struct dp_port *p)
{
    if (p->backend_open)
        port_backend_of(p)->close(p);
    p->backend_open = 0;
    if (p->tx_fd >= 0)
        close(p->tx_fd);
    free(p->seg_buf);
    free(p->gso_buf);
    p->fd = p->tx_fd = -1;
    p->seg_buf = p->gso_buf = NULL;
}

void port_describe(const struct dp_port *p, char *buf, size_t len)
{
    port_backend_of(p)->describe(p, buf, len);
}

void port_send_one(struct dp_port *p, const uint8_t *frame, uint32_t len)
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

static void queue_cb(void *ctx, const uint8_t *frame, uint32_t len)
{
    struct dp_port *p = ctx;

    port_backend_of(p)->tx_one(p, frame, len);
}

void port_tx_queue(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size)
{
    if ((len > p->mtu + 14 || seg_size) &&
        tcp_segment(frame, len, p->mtu, seg_size, p->seg_buf, SEG_SCRATCH(p->mtu),
                    queue_cb, p))
        return;
    queue_cb(p, frame, len);
}

static void send_cb(void *ctx, const uint8_t *frame, uint32_t len)
{
    port_send_one(ctx, frame, len);
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
    port_send_one(p, frame, len);
}
