/* The in-switch load balancer: the VIPs kp_app programs, and the session table.
 *
 * This is the seed's design (VPP's kube-proxy plugin), in the datapath thread:
 *  - kp_app builds each VIP's new-connection table (Maglev) and sends it whole with the
 *    VIP's pods (kp_proto/lb.py is the wire format).  A VIP is immutable once
 *    published: a change builds a new one and swaps the pointer, so a packet sees the
 *    old table or the new one, never half of each.
 *  - A flow's kp_lb(vip) action hands a VIP's packet here (lb_select): the session hash of
 *    its 5-tuple (session_hash.h, the index kp_app's model and Open vSwitch compute)
 *    picks the table entry, hence the pod; the session is inserted in both directions
 *    and the packet DNATed.  The datapath then runs it through the tables again.
 *  - Every later packet of the session, either way, is translated before the tables
 *    see it (lb_translate), as a kernel's conntrack does before its NAT rules: the
 *    forward entry DNATs client -> pod, the reverse entry gives the client's replies
 *    the address and port it sent to (a ClusterIP or an external IP alike).
 *  - A packet that cannot start a session (a TCP segment other than a SYN, an SCTP
 *    packet whose first chunk is no INIT, with no session) and a session that finds the table full are translated through the
 *    VIP's table all the same, untracked (the seed's rule): the same 5-tuple picks the
 *    same pod while the table is unchanged, so a connection that outlived its session
 *    (a switch restart) goes on to its pod.
 *
 * The session table: a power-of-2 number of buckets (run time, KP_LB_CONF) of LB_WAYS
 * entries.  A session is two entries (forward and reverse), each in one of two
 * candidate buckets of its own key.  The buckets' hash is SipHash-1-3 keyed with a
 * per-process random key, so that nobody can aim 5-tuples at one bucket; it only places
 * entries, the compare is of the whole key (addresses, ports and the protocol).  Entries
 * never move once inserted.  An entry is live while it is younger than its timeout,
 * which follows the TCP state as conntrack's do (opening: SYN seen, nothing back;
 * established; closing: FIN or RST seen), SCTP's through the same three (INIT; the pod
 * answered; ABORT or SHUTDOWN*: see sctp_summary in lb.c), and is the UDP timeout for
 * everything else;
 * dead entries are reclaimed when an insert meets them.  Both entries of a session
 * carry its 32-bit session id and the partner's slot, so a packet either way refreshes
 * both and moves the state of both.
 *
 * One client's share of the table is bounded (LB_SOURCE_SHARE).
 *
 * Memory: 104 bytes per entry and a 4-byte hash, 2 entries per session (216 bytes a
 * session).  A VIP: 2 bytes per table entry, 26 bytes per pod (address, port, and a
 * counter of its new sessions).  The fragment table: LB_FRAG_SLOTS of 88 bytes (352 KiB).
 *
 * Threads: the state belongs to whoever holds lb->lock: the datapath thread holds it
 * while it processes a round of packets, and gives it up between rounds when another
 * thread waits (lb_lock/lb_unlock count the waiters).
 */
#ifndef KP_LB_H
#define KP_LB_H

#include <pthread.h>
#include <stdint.h>

#include "actions.h"
#include "flow_key.h"
#include "parse.h"

#define LB_MAX_VIPS 65536u          /* kp_proto.lb.MAX_VIPS */
#define LB_MAX_PODS 65536u          /* kp_proto.lb.MAX_PODS */
#define LB_MAX_TABLE (1u << 24)     /* kp_proto.lb.MAX_TABLE */
#define LB_MAX_BUCKETS (1u << 22)   /* kp_proto.lb.MAX_SESSION_BUCKETS */
#define LB_WAYS 4                   /* kp_proto.lb.SESSION_WAYS */
#define LB_DEFAULT_BUCKETS 1024u
/* No client address holds more than 1/LB_SOURCE_SHARE of the table's sessions: a
 * flood of new 5-tuples from one source fills its own share, and goes untracked past
 * it, instead of the whole table (everybody else's new sessions).  Addresses are
 * counted in LB_SOURCE_SLOTS slots by a keyed hash (two sources in one slot share it). */
#define LB_SOURCE_SHARE 4u          /* kp_proto.lb.SOURCE_SHARE */
#define LB_SOURCE_SLOTS 65536u

/* Fragments (lb.c, "fragments"): a later fragment has no ports, so no session key; the
 * translation the first fragment of its datagram got is remembered for it, in a
 * direct-mapped table of LB_FRAG_SLOTS keyed by (source, destination, protocol, IP id)
 * under the table's keyed hash, for LB_FRAG_TIMEOUT_MS (fragments of one datagram
 * arrive within milliseconds; Linux waits 30 s to reassemble, but a sender retransmits
 * the whole datagram anyway).  A newer datagram takes an older one's slot.  A later
 * fragment that arrives before its first, or after its slot was taken, is not
 * translated (the stricter choice, as VPP's kube-proxy plugin without reassembly):
 * nothing can tell which pod it is for, and it reaches none rather than a wrong one. */
#define LB_FRAG_SLOTS 4096u
#define LB_FRAG_TIMEOUT_MS 5000u

struct lb_frag {
    uint8_t src[16], dst[16];
    uint32_t id;
    uint8_t proto, v6, flags, pad;     /* flags: LB_E_DST/LB_E_SRC asked for */
    uint8_t new_dst[16], new_src[16];
    uint32_t vip_id;
    uint64_t last_ms;                  /* 0: free */
};
_Static_assert(sizeof(struct lb_frag) == 88, "the size lb.h's memory note says");

enum lb_timeout { LB_TO_TCP_ESTABLISHED, LB_TO_TCP_CLOSING, LB_TO_TCP_OPENING, LB_TO_UDP,
                  LB_N_TIMEOUTS };

struct lb_pod {
    uint8_t addr[16];      /* IPv4: the first 4 bytes */
    uint16_t port;         /* 0: keep the packet's destination port */
};

struct lb_vip {
    uint32_t id, version, new_len, basis, n_pods;
    uint16_t *table;       /* new_len pod indexes */
    struct lb_pod *pods;
    uint64_t *pod_sessions;   /* sessions made to each pod */
    uint64_t packets, bytes, sessions, untracked;
};

/* A session entry's key: one direction's 5-tuple. */
struct lb_key {
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint8_t proto, v6;
    uint16_t pad;          /* always 0 */
};

struct lb_entry {
    struct lb_key key;
    uint8_t new_dst[16], new_src[16];   /* the translation (the one asked for in flags) */
    uint16_t new_dport, new_sport;
    uint8_t flags;         /* LB_E_* */
    uint8_t state;         /* enum lb_timeout of the session */
    uint16_t pad;
    uint32_t sid;          /* the session's id: both entries hold it (0: free) */
    uint32_t partner;      /* the other entry's slot */
    uint32_t vip_id;
    uint64_t last_ms;
};

/* LB_E_COUNTED: a forward entry that counts in its client's share (source_sessions):
 * from its insertion until its session closes (FIN or RST) or ends.  A closed session
 * keeps its entries for late packets, but a client that opens and closes connections
 * one after the other (the usual client of a Service) is not refused for those. */
enum { LB_E_DST = 1, LB_E_SRC = 2, LB_E_FORWARD = 4, LB_E_COUNTED = 8 };

struct lb_counters {
    uint64_t created, untracked, dropped, table_full, source_limited, expired, flushed;
    uint64_t fragments;                 /* later fragments translated as their first */
    uint64_t icmp_errors;               /* ICMP errors translated back (lb_icmp.c) */
    uint64_t split;                     /* sessions whose reply the fanout steers to
                                           another thread than the request (steer.h) */
};

struct lb {
    pthread_mutex_t lock;
    uint32_t waiters;                   /* atomic: threads waiting for the lock */
    struct lb_vip **vips;               /* LB_MAX_VIPS pointers */
    uint32_t n_buckets;
    uint32_t *hashes;                   /* n_buckets * LB_WAYS */
    struct lb_entry *entries;           /* n_buckets * LB_WAYS */
    uint64_t live;                      /* entries in use (live or not yet reclaimed) */
    uint32_t next_sid;
    uint64_t k0, k1;                    /* the bucket hash's key */
    uint32_t *source_sessions;          /* LB_SOURCE_SLOTS: sessions per client slot */
    uint32_t timeout_ms[LB_N_TIMEOUTS];
    uint32_t sweep_next;                /* lb_sweep's next slot */
    /* The source a hairpin request gets ([0] IPv4 in the first four bytes, [1] IPv6):
     * the node's address (kp_proto/lb.py KP_LB_CONF), or the VIP's when not set. */
    uint8_t hairpin_src[2][16];
    uint8_t hairpin_set[2];
    struct lb_frag *frags;              /* LB_FRAG_SLOTS */
    uint32_t frags_used;                /* slots ever filled since the last flush */
    struct lb_counters c;
    uint32_t steer_threads;             /* the datapath's thread count (steer.h) */
};

/* NULL when out of memory. */
struct lb *lb_new(uint32_t buckets);
void lb_free(struct lb *lb);
void lb_lock(struct lb *lb);
void lb_unlock(struct lb *lb);
/* For the datapath thread between rounds: lets a waiting thread in. */
void lb_yield(struct lb *lb);
/* With the lock held: reclaims the expired entries of the next `budget` slots (round
 * robin), so that the dead sessions of a client stop counting in its share even where
 * no new session comes to reuse their slots (conntrack's garbage collector). */
void lb_sweep(struct lb *lb, uint64_t now, uint32_t budget);

/* With the lock held.  0, EINVAL or ENOMEM; a bucket count equal to the current one
 * keeps the sessions, another empties the table.  timeouts in seconds; hairpin[0] and
 * [1]: the IPv4 (4 bytes) and IPv6 (16) hairpin sources, NULL for none. */
int lb_configure(struct lb *lb, uint32_t buckets, const uint32_t timeouts_s[LB_N_TIMEOUTS],
                 const uint8_t *const hairpin[2]);
/* Builds a VIP (not yet published) from wire-order arrays: table as u16 big-endian,
 * pods as 20-byte records (16-byte address, u16 port, 2 bytes 0).  NULL with a reason
 * in err when they are inconsistent. */
struct lb_vip *lb_vip_build(uint32_t id, uint32_t version, uint32_t new_len, uint32_t basis,
                            const uint8_t *table, const uint8_t *pods, uint32_t n_pods,
                            char *err, size_t errlen);
/* A VIP lb_vip_build made and nobody published (NULL: nothing). */
void lb_vip_free(struct lb_vip *v);
/* With the lock held: publishes vip (NULL: deletes the VIP) and frees the old one.
 * Counters of pods present in both carry over. */
void lb_vip_set(struct lb *lb, uint32_t id, struct lb_vip *vip);
/* With the lock held: ends sessions of vip_id (LB_ALL_VIPS: all), to pod (NULL: any;
 * port 0: any port).  Returns how many. */
#define LB_ALL_VIPS 0xFFFFFFFFu
uint64_t lb_flush(struct lb *lb, uint32_t vip_id, const uint8_t *pod, uint32_t version,
                  uint16_t port);
uint64_t lb_sessions(const struct lb *lb);

/* The packet path, lock held.  lb_translate: a session's packet gets its translation
 * (frame and *k rewritten, no parse); returns 1 if it had one.  lb_select: the
 * kp_lb action; returns 1 if the packet was translated (then processed again), 0 if it
 * must be dropped (no such VIP). */
int lb_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                 const struct pkt_layout *lay, uint64_t now_ms, uint32_t len);
int lb_select(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
              const struct pkt_layout *lay, uint32_t vip_id, uint64_t now_ms, uint32_t len);

/* Whether lb_translate has anything to do (sessions or remembered fragments). */
static inline int lb_active(const struct lb *lb) { return lb->live || lb->frags_used; }

/* The live session entry of key, or NULL (lock held; lb_icmp.c). */
const struct lb_entry *lb_lookup(struct lb *lb, const struct lb_key *key, uint64_t now_ms);

/* Shared by lb.c, lb_frag.c and lb_icmp.c (lock held).  lb_rewrite: the packet's
 * destination and/or source (flags LB_E_*; port 0 with a portless packet: addresses
 * alone), checksums and *k with it; lb_count_vip: a VIP's packet and bytes. */
void lb_rewrite(struct pkt_buf *pb, struct flow_key *k, const struct pkt_layout *lay,
                uint8_t flags, const uint8_t *dst, uint16_t dport, const uint8_t *src,
                uint16_t sport);
void lb_count_vip(struct lb *lb, uint32_t vip_id, uint32_t len);
/* lb_frag.c: a first fragment translated (flags, to dst/src) is remembered for the later
 * ones; a later fragment gets it (1) if remembered. */
void lb_frag_remember(struct lb *lb, const struct pkt_buf *pb, const struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now_ms, uint8_t flags,
                      const uint8_t *dst, const uint8_t *src, uint32_t vip_id);
int lb_frag_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now_ms, uint32_t len);

/* lb_icmp.c (lock held): an ICMP error about a session's packet translated back (outer
 * and quoted headers, checksums; *k's addresses with them); 1 if it was. */
int lb_icmp_translate(struct lb *lb, struct pkt_buf *pb, struct flow_key *k,
                      const struct pkt_layout *lay, uint64_t now_ms);

/* For tests: the bucket hash's key, and a key's two candidate buckets. */
void lb_set_hash_key(struct lb *lb, uint64_t k0, uint64_t k1);
void lb_buckets_of(const struct lb *lb, const struct lb_key *key, uint32_t *b1, uint32_t *b2);
/* A flow key's session key (0: not a packet a session can be made of). */
int lb_key_of(const struct flow_key *k, struct lb_key *out);

#endif
