/* SipHash-1-3 and the process secret: see keyed_hash.h. */
#define _GNU_SOURCE
#include "keyed_hash.h"

#include <sys/random.h>
#include <time.h>

uint64_t keyed_hash_secret[2];

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                           \
    do {                                                                                   \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                          \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                             \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                             \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                          \
    } while (0)

uint64_t siphash13(const uint64_t *w, int n, uint64_t k0, uint64_t k1)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)(8 * n) << 56;
    int i;

    for (i = 0; i < n; i++) {
        v3 ^= w[i];
        SIPROUND;
        v0 ^= w[i];
    }
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void keyed_hash_random_key(uint64_t key[2])
{
    struct timespec ts;

    if (getrandom(key, 2 * sizeof *key, 0) == (ssize_t)(2 * sizeof *key))
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key[0] = (uint64_t)(uintptr_t)key ^ 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_nsec;
    key[1] = (uint64_t)(uintptr_t)&keyed_hash_random_key ^ (uint64_t)ts.tv_sec << 32;
}

__attribute__((constructor)) static void draw_secret(void)
{
    keyed_hash_random_key(keyed_hash_secret);
}
