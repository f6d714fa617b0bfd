/* Open vSwitch's symmetric_l3l4+udp hash (generic murmur3 build): see session_hash.h. */
#include "session_hash.h"

#include <string.h>

static inline uint32_t rot32(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

/* murmur3's per-word step; a zero word still rotates and multiplies (OVS mhash_add). */
static inline uint32_t mh_add(uint32_t h, uint32_t data)
{
    if (data) {
        data *= 0xcc9e2d51u;
        data = rot32(data, 15);
        data *= 0x1b873593u;
        h ^= data;
    }
    h = rot32(h, 13);
    return h * 5 + 0xe6546b64u;
}

static inline uint32_t mh_finish(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

uint32_t session_hash(const struct flow_key *k, uint32_t basis)
{
    uint32_t h = basis;

    if (k->present & FK_IPV4) {
        uint32_t s, d;

        memcpy(&s, k->nw_src, 4);       /* memory order, as OVS reads its be32 */
        memcpy(&d, k->nw_dst, 4);
        h = mh_add(h, s ^ d);
    } else if (k->present & FK_IPV6) {
        for (int i = 0; i < 16; i += 8) {
            uint64_t s, d, x;

            memcpy(&s, k->nw_src + i, 8);
            memcpy(&d, k->nw_dst + i, 8);
            x = s ^ d;
            h = mh_add(mh_add(h, (uint32_t)x), (uint32_t)(x >> 32));
        }
    }
    h = mh_add(h, k->ip_proto);
    if (k->present & (FK_TCP | FK_UDP | FK_SCTP)) {
        /* The key holds ports in host order; OVS adds the be16 xor read in memory
         * order, i.e. byte-swapped on this little-endian host. */
        uint16_t x = (uint16_t)(k->tp_src ^ k->tp_dst);
        h = mh_add(h, (uint16_t)((x >> 8) | (x << 8)));
    }
    return mh_finish(h ^ basis);
}
