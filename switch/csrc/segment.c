#include "segment.h"

#include <string.h>

#include "csum.h"
#include "parse.h"

int tcp_segment(const uint8_t *frame, uint32_t len, uint32_t mtu, uint8_t *scratch,
                uint32_t scratch_len, seg_emit_fn emit, void *ctx)
{
    struct flow_key k;
    struct pkt_layout lay;
    int32_t l3, l4, hdr_end, mss, start, plen;
    uint32_t seq;
    uint16_t flags, ip_id = 0;
    int v4, n = 0;

    if (parse_packet(frame, len, 0, &k, &lay) == PARSE_RUNT || lay.l3 < 0 ||
        !(k.present & FK_TCP) || lay.l3_end - lay.l3 <= (int32_t)mtu)
        return 0;
    l3 = lay.l3;
    l4 = lay.l4;
    hdr_end = l4 + (frame[l4 + 12] >> 4) * 4;
    mss = (int32_t)mtu - (hdr_end - l3);
    if (mss <= 0 || (uint32_t)(hdr_end + mss) > scratch_len)
        return 0;
    plen = lay.l3_end - hdr_end;
    seq = rd32(frame + l4 + 4);
    flags = rd16(frame + l4 + 12);
    v4 = !!(k.present & FK_IPV4);
    if (v4)
        ip_id = rd16(frame + l3 + 4);
    for (start = 0; start < plen; start += mss, n++) {
        int32_t chunk = plen - start < mss ? plen - start : mss;
        int32_t seglen = hdr_end + chunk, l4len = seglen - l4;
        uint16_t f = flags;
        uint64_t s;
        uint8_t pseudo[40];
        size_t plen_ps;

        memcpy(scratch, frame, (size_t)hdr_end);
        memcpy(scratch + hdr_end, frame + hdr_end + start, (size_t)chunk);
        if (start + mss < plen)
            f &= (uint16_t)~0x0009;     /* FIN and PSH only on the last segment */
        if (start)
            f &= (uint16_t)~0x0080;     /* CWR only on the first */
        wr16(scratch + l4 + 12, f);
        wr32(scratch + l4 + 4, seq + (uint32_t)start);
        if (v4) {
            wr16(scratch + l3 + 2, (uint16_t)(seglen - l3));
            wr16(scratch + l3 + 4, (uint16_t)(ip_id + n));
            wr16(scratch + l3 + 10, 0);
            wr16(scratch + l3 + 10,
                 (uint16_t)~csum_fold(csum_add(0, scratch + l3, (size_t)(l4 - l3))));
            memcpy(pseudo, scratch + l3 + 12, 8);
            wr16(pseudo + 8, 6);
            wr16(pseudo + 10, (uint16_t)l4len);
            plen_ps = 12;
        } else {
            wr16(scratch + l3 + 4, (uint16_t)(seglen - l3 - 40));
            memcpy(pseudo, scratch + l3 + 8, 32);
            wr32(pseudo + 32, (uint32_t)l4len);
            wr32(pseudo + 36, 6);
            plen_ps = 40;
        }
        wr16(scratch + l4 + 16, 0);
        s = csum_add(csum_add(0, pseudo, plen_ps), scratch + l4, (size_t)l4len);
        wr16(scratch + l4 + 16, (uint16_t)~csum_fold(s));
        emit(ctx, scratch, (uint32_t)seglen);
    }
    return n;
}
