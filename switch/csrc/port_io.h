/* One datapath port: an AF_PACKET socket on a Linux interface with a TPACKET_V3
 * receive ring and a batched (sendmmsg) transmit path.
 *
 * Threads: the receive ring, the transmit batch and seg_buf belong to the datapath
 * thread.  port_tx_direct() may be called from any thread (execute() from Python):
 * it sends with its own scratch, and the counters are atomics. */
#ifndef KP_PORT_IO_H
#define KP_PORT_IO_H

#ifndef _GNU_SOURCE
#error "port_io.h needs _GNU_SOURCE defined before the first include (struct mmsghdr)"
#endif

#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5   /* Linux 5.18's uapi; older headers lack it */
#endif

#define TX_BATCH 32
#define TX_SLOT 2048          /* batched frames up to this size; bigger ones go alone */
#define RX_BLOCK_SIZE (1u << 18)   /* holds a 64 KiB GSO frame with room to spare */
#define RX_BLOCKS 8
#define RX_BLOCK_TIMEOUT_MS 1      /* a part-filled block is handed over after this */
#define GSO_SCRATCH (65536u + 256u) /* one datagram cut from a UDP GSO frame, headroom
                                       and headers included */

struct port_stats {
    uint64_t rx_packets, rx_bytes, rx_dropped, rx_errors;
    uint64_t tx_packets, tx_bytes, tx_dropped, tx_errors;
};

struct dp_port {
    uint32_t port_no;
    char ifname[IFNAMSIZ];
    int ifindex;
    int fd;                   /* receives, with a virtio-net header before each frame
                                 when vnet is set (the sender's GSO size) */
    int tx_fd;                /* sends (no header: frames go out whole) */
    int vnet;
    uint32_t mtu;
    int up;                   /* read and written with atomics */
    struct port_stats st;     /* atomics */
    uint8_t *ring;
    size_t ring_len;
    uint32_t cur_block;
    uint32_t tx_n;
    struct mmsghdr tx_msgs[TX_BATCH];
    struct iovec tx_iov[TX_BATCH];
    uint8_t *tx_bufs;         /* TX_BATCH * TX_SLOT */
    uint8_t *seg_buf;         /* SEG_SCRATCH(mtu), for the datapath thread */
    uint8_t *gso_buf;         /* GSO_SCRATCH, for the datapath thread */
};

/* 0, or -1 with errno set and a message in err. */
int port_open(struct dp_port *p, uint32_t port_no, const char *ifname, char *err,
              size_t errlen);
void port_close(struct dp_port *p);

/* The sender's GSO segment size for the frame at `frame` in a block of p's ring, or 0
 * (not a GSO frame, or no virtio-net header on this port); *udp says whether it is
 * UDP_SEGMENT's (else TCP's).  Inline: it is asked of every received frame. */
static inline uint16_t port_rx_gso_size(const struct dp_port *p, const uint8_t *frame,
                                        int *udp)
{
    struct virtio_net_hdr vh;
    uint8_t type;

    *udp = 0;
    if (!p->vnet)
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
 * header's csum_start and csum_offset, frame-relative); 0 when it did not say (no
 * virtio-net header, or no NEEDS_CSUM). */
static inline int port_rx_csum(const struct dp_port *p, const uint8_t *frame,
                               int32_t *start, int32_t *offset)
{
    struct virtio_net_hdr vh;

    if (!p->vnet)
        return 0;
    memcpy(&vh, frame - sizeof vh, sizeof vh);
    if (!(vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM))
        return 0;
    *start = vh.csum_start;   /* host order, as gso_size */
    *offset = vh.csum_offset;
    return 1;
}

/* The next block the kernel has filled, or NULL; hand it back with port_rx_release. */
struct tpacket_block_desc *port_rx_block(struct dp_port *p);
void port_rx_release(struct dp_port *p, struct tpacket_block_desc *bd);

/* Datapath thread: copy a frame into the port's transmit batch (segmenting TCP that
 * exceeds the MTU, or seg_size, the sender's GSO size, when not 0: see segment.h); the
 * batch goes out when full or at port_tx_flush. */
void port_tx_queue(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size);
void port_tx_flush(struct dp_port *p);

/* Any thread: send a frame now (segmenting as above). */
void port_tx_direct(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size);

#define PSTAT_ADD(p, field, n) __atomic_fetch_add(&(p)->st.field, (n), __ATOMIC_RELAXED)

#endif
