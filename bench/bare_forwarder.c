/* bare_forwarder: the ceiling of this machine for an AF_PACKET switch.
 *
 *   bare_forwarder IN_IFACE OUT_IFACE [--batch N]
 *
 * Every frame received on IN_IFACE goes out of OUT_IFACE unchanged: no parsing, no
 * lookup, no rewrite.  The I/O is what a userspace switch on AF_PACKET does at best:
 * a TPACKET_V3 receive ring (the same geometry as kp-switch's: 8 blocks of 256 KiB,
 * 1 ms block timeout) read in place, and sendmmsg batches whose iovecs point straight
 * into the ring (no copy) before the block goes back to the kernel.  One thread; runs
 * until SIGTERM/SIGINT, then prints one JSON line of counters.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define BLOCK_SIZE (1u << 18)
#define BLOCKS 8
#define FRAME_SIZE 2048
#define MAX_BATCH 256

static volatile sig_atomic_t stop_now;
static void on_sig(int s) { (void)s; stop_now = 1; }

static int open_rx(const char *ifname, uint8_t **ring)
{
    struct tpacket_req3 req;
    struct sockaddr_ll sll;
    int fd = socket(AF_PACKET, SOCK_RAW, 0), v = TPACKET_V3;

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v))
        return -1;
    memset(&req, 0, sizeof req);
    req.tp_block_size = BLOCK_SIZE;
    req.tp_block_nr = BLOCKS;
    req.tp_frame_size = FRAME_SIZE;
    req.tp_frame_nr = BLOCK_SIZE / FRAME_SIZE * BLOCKS;
    req.tp_retire_blk_tov = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req))
        return -1;
    *ring = mmap(NULL, (size_t)BLOCK_SIZE * BLOCKS, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_POPULATE, fd, 0);
    if (*ring == MAP_FAILED)
        return -1;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll))
        return -1;
    return fd;
}

static int open_tx(const char *ifname)
{
    struct sockaddr_ll sll;
    int fd = socket(AF_PACKET, SOCK_RAW, 0);

    if (fd < 0)
        return -1;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = 0;                 /* receives nothing */
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll))
        return -1;
    return fd;
}

int main(int argc, char **argv)
{
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    unsigned long long rx = 0, tx = 0, drops = 0;
    unsigned batch = 32, cur = 0, n = 0, i;
    uint8_t *ring;
    struct pollfd pfd;
    int rfd, tfd;

    if (argc < 3) {
        fprintf(stderr, "usage: bare_forwarder IN_IFACE OUT_IFACE [--batch N]\n");
        return 2;
    }
    if (argc >= 5 && !strcmp(argv[3], "--batch"))
        batch = (unsigned)atoi(argv[4]);
    if (!batch || batch > MAX_BATCH)
        batch = 32;
    rfd = open_rx(argv[1], &ring);
    tfd = open_tx(argv[2]);
    if (rfd < 0 || tfd < 0) {
        perror("bare_forwarder: open");
        return 1;
    }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    for (i = 0; i < MAX_BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    pfd.fd = rfd;
    pfd.events = POLLIN | POLLERR;
    while (!stop_now) {
        struct tpacket_block_desc *bd =
            (struct tpacket_block_desc *)(ring + (size_t)cur * BLOCK_SIZE);
        struct tpacket3_hdr *h;
        unsigned k, np;

        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) {
            poll(&pfd, 1, 100);
            continue;
        }
        np = bd->hdr.bh1.num_pkts;
        h = (struct tpacket3_hdr *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
        for (k = 0; k < np; k++) {
            iov[n].iov_base = (uint8_t *)h + h->tp_mac;
            iov[n].iov_len = h->tp_snaplen;
            n++;
            rx++;
            if (n == batch || k + 1 == np) {  /* flush before the block goes back */
                unsigned done = 0;
                while (done < n) {
                    int r = sendmmsg(tfd, msgs + done, n - done, MSG_DONTWAIT);
                    if (r <= 0) {
                        if (r < 0 && errno == EINTR)
                            continue;
                        drops++;
                        done++;
                        continue;
                    }
                    tx += (unsigned)r;
                    done += (unsigned)r;
                }
                n = 0;
            }
            h = (struct tpacket3_hdr *)((uint8_t *)h + h->tp_next_offset);
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        cur = (cur + 1) % BLOCKS;
    }
    printf("{\"rx\": %llu, \"tx\": %llu, \"tx_drops\": %llu}\n", rx, tx, drops);
    return 0;
}
