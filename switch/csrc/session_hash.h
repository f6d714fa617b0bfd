/* The hash that picks a new session's entry in a VIP's table.
 *
 * It must be the very index Open vSwitch's `multipath(symmetric_l3l4+udp, BASIS,
 * modulo_n, N, 0, ...)` writes and kp_app's model computes
 * (kp_proto/session_hash.py, which documents the steps and is this file's twin), so
 * that the same 5-tuple reaches the same pod on every node whatever its switch. It is
 * symmetric and unkeyed but for the basis, so it only picks the table entry: a table
 * of sessions must place them in its buckets by another hash, one keyed per process,
 * so that nobody can aim 5-tuples at one bucket.
 */
#ifndef KP_SESSION_HASH_H
#define KP_SESSION_HASH_H

#include <stdint.h>

#include "flow_key.h"

#define SESSION_HASH_MAX_BASIS 0xFFFFu

/* The hash of an IPv4 or IPv6 key (src ^ dst, protocol, and for TCP/UDP keys the ports
 * xored; a later fragment has no ports in its key and hashes without them, as OVS
 * does).  A key of neither family hashes as if all its fields were zero. */
uint32_t session_hash(const struct flow_key *k, uint32_t basis);

#endif
