/* One datapath port, and the interface every port backend gives datapath.c.
 *
 * Two backends (chosen per datapath, see dp_new):
 *  - AF_PACKET (port_afpacket.c): a TPACKET_V3 receive ring and sendmmsg batches;
 *  - AF_XDP (port_xdp.c): a UMEM of fixed frames, rx/tx/fill/completion rings and
 *    the XDP program that steers the interface's frames to the socket.
 * What is common lives here and in port_io.c: the port's identity and counters, the
 * TCP/UDP segmentation of outputs, and the direct send socket.
 *
 * Threads: a dp_port is one datapath thread's socket(s) on the interface (datapath.h:
 * with N threads, N dp_ports per interface, their receive sockets in one AF_PACKET
 * fanout group); receiving, the transmit batch, seg_buf and gso_buf belong to that
 * thread.  port_tx_direct() may be called from any thread (execute() from Python): it
 * sends on the port's own AF_PACKET send socket (either backend) with its own scratch,
 * and the counters are atomics. */
#ifndef KP_PORT_IO_H
#define KP_PORT_IO_H

#ifndef _GNU_SOURCE
#error "port_io.h needs _GNU_SOURCE defined before the first include (struct mmsghdr)"
#endif

#include <linux/if_packet.h>
#include <linux/if_xdp.h>
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
#define RX_BURST 64           /* frames one port_rx_burst hands over at most */
#define RX_BLOCK_SIZE (1u << 18)   /* holds a 64 KiB GSO frame with room to spare */
#define RX_BLOCKS 8
#define RX_BLOCK_TIMEOUT_MS 1      /* a part-filled block is handed over after this */
#define GSO_SCRATCH (65536u + 256u) /* one datagram cut from a UDP GSO frame, headroom
                                       and headers included */

/* AF_XDP sizes: XDP_FRAMES frames of XDP_FRAME bytes per port, half of them on the
 * fill ring for receiving, half for transmitting.  A received frame starts
 * XDP_PACKET_HEADROOM (256) into its chunk, so it can be up to 1792 bytes: an MTU of
 * 1500 and VLAN tags fit.  Each ring has room for all the frames it can be given. */
#define XDP_FRAME 2048u
#define XDP_FRAMES 4096u
#define XDP_RX_FRAMES (XDP_FRAMES / 2)
#define XDP_TX_FRAMES (XDP_FRAMES - XDP_RX_FRAMES)

enum port_kind { PORT_AFPACKET = 0, PORT_AFXDP = 1 };

struct port_stats {
    uint64_t rx_packets, rx_bytes, rx_dropped, rx_errors;
    uint64_t tx_packets, tx_bytes, tx_dropped, tx_errors;
};

/* One received frame as a backend hands it to the datapath: data may be rewritten in
 * place (headroom bytes before it are the port's too) until port_rx_release. */
struct port_rx_frame {
    uint8_t *data;
    uint32_t len;
    uint32_t headroom;
    uint32_t flags;           /* RXF_* */
    uint32_t gso_size;        /* the sender's GSO segment size, or 0 */
    int32_t csum_start;       /* RXF_CSUM_PARTIAL: where the sender's virtio-net header */
    int32_t csum_offset;      /* says the checksum is (frame-relative), else -1 */
};
#define RXF_CSUM_PARTIAL 1u   /* the kernel said: the L4 checksum is left unfinished */
#define RXF_CSUM_UNTOLD 2u    /* the backend cannot say (AF_XDP): finish the checksum
                                 when its field holds the pseudo-header sum, which is
                                 what an unfinished one holds (csum_looks_partial) */
#define RXF_GSO_UDP 4u        /* gso_size is UDP_SEGMENT's (else TCP's) */

/* A ring shared with the kernel (AF_XDP): producer/consumer indexes and the entries. */
struct xdp_ring {
    uint32_t *producer, *consumer, *flags;
    void *ring;
    uint32_t mask, size;
    void *map;
    size_t map_len;
};

struct afp_state {
    int vnet;                 /* a virtio-net header before each received frame */
    uint8_t *ring;
    size_t ring_len;
    uint32_t cur_block;
    struct tpacket_block_desc *blk;   /* the block being handed over, or NULL */
    uint32_t blk_left;
    uint8_t *blk_next;        /* its next frame header */
    uint32_t tx_n;
    struct mmsghdr tx_msgs[TX_BATCH];
    struct iovec tx_iov[TX_BATCH];
    uint8_t *tx_bufs;         /* TX_BATCH * TX_SLOT */
};

struct xdp_state {
    int prog_fd, map_fd, link_fd;     /* the XDP program, its XSKMAP, its attachment */
    uint32_t attach_flags;            /* XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE */
    uint16_t bind_flags;              /* XDP_ZEROCOPY or XDP_COPY (| need wakeup) */
    uint8_t *umem;                    /* XDP_FRAMES * XDP_FRAME */
    struct xdp_ring rx, tx, fill, comp;
    uint32_t rx_cons, tx_prod;        /* our cached indexes */
    uint32_t rx_held;                 /* frames of the last burst, not yet released */
    uint64_t rx_addrs[RX_BURST];      /* their chunks, for the fill ring */
    uint32_t tx_queued;               /* descriptors written, not yet made visible */
    uint32_t n_free;
    uint64_t tx_free[XDP_TX_FRAMES];  /* chunks free for transmitting */
};

struct dp_port {
    uint32_t port_no;
    char ifname[IFNAMSIZ];
    int ifindex;
    enum port_kind kind;
    int backend_open;         /* the backend's open succeeded: close it */
    int fd;                   /* the one to poll for received frames */
    int tx_fd;                /* AF_PACKET, sends only (no header: frames go out whole) */
    int fanout;               /* AF_PACKET: the fanout group of the port's receive
                                 sockets (one per datapath thread), or -1: none */
    uint32_t mtu;
    int up;                   /* read and written with atomics */
    struct port_stats st;     /* atomics */
    uint8_t *seg_buf;         /* SEG_SCRATCH(mtu), for the datapath thread */
    uint8_t *gso_buf;         /* GSO_SCRATCH, for the datapath thread */
    union {
        struct afp_state afp;
        struct xdp_state xdp;
    } u;
};

/* What each backend implements (port_afpacket.c, port_xdp.c); port_io.c calls them.
 * open: the common fields are set (name, index, mtu, tx_fd, scratch); 0, or -1 with
 *       errno set and a message in err, having released what it took.
 * rx_burst: up to max frames, or 0; they stay valid until rx_release.
 * tx_one: copy one frame (at most MTU-sized) into the transmit batch.
 * tx_flush: hand the batch to the kernel. */
struct port_backend {
    const char *name;
    int (*open)(struct dp_port *p, char *err, size_t errlen);
    void (*close)(struct dp_port *p);
    uint32_t (*rx_burst)(struct dp_port *p, struct port_rx_frame *out, uint32_t max);
    void (*rx_release)(struct dp_port *p);
    void (*tx_one)(struct dp_port *p, const uint8_t *frame, uint32_t len);
    void (*tx_flush)(struct dp_port *p);
    int (*tx_pending)(const struct dp_port *p);
    void (*describe)(const struct dp_port *p, char *buf, size_t len);
};

extern const struct port_backend port_afpacket_backend;
extern const struct port_backend port_xdp_backend;

/* 0, or -1 with errno set and a message in err.  fanout (AF_PACKET): -1 none; 0: the
 * receive socket starts a new PACKET_FANOUT_HASH group (its id is then in p->fanout);
 * else the id of the group to join. */
int port_open(struct dp_port *p, enum port_kind kind, uint32_t port_no, const char *ifname,
              int fanout, char *err, size_t errlen);
void port_close(struct dp_port *p);

static inline const struct port_backend *port_backend_of(const struct dp_port *p)
{
    return p->kind == PORT_AFXDP ? &port_xdp_backend : &port_afpacket_backend;
}

static inline uint32_t port_rx_burst(struct dp_port *p, struct port_rx_frame *out,
                                     uint32_t max)
{
    return p->kind == PORT_AFXDP ? port_xdp_backend.rx_burst(p, out, max)
                                 : port_afpacket_backend.rx_burst(p, out, max);
}

static inline void port_rx_release(struct dp_port *p)
{
    port_backend_of(p)->rx_release(p);
}

static inline int port_tx_pending(const struct dp_port *p)
{
    return port_backend_of(p)->tx_pending(p);
}

static inline void port_tx_flush(struct dp_port *p)
{
    port_backend_of(p)->tx_flush(p);
}

/* "afpacket", "afxdp native copy", ... for logs and stats. */
void port_describe(const struct dp_port *p, char *buf, size_t len);

/* Datapath thread: copy a frame into the port's transmit batch (segmenting TCP that
 * exceeds the MTU, or seg_size, the sender's GSO size, when not 0: see segment.h); the
 * batch goes out when full or at port_tx_flush. */
void port_tx_queue(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size);

/* Any thread: send a frame now (segmenting as above). */
void port_tx_direct(struct dp_port *p, const uint8_t *frame, uint32_t len, uint32_t seg_size);

/* Backends: send one frame on tx_fd now, counted. */
void port_send_one(struct dp_port *p, const uint8_t *frame, uint32_t len);

#define PSTAT_ADD(p, field, n) __atomic_fetch_add(&(p)->st.field, (n), __ATOMIC_RELAXED)

#endif
