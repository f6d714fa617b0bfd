/* The keyed hash every table a packet can aim at is placed by, and its process secret.
 *
 * A hash table whose bucket is a public function of the packet can be filled, one
 * bucket at a time, by anyone who picks the packets (a few hundred 5-tuples aimed at
 * one bucket evict everybody else's entries or make every lookup walk them).  So the
 * session table (lb.c), the flow cache's buckets and IPv6 address pool (flow_cache.c)
 * and the megaflow buckets (megaflow.c) are all placed by SipHash-1-3 (Aumasson and
 * Bernstein; the variant Rust's and Python's dict hashes use for the same reason)
 * under a 128-bit key that only this process knows: the process secret, drawn from
 * getrandom once when the extension loads.  Nothing from outside (OpenFlow, REST, a
 * packet) sets it; tests may read it (the Python twin places entries the same way
 * only under the same key) and lb tables may be given their own (lb_set_hash_key).
 * Twin: fastpath_ref.siphash13. */
#ifndef KP_KEYED_HASH_H
#define KP_KEYED_HASH_H

#include <stdint.h>

/* SipHash-1-3 of n 64-bit words (little-endian, as memcpy reads them) under (k0, k1). */
uint64_t siphash13(const uint64_t *w, int n, uint64_t k0, uint64_t k1);

/* A fresh random 128-bit key (getrandom; without entropy yet, a weaker one from
 * addresses and the clock). */
void keyed_hash_random_key(uint64_t key[2]);

/* The process secret (set before any table exists: a constructor draws it). */
extern uint64_t keyed_hash_secret[2];

#endif
