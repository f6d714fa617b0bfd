/* CRC32c: see crc32c.h for why it lives apart from csum.h. */
#include "crc32c.h"

#define POLY 0x82F63B78u    /* CRC32c, bit-reflected */

static uint32_t table[8][256];
static int have_sse42;

__attribute__((constructor)) static void crc32c_init(void)
{
    uint32_t n, c;
    int i;

    for (n = 0; n < 256; n++) {
        c = n;
        for (i = 0; i < 8; i++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (n = 0; n < 256; n++)
        for (i = 1; i < 8; i++)
            table[i][n] = (table[i - 1][n] >> 8) ^ table[0][table[i - 1][n] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

/* State in, state out (no inversion): the inversions are crc32c()'s. */
static uint32_t update_table(uint32_t c, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^
            table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t update_sse42(uint32_t c, const uint8_t *p,
                                                               size_t len)
{
    uint64_t c64 = c;

    while (len >= 8) {
        uint64_t w;

        __builtin_memcpy(&w, p, 8);     /* unaligned-safe load */
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
    while (len--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t crc32c_impl(int which, uint32_t crc, const uint8_t *p, size_t len, int *ok)
{
    *ok = 1;
    if (which == 0)
        return ~update_table(~crc, p, len);
#if defined(__x86_64__)
    if (which == 1 && have_sse42)
        return ~update_sse42(~crc, p, len);
#endif
    *ok = 0;
    return 0;
}

uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t len)
{
#if defined(__x86_64__)
    if (have_sse42)
        return ~update_sse42(~crc, p, len);
#endif
    return ~update_table(~crc, p, len);
}

uint32_t sctp_crc(const uint8_t *sctp, size_t len)
{
    static const uint8_t zero[4];
    uint32_t c = crc32c(0, sctp, 8);

    c = crc32c(c, zero, 4);
    return crc32c(c, sctp + 12, len - 12);
}

uint32_t sctp_crc_stored(const uint8_t *s)
{
    return (uint32_t)s[8] | (uint32_t)s[9] << 8 | (uint32_t)s[10] << 16 | (uint32_t)s[11] << 24;
}

void sctp_crc_store(uint8_t *s, uint32_t crc)
{
    s[8] = (uint8_t)crc;
    s[9] = (uint8_t)(crc >> 8);
    s[10] = (uint8_t)(crc >> 16);
    s[11] = (uint8_t)(crc >> 24);
}
