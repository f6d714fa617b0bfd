/* Compiled action programs and their executor (twin: fastpath_ref._run). */
#ifndef KP_ACTIONS_H
#define KP_ACTIONS_H

#include <stdint.h>

#define MAX_OPS 16           /* ops in a cached program; execute() takes longer lists */
#define ACTION_HEADROOM 64   /* bytes a packet buffer needs before the frame (push_vlan) */

/* OP_LB (kp_lb, kp_proto/lb.py): the in-switch load balancer takes the packet (arg: the
 * VIP id); it ends the program. */
enum op_kind { OP_OUTPUT = 1, OP_SET_FIELD, OP_PUSH_VLAN, OP_POP_VLAN, OP_DEC_TTL, OP_LB };

enum field_id {
    FLD_ETH_DST = 1, FLD_ETH_SRC, FLD_VLAN_VID, FLD_VLAN_PCP, FLD_IP_DSCP, FLD_IP_ECN,
    FLD_IPV4_SRC, FLD_IPV4_DST, FLD_IPV6_SRC, FLD_IPV6_DST, FLD_IPV6_FLABEL,
    FLD_TCP_SRC, FLD_TCP_DST, FLD_UDP_SRC, FLD_UDP_DST, FLD_ICMPV4_TYPE,
    FLD_ICMPV4_CODE, FLD_ICMPV6_TYPE, FLD_ICMPV6_CODE, FLD_ARP_OP, FLD_ARP_SPA,
    FLD_ARP_TPA, FLD_ARP_SHA, FLD_ARP_THA, FLD_IPV6_ND_TARGET, FLD_IPV6_ND_SLL,
    FLD_IPV6_ND_TLL, FLD_SCTP_SRC, FLD_SCTP_DST, FLD_COUNT
};

/* One action.  Zero-initialised whole, so two equal programs are equal bytes (the
 * cache interns programs by memcmp). */
struct action_op {
    uint8_t kind;            /* enum op_kind */
    uint8_t field;           /* enum field_id, for OP_SET_FIELD */
    uint16_t pad;
    uint32_t arg;            /* output port, push_vlan TPID, or an integer field value */
    uint8_t bytes[16];       /* MAC (6), IPv4 (4) or IPv6 (16) field value */
};

struct action_prog {
    uint32_t n_ops;
    struct action_op ops[MAX_OPS];
};

/* A frame being processed: data may move back by up to `headroom` (push_vlan). */
struct pkt_buf {
    uint8_t *data;
    uint32_t len;
    uint32_t headroom;
};

typedef void (*emit_fn)(void *ctx, uint32_t port_no, const uint8_t *frame, uint32_t len);
typedef void (*lb_fn)(void *ctx, struct pkt_buf *pb, uint32_t in_port, uint32_t vip_id);

/* Where a program's packets go: emit at each output, lb at OP_LB (NULL: dropped). */
struct action_env {
    emit_fn emit;
    lb_fn lb;
    void *ctx;
};

/* Runs ops in order on pb (in place), calling env->emit at each output with the frame
 * as it is at that point, and env->lb at OP_LB, which ends the program.  Stops early
 * when dec_ttl finds a TTL of 0 or 1 (the packet is dropped) or when a push_vlan has no
 * headroom left. */
void actions_run(struct pkt_buf *pb, uint32_t in_port, const struct action_op *ops,
                 uint32_t n_ops, const struct action_env *env);

struct flow_key;
struct pkt_layout;

/* Rewrites IP addresses and TCP/UDP/SCTP ports (set-field ops of only those fields) of a
 * packet already parsed into k and lay, with the same checksum updates as actions_run,
 * and updates k to match: no parse before or after (the session table's translation,
 * on the per-packet path; the layout does not change). */
void actions_nat(uint8_t *frame, struct flow_key *k, const struct pkt_layout *lay,
                 const struct action_op *ops, uint32_t n_ops);

/* Finishes a CHECKSUM_PARTIAL TCP/UDP frame (the checksum field holds the
 * pseudo-header sum, as the sender's stack left it for the NIC).  l4/l3_end as
 * parse_packet found them. */
void csum_complete_partial(uint8_t *frame, int32_t l4, int32_t l3_end, int is_udp);
/* The same for SCTP, whose sender left the CRC32c to the NIC (NETIF_F_SCTP_CRC, as a
 * veth has): computed over the SCTP packet. */
void sctp_complete_partial(uint8_t *frame, int32_t l4, int32_t l3_end);
/* Finishes a CHECKSUM_PARTIAL packet where its sender said: the 16-bit field at
 * csum_start + csum_offset holds the pseudo-header sum, and the sum of the bytes from
 * csum_start to the end of the datagram goes into it (a UDP checksum's 0 sent as
 * 0xffff).  csum_start -1: the sender did not say (no virtio-net header), the parsed
 * TCP or UDP checksum is finished, if any.  0, or -1 (nothing written) when the
 * field or the start lies outside the IP datagram (before its header or past its end):
 * such a packet cannot be finished and is dropped. */
int csum_finish_partial(uint8_t *frame, const struct flow_key *k, const struct pkt_layout *lay,
                        int32_t csum_start, int32_t csum_offset);

#endif
