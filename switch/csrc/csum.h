/* Internet checksum arithmetic (RFC 1071 sums, RFC 1624 incremental updates).
 * Header-only because every caller is on the per-packet path. */
#ifndef KP_CSUM_H
#define KP_CSUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, (uint16_t)(v >> 16));
    wr16(p + 2, (uint16_t)v);
}

/* Sum of big-endian 16-bit words; an odd last byte is padded with zero. */
static inline uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
    size_t i;
    for (i = 0; i + 1 < len; i += 2)
        sum += rd16(p + i);
    if (len & 1)
        sum += (uint64_t)p[len - 1] << 8;
    return sum;
}

static inline uint16_t csum_fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* Whether an L4 checksum field holds the folded sum of the pseudo-header alone (not
 * complemented): what a sender that leaves the checksum to offload writes there
 * (Linux's CHECKSUM_PARTIAL), for a receiver that is not told so (AF_XDP).  A finished
 * checksum holds that value only when the rest of the segment sums to -0 with it, and
 * finishing such a checksum again gives it back unchanged.  src_dst: the addresses
 * (8 or 32 bytes, as in the IP header); l4_len: the segment's length. */
static inline bool csum_holds_pseudo(const uint8_t *field, const uint8_t *src_dst,
                                     size_t addr_len, uint8_t proto, uint32_t l4_len)
{
    uint64_t s = csum_add(0, src_dst, addr_len) + proto + (l4_len >> 16) + (l4_len & 0xffff);

    return rd16(field) == csum_fold(s);
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over the 16-bit words of a field that
 * changed from old to new (len even, field at an even offset of the summed data).
 * Eqn. 3 rather than eqn. 2 so a result is never the -0 that eqn. 2 can produce.
 * A zero UDP checksum means "none" and stays zero; a computed zero is sent as 0xffff. */
static inline void csum_replace(uint8_t *csum, const uint8_t *old, const uint8_t *new_,
                                size_t len, bool udp)
{
    uint16_t hc = rd16(csum), res;
    uint64_t s;
    size_t i;

    if (udp && hc == 0)
        return;
    s = (uint16_t)~hc;
    for (i = 0; i + 1 < len; i += 2)
        s += (uint16_t)~rd16(old + i) + (uint64_t)rd16(new_ + i);
    res = (uint16_t)~csum_fold(s);
    if (udp && res == 0)
        res = 0xffff;
    wr16(csum, res);
}

#endif
