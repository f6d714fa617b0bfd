/* pktgen: blast pre-built 64-byte (60 + FCS) UDP frames out of one interface.
 *
 *   pktgen IFACE --src-mac M --dst-mac M --src-ip A --dst-ip A --dport P
 *          [--sport P0] [--flows N] [--seconds S] [--pps R]
 *          [--warmup-seconds W --warmup-pps R2] [--once] [--batch B]
 *
 * Flow i (0 <= i < N) has source port P0 + i % 50000 and source address
 * A + i / 50000 (so up to 50,000 flows per source address); frames go out in flow
 * order, round robin, through an AF_PACKET socket with sendmmsg and qdisc bypass.
 * Every frame carries a correct IPv4 header checksum and UDP checksum.
 * --pps 0 (default) is as fast as the core goes; --once sends each flow exactly one
 * frame (at --pps) and stops.  The optional warm-up phase runs first, at its own rate.
 * Prints one JSON line: frames sent, send errors, seconds of the measured phase.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif

#define FRAME_LEN 60
#define MAX_BATCH 256

static volatile sig_atomic_t stop_now;
static void on_sig(int s) { (void)s; stop_now = 1; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_mac(const char *s, uint8_t *m)
{
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4],
                  &m[5]) == 6 ? 0 : -1;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static void build(uint8_t *f, const uint8_t *smac, const uint8_t *dmac, uint32_t sip,
                  uint32_t dip, uint16_t sport, uint16_t dport)
{
    uint8_t *ip = f + 14, *udp = ip + 20;
    uint16_t ulen = FRAME_LEN - 14 - 20, c;
    uint32_t sum;

    memset(f, 0, FRAME_LEN);
    memcpy(f, dmac, 6);
    memcpy(f + 6, smac, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    ip[0] = 0x45;
    ip[2] = (FRAME_LEN - 14) >> 8;
    ip[3] = (FRAME_LEN - 14) & 0xff;
    ip[6] = 0x40;                                 /* DF */
    ip[8] = 64;
    ip[9] = 17;
    memcpy(ip + 12, &sip, 4);
    memcpy(ip + 16, &dip, 4);
    c = csum_fold(csum_add(0, ip, 20));
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
    udp[0] = sport >> 8;
    udp[1] = sport & 0xff;
    udp[2] = dport >> 8;
    udp[3] = dport & 0xff;
    udp[4] = ulen >> 8;
    udp[5] = ulen & 0xff;
    memcpy(udp + 8, "kp-bench-payload!!", 18);
    sum = csum_add(0, ip + 12, 8);                /* pseudo-header */
    sum += 17 + ulen;
    sum = csum_add(sum, udp, ulen);
    c = csum_fold(sum);
    if (!c)
        c = 0xffff;
    udp[6] = c >> 8;
    udp[7] = c & 0xff;
}

int main(int argc, char **argv)
{
    const char *ifname = NULL;
    uint8_t smac[6] = {2, 0, 0, 0, 0, 1}, dmac[6] = {2, 0, 0, 0, 0, 2};
    uint32_t sip = htonl(0x0a000102), dip = htonl(0x0a60000a);
    unsigned sport0 = 10000, dport = 80, flows = 1, batch = 32, once = 0;
    double seconds = 5, pps = 0, wsec = 0, wpps = 10000;
    struct sockaddr_ll sll;
    struct mmsghdr *msgs;
    struct iovec *iov;
    uint8_t *frames;
    unsigned long long sent = 0, errs = 0, wsent = 0;
    double t0, t_end, elapsed = 0;
    int fd, v, i;
    unsigned next = 0;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *b = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--once")) { once = 1; continue; }
        if (a[0] != '-') { ifname = a; continue; }
        if (!b) { fprintf(stderr, "pktgen: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--src-mac") && !parse_mac(b, smac)) continue;
        if (!strcmp(a, "--dst-mac") && !parse_mac(b, dmac)) continue;
        if (!strcmp(a, "--src-ip") && inet_pton(AF_INET, b, &sip) == 1) continue;
        if (!strcmp(a, "--dst-ip") && inet_pton(AF_INET, b, &dip) == 1) continue;
        if (!strcmp(a, "--sport")) { sport0 = (unsigned)atoi(b); continue; }
        if (!strcmp(a, "--dport")) { dport = (unsigned)atoi(b); continue; }
        if (!strcmp(a, "--flows")) { flows = (unsigned)atoi(b); continue; }
        if (!strcmp(a, "--batch")) { batch = (unsigned)atoi(b); continue; }
        if (!strcmp(a, "--seconds")) { seconds = atof(b); continue; }
        if (!strcmp(a, "--pps")) { pps = atof(b); continue; }
        if (!strcmp(a, "--warmup-seconds")) { wsec = atof(b); continue; }
        if (!strcmp(a, "--warmup-pps")) { wpps = atof(b); continue; }
        fprintf(stderr, "pktgen: bad argument %s %s\n", a, b);
        return 2;
    }
    if (!ifname || !flows || !batch || batch > MAX_BATCH) {
        fprintf(stderr, "usage: pktgen IFACE [options] (see the source)\n");
        return 2;
    }
    if (once && batch > flows)
        batch = flows;
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    frames = malloc((size_t)flows * FRAME_LEN);
    msgs = calloc(MAX_BATCH, sizeof *msgs);
    iov = calloc(MAX_BATCH, sizeof *iov);
    if (!frames || !msgs || !iov) {
        perror("pktgen: malloc");
        return 1;
    }
    for (i = 0; i < (int)flows; i++)
        build(frames + (size_t)i * FRAME_LEN, smac, dmac,
              htonl(ntohl(sip) + (uint32_t)i / 50000u), dip,
              (uint16_t)(sport0 + (unsigned)i % 50000u), (uint16_t)dport);

    fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) {
        perror("pktgen: socket");
        return 1;
    }
    v = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &v, sizeof v);
    v = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = 0;                         /* send only */
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll)) {
        perror("pktgen: bind");
        return 1;
    }
    for (i = 0; i < MAX_BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        iov[i].iov_len = FRAME_LEN;
    }

    /* phase 0: warm-up (paced), phase 1: measured (paced or flat out) */
    for (int phase = wsec > 0 ? 0 : 1; phase < 2 && !stop_now; phase++) {
        double rate = phase == 0 ? wpps : pps, dur = phase == 0 ? wsec : seconds;
        unsigned long long n = 0, cap = once && phase == 1 ? flows : ~0ULL;
        if (once && phase == 1)
            next = 0;
        t0 = now_s();
        t_end = t0 + dur;
        for (;;) {
            double t = now_s();
            unsigned k, want = batch;
            int r;

            if (stop_now || n >= cap || (!once && t >= t_end) || (once && phase == 0 && t >= t_end))
                break;
            if (rate > 0) {
                double due = (double)n / rate;    /* frames due by now */
                if (t - t0 < due) {
                    double gap = due - (t - t0);
                    if (gap > 0.0002) {
                        struct timespec ts = {0, (long)(gap * 1e9)};
                        nanosleep(&ts, NULL);
                    }
                    continue;
                }
                want = (unsigned)((t - t0) * rate - (double)n) + 1;
                if (want > batch)
                    want = batch;
            }
            if (n + want > cap)
                want = (unsigned)(cap - n);
            for (k = 0; k < want; k++) {
                iov[k].iov_base = frames + (size_t)next * FRAME_LEN;
                if (++next == flows)
                    next = 0;
            }
            r = sendmmsg(fd, msgs, want, 0);
            if (r < 0) {
                if (errno != EINTR)
                    errs += want;
                /* ENOBUFS and the like: the frames are lost, go on */
                n += want;
                continue;
            }
            if ((unsigned)r < want) {
                errs += want - (unsigned)r;
            }
            n += want;
            if (phase == 1)
                sent += (unsigned)r;
            else
                wsent += (unsigned)r;
        }
        elapsed = now_s() - t0;
    }
    printf("{\"sent\": %llu, \"errors\": %llu, \"warmup_sent\": %llu, \"seconds\": %.6f}\n",
           sent, errs, wsent, elapsed);
    return 0;
}
