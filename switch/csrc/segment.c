#include "segment.h"

#include <string.h>

#include "csum.h"
#include "parse.h"

/* A segment's IP length and id (IPv4; its header checksum too) and its full L4
 * checksum (proto 6 or 17, at l4 + csum_at), from its own bytes. */
static void finish_segment(uint8_t *seg, int32_t l3, int32_t l4, int32_t seglen, int v4,
                           uint16_t ip_id, uint8_t proto, int32_t csum_at)
{
    uint8_t pseudo[40];
    size_t plen_ps;
    int32_t l4len = seglen - l4;
    uint16_t sum;

    if (v4) {
        wr16(seg + l3 + 2, (uint16_t)(seglen - l3));
        wr16(seg + l3 + 4, ip_id);
        wr16(seg + l3 + 10, 0);
        wr16(seg + l3 + 10, (uint16_t)~csum_fold(csum_add(0, seg + l3, (size_t)(l4 - l3))));
        memcpy(pseudo, seg + l3 + 12, 8);
        wr16(pseudo + 8, proto);
        wr16(pseudo + 10, (uint16_t)l4len);
        plen_ps = 12;
    } else {
        wr16(seg + l3 + 4, (uint16_t)(seglen - l3 - 40));
        memcpy(pseudo, seg + l3 + 8, 32);
        wr32(pseudo + 32, (uint32_t)l4len);
        wr32(pseudo + 36, proto);
        plen_ps = 40;
    }
    wr16(seg + l4 + csum_at, 0);
    sum = (uint16_t)~csum_fold(csum_add(csum_add(0, pseudo, plen_ps), seg + l4, (size_t)l4len));
    if (proto == 17 && sum == 0)
        sum = 0xffff;             /* 0 would mean "no checksum" */
    wr16(seg + l4 + csum_at, sum);
}

int tcp_segment(const uint8_t *frame, uint32_t len, uint32_t mtu, uint32_t seg_size,
                uint8_t *scratch, uint32_t scratch_len, seg_emit_fn emit, void *ctx)
{
    struct flow_key k;
    struct pkt_layout lay;
    int32_t l3, l4, hdr_end, mss, start, plen;
    uint32_t seq;
    uint16_t flags, ip_id = 0;
    int v4, n = 0;

    if (parse_packet(frame, len, 0, &k, &lay) == PARSE_RUNT || lay.l3 < 0 ||
        !(k.present & FK_TCP) || lay.frag)
        return 0;
    l3 = lay.l3;
    l4 = lay.l4;
    hdr_end = l4 + (frame[l4 + 12] >> 4) * 4;
    mss = (int32_t)mtu - (hdr_end - l3);
    if (seg_size && seg_size < (uint32_t)mss)
        mss = (int32_t)seg_size;
    plen = lay.l3_end - hdr_end;
    if (plen <= mss)
        return 0;
    if (mss < (int32_t)SEG_MIN_SIZE)
        return SEG_REFUSED;
    if ((uint32_t)(hdr_end + mss) > scratch_len)
        return 0;
    seq = rd32(frame + l4 + 4);
    flags = rd16(frame + l4 + 12);
    v4 = !!(k.present & FK_IPV4);
    if (v4)
        ip_id = rd16(frame + l3 + 4);
    for (start = 0; start < plen; start += mss, n++) {
        int32_t chunk = plen - start < mss ? plen - start : mss;
        int32_t seglen = hdr_end + chunk;
        uint16_t f = flags;

        memcpy(scratch, frame, (size_t)hdr_end);
        memcpy(scratch + hdr_end, frame + hdr_end + start, (size_t)chunk);
        if (start + mss < plen)
            f &= (uint16_t)~0x0009;     /* FIN and PSH only on the last segment */
        if (start)
            f &= (uint16_t)~0x0080;     /* CWR only on the first */
        wr16(scratch + l4 + 12, f);
        wr32(scratch + l4 + 4, seq + (uint32_t)start);
        finish_segment(scratch, l3, l4, seglen, v4, (uint16_t)(ip_id + n), 6, 16);
        emit(ctx, scratch, (uint32_t)seglen);
    }
    return n;
}

int udp_segment(const uint8_t *frame, uint32_t len, uint32_t gso_size, uint8_t *scratch,
                uint32_t scratch_len, seg_emit_fn emit, void *ctx)
{
    struct flow_key k;
    struct pkt_layout lay;
    int32_t l4, hdr_end, start, plen;
    uint16_t ip_id = 0;
    int v4, n = 0;

    if (!gso_size || parse_packet(frame, len, 0, &k, &lay) == PARSE_RUNT || lay.l3 < 0 ||
        !(k.present & FK_UDP) || lay.frag)
        return 0;
    l4 = lay.l4;
    hdr_end = l4 + 8;
    plen = lay.l3_end - hdr_end;
    if (plen <= (int32_t)gso_size)
        return 0;
    if (gso_size < SEG_MIN_SIZE)
        return SEG_REFUSED;
    if ((uint32_t)hdr_end + gso_size > scratch_len)
        return 0;
    v4 = !!(k.present & FK_IPV4);
    if (v4)
        ip_id = rd16(frame + lay.l3 + 4);
    for (start = 0; start < plen; start += (int32_t)gso_size, n++) {
        int32_t chunk = plen - start < (int32_t)gso_size ? plen - start : (int32_t)gso_size;
        int32_t seglen = hdr_end + chunk;

        memcpy(scratch, frame, (size_t)hdr_end);
        memcpy(scratch + hdr_end, frame + hdr_end + start, (size_t)chunk);
        wr16(scratch + l4 + 4, (uint16_t)(8 + chunk));
        finish_segment(scratch, lay.l3, l4, seglen, v4, (uint16_t)(ip_id + n), 17, 6);
        emit(ctx, scratch, (uint32_t)seglen);
    }
    return n;
}
