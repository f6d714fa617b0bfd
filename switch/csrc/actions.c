/* The action executor.  Rewrites happen in place on the frame; every L3/L4 rewrite
 * adjusts the checksums that cover it incrementally (RFC 1624), which costs a few
 * adds instead of a pass over the payload, and keeps a checksum that was wrong on
 * arrival wrong on departure (the receiver must still drop it).  The arithmetic and
 * the order of updates match fastpath_ref bit for bit, so the differential tests can
 * compare rewritten frames byte by byte.  SCTP is the exception: its CRC32c covers no
 * addresses but is no sum, so a port rewrite computes it again over the SCTP packet
 * (crc32c.h), keeping a wrong one wrong by the same difference as Open vSwitch does. */
#include "actions.h"

#include <stdbool.h>
#include <string.h>

#include "crc32c.h"
#include "csum.h"
#include "parse.h"

/* The checksum covering a pseudo-header (TCP, UDP, ICMPv6), if the packet has one. */
static uint8_t *l4_csum(uint8_t *f, const struct flow_key *k, const struct pkt_layout *lay,
                        bool *udp)
{
    *udp = false;
    if (lay->l4 < 0)
        return NULL;
    if (k->present & FK_TCP)
        return f + lay->l4 + 16;
    if (k->present & FK_UDP) {
        *udp = true;
        return f + lay->l4 + 6;
    }
    if (k->present & FK_ICMPV6)
        return f + lay->l4 + 2;
    return NULL;
}

static void set_bytes(uint8_t *f, const struct flow_key *k, const struct pkt_layout *lay,
                      int32_t off, const uint8_t *nv, size_t n, bool l3_sum, bool l4_sum)
{
    uint8_t old[16];

    memcpy(old, f + off, n);
    memcpy(f + off, nv, n);
    if (l3_sum && (k->present & FK_IPV4))
        csum_replace(f + lay->l3 + 10, old, nv, n, false);
    if (l4_sum) {
        bool udp;
        uint8_t *c = l4_csum(f, k, lay, &udp);

        if (c)
            csum_replace(c, old, nv, n, udp);
    }
}

static void set_u16(uint8_t *f, const struct flow_key *k, const struct pkt_layout *lay,
                    int32_t off, uint16_t v, bool l3_sum, bool l4_sum)
{
    uint8_t nv[2];

    wr16(nv, v);
    set_bytes(f, k, lay, off, nv, 2, l3_sum, l4_sum);
}

/* An SCTP port (off 0: source, 2: destination) and the CRC32c with it. */
static void set_sctp_port(uint8_t *f, const struct pkt_layout *lay, int32_t off, uint16_t v)
{
    uint8_t *s = f + lay->l4;
    size_t len = (size_t)(lay->l3_end - lay->l4);    /* >= 12: parse_l4 checked it */
    uint32_t before = sctp_crc(s, len);

    wr16(s + off, v);
    sctp_crc_store(s, sctp_crc_stored(s) ^ before ^ sctp_crc(s, len));
}

static void set_field(uint8_t *f, const struct flow_key *k, const struct pkt_layout *lay,
                      const struct action_op *op)
{
    uint32_t pr = k->present, v = op->arg;
    int32_t l3 = lay->l3, l4 = lay->l4;

    switch (op->field) {
    case FLD_ETH_DST:
        memcpy(f, op->bytes, 6);
        break;
    case FLD_ETH_SRC:
        memcpy(f + 6, op->bytes, 6);
        break;
    case FLD_VLAN_VID:
        if (pr & FK_VLAN)
            wr16(f + 14, (rd16(f + 14) & 0xf000) | (v & 0x0fff));
        break;
    case FLD_VLAN_PCP:
        if (pr & FK_VLAN)
            wr16(f + 14, (uint16_t)((rd16(f + 14) & 0x1fff) | v << 13));
        break;
    case FLD_IP_DSCP:
    case FLD_IP_ECN: {
        bool dscp = op->field == FLD_IP_DSCP;

        if (pr & FK_IPV4) {
            uint8_t tos = f[l3 + 1];

            tos = dscp ? (uint8_t)((tos & 3) | v << 2) : (uint8_t)((tos & 0xfc) | v);
            set_u16(f, k, lay, l3, (uint16_t)(f[l3] << 8 | tos), true, false);
        } else if (pr & FK_IPV6) {
            uint8_t tc = (uint8_t)((f[l3] & 0x0f) << 4 | f[l3 + 1] >> 4);

            tc = dscp ? (uint8_t)((tc & 3) | v << 2) : (uint8_t)((tc & 0xfc) | v);
            f[l3] = (uint8_t)((f[l3] & 0xf0) | tc >> 4);
            f[l3 + 1] = (uint8_t)((tc & 0x0f) << 4 | (f[l3 + 1] & 0x0f));
        }
        break;
    }
    case FLD_IPV4_SRC:
    case FLD_IPV4_DST:
        if (pr & FK_IPV4)
            set_bytes(f, k, lay, l3 + (op->field == FLD_IPV4_SRC ? 12 : 16), op->bytes, 4,
                      true, true);
        break;
    case FLD_IPV6_SRC:
    case FLD_IPV6_DST:
        if (pr & FK_IPV6)
            set_bytes(f, k, lay, l3 + (op->field == FLD_IPV6_SRC ? 8 : 24), op->bytes, 16,
                      false, true);
        break;
    case FLD_IPV6_FLABEL:
        if (pr & FK_IPV6) {
            f[l3 + 1] = (uint8_t)((f[l3 + 1] & 0xf0) | v >> 16);
            wr16(f + l3 + 2, (uint16_t)v);
        }
        break;
    case FLD_TCP_SRC:
    case FLD_TCP_DST:
        if (pr & FK_TCP)
            set_u16(f, k, lay, l4 + (op->field == FLD_TCP_SRC ? 0 : 2), (uint16_t)v, false,
                    true);
        break;
    case FLD_UDP_SRC:
    case FLD_UDP_DST:
        if (pr & FK_UDP)
            set_u16(f, k, lay, l4 + (op->field == FLD_UDP_SRC ? 0 : 2), (uint16_t)v, false,
                    true);
        break;
    case FLD_SCTP_SRC:
    case FLD_SCTP_DST:
        if ((pr & FK_SCTP) && l4 >= 0)
            set_sctp_port(f, lay, op->field == FLD_SCTP_SRC ? 0 : 2, (uint16_t)v);
        break;
    case FLD_ICMPV4_TYPE:
    case FLD_ICMPV4_CODE:
        if (pr & FK_ICMPV4) {
            uint8_t old[2] = {f[l4], f[l4 + 1]};

            f[l4 + (op->field == FLD_ICMPV4_TYPE ? 0 : 1)] = (uint8_t)v;
            csum_replace(f + l4 + 2, old, f + l4, 2, false);
        }
        break;
    case FLD_ICMPV6_TYPE:
    case FLD_ICMPV6_CODE:
        if (pr & FK_ICMPV6) {
            uint8_t nv[2] = {f[l4], f[l4 + 1]};

            nv[op->field == FLD_ICMPV6_TYPE ? 0 : 1] = (uint8_t)v;
            set_bytes(f, k, lay, l4, nv, 2, false, true);
        }
        break;
    case FLD_ARP_OP:
        if (pr & FK_ARP)
            wr16(f + l3 + 6, (uint16_t)v);
        break;
    case FLD_ARP_SHA:
        if (pr & FK_ARP)
            memcpy(f + l3 + 8, op->bytes, 6);
        break;
    case FLD_ARP_SPA:
        if (pr & FK_ARP)
            memcpy(f + l3 + 14, op->bytes, 4);
        break;
    case FLD_ARP_THA:
        if (pr & FK_ARP)
            memcpy(f + l3 + 18, op->bytes, 6);
        break;
    case FLD_ARP_TPA:
        if (pr & FK_ARP)
            memcpy(f + l3 + 24, op->bytes, 4);
        break;
    case FLD_IPV6_ND_TARGET:
        if (pr & FK_ND_TARGET)
            set_bytes(f, k, lay, l4 + 8, op->bytes, 16, false, true);
        break;
    case FLD_IPV6_ND_SLL:
        if (pr & FK_ND_SLL)
            set_bytes(f, k, lay, lay->sll_off, op->bytes, 6, false, true);
        break;
    case FLD_IPV6_ND_TLL:
        if (pr & FK_ND_TLL)
            set_bytes(f, k, lay, lay->tll_off, op->bytes, 6, false, true);
        break;
    default:
        break;
    }
}

/* False: the packet's TTL/hop limit ran out and it must be dropped. */
static bool dec_ttl(uint8_t *f, const struct flow_key *k, const struct pkt_layout *lay)
{
    int32_t l3 = lay->l3;

    if (k->present & FK_IPV4) {
        if (f[l3 + 8] <= 1)
            return false;
        set_u16(f, k, lay, l3 + 8, (uint16_t)((f[l3 + 8] - 1) << 8 | f[l3 + 9]), true,
                false);
    } else if (k->present & FK_IPV6) {
        if (f[l3 + 7] <= 1)
            return false;
        f[l3 + 7]--;
    }
    return true;
}

void actions_run(struct pkt_buf *pb, uint32_t in_port, const struct action_op *ops,
                 uint32_t n_ops, const struct action_env *env)
{
    struct flow_key k;
    struct pkt_layout lay;
    uint32_t i;

    if (parse_packet(pb->data, pb->len, in_port, &k, &lay) == PARSE_RUNT)
        return;
    for (i = 0; i < n_ops; i++) {
        const struct action_op *op = &ops[i];

        switch (op->kind) {
        case OP_OUTPUT:
            if (env->emit)
                env->emit(env->ctx, op->arg, pb->data, pb->len);
            break;
        case OP_LB:
            if (env->lb)
                env->lb(env->ctx, pb, in_port, op->arg);
            return;
        case OP_SET_FIELD:
            set_field(pb->data, &k, &lay, op);
            break;
        case OP_PUSH_VLAN: {
            uint16_t tci = (k.present & FK_VLAN) ? rd16(pb->data + 14) : 0;

            if (pb->headroom < 4)
                return;
            pb->data -= 4;
            pb->len += 4;
            pb->headroom -= 4;
            memmove(pb->data, pb->data + 4, 12);
            wr16(pb->data + 12, (uint16_t)op->arg);
            wr16(pb->data + 14, tci);
            parse_packet(pb->data, pb->len, in_port, &k, &lay);
            break;
        }
        case OP_POP_VLAN:
            if (k.present & FK_VLAN) {
                memmove(pb->data + 4, pb->data, 12);
                pb->data += 4;
                pb->len -= 4;
                pb->headroom += 4;
                parse_packet(pb->data, pb->len, in_port, &k, &lay);
            }
            break;
        case OP_DEC_TTL:
            if (!dec_ttl(pb->data, &k, &lay))
                return;
            break;
        default:
            break;
        }
    }
}

void actions_nat(uint8_t *frame, struct flow_key *k, const struct pkt_layout *lay,
                 const struct action_op *ops, uint32_t n_ops)
{
    uint32_t i;

    for (i = 0; i < n_ops; i++) {
        const struct action_op *op = &ops[i];

        set_field(frame, k, lay, op);
        switch (op->field) {
        case FLD_IPV4_SRC:
        case FLD_IPV6_SRC:
            memcpy(k->nw_src, op->bytes, op->field == FLD_IPV4_SRC ? 4 : 16);
            break;
        case FLD_IPV4_DST:
        case FLD_IPV6_DST:
            memcpy(k->nw_dst, op->bytes, op->field == FLD_IPV4_DST ? 4 : 16);
            break;
        case FLD_TCP_SRC:
        case FLD_UDP_SRC:
        case FLD_SCTP_SRC:
            k->tp_src = (uint16_t)op->arg;
            break;
        case FLD_TCP_DST:
        case FLD_UDP_DST:
        case FLD_SCTP_DST:
            k->tp_dst = (uint16_t)op->arg;
            break;
        default:
            break;
        }
    }
}

void csum_complete_partial(uint8_t *frame, int32_t l4, int32_t l3_end, int is_udp)
{
    uint8_t *c = frame + l4 + (is_udp ? 6 : 16);
    uint16_t res = (uint16_t)~csum_fold(csum_add(0, frame + l4, (size_t)(l3_end - l4)));

    if (is_udp && res == 0)
        res = 0xffff;
    wr16(c, res);
}

void sctp_complete_partial(uint8_t *frame, int32_t l4, int32_t l3_end)
{
    sctp_crc_store(frame + l4, sctp_crc(frame + l4, (size_t)(l3_end - l4)));
}

int csum_finish_partial(uint8_t *frame, const struct flow_key *k, const struct pkt_layout *lay,
                        int32_t csum_start, int32_t csum_offset)
{
    int udp = !!(k->present & FK_UDP);

    if (k->present & FK_SCTP) {     /* a CRC32c, not a ones' complement sum */
        if (lay->l4 < 0 || (csum_start >= 0 && (csum_start != lay->l4 || csum_offset != SCTP_CSUM_OFFSET)))
            return -1;
        sctp_complete_partial(frame, lay->l4, lay->l3_end);
        return 0;
    }
    if (csum_start < 0) {
        if ((k->present & (FK_TCP | FK_UDP)) && lay->l4 >= 0)
            csum_complete_partial(frame, lay->l4, lay->l3_end, udp);
        return 0;
    }
    if (lay->l3 < 0 || lay->l3_end < 0 || csum_start < lay->l3 + 20 || csum_offset < 0 ||
        csum_start + csum_offset + 2 > lay->l3_end)
        return -1;
    {
        uint8_t *c = frame + csum_start + csum_offset;
        uint16_t res = (uint16_t)~csum_fold(csum_add(0, frame + csum_start,
                                                     (size_t)(lay->l3_end - csum_start)));

        if (udp && csum_start == lay->l4 && csum_offset == 6 && res == 0)
            res = 0xffff;
        wr16(c, res);
    }
    return 0;
}
