/* CPython glue for kp_switch._fastpath: turns Python values into C structures and back,
 * and releases the GIL around everything that waits or touches packets.  No packet
 * logic lives here (see FASTPATH.md for the API, fastpath_ref.py for its twin). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "actions.h"
#include "crc32c.h"
#include "datapath.h"
#include "flow_cache.h"
#include "flow_key.h"
#include "keyed_hash.h"
#include "lb_binding.h"
#include "megaflow.h"
#include "parse.h"
#include "segment.h"
#include "session_hash.h"

/* ------------------------------------------------------------------ formatting */

static PyObject *mac_str(const uint8_t *m)
{
    return PyUnicode_FromFormat("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
                                m[4], m[5]);
}

static PyObject *ipv4_str(const uint8_t *a)
{
    return PyUnicode_FromFormat("%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
}

/* RFC 5952 text as Python 3.11's ipaddress prints it (glibc's inet_ntop differs: it
 * prints IPv4-mapped and -compatible addresses in dotted form). */
static PyObject *ipv6_str(const uint8_t *a)
{
    char buf[48], *o = buf;
    int words[8], best = -1, best_len = 0, start = -1, i;

    for (i = 0; i < 8; i++)
        words[i] = a[2 * i] << 8 | a[2 * i + 1];
    for (i = 0; i <= 8; i++) {
        if (i < 8 && words[i] == 0) {
            if (start < 0)
                start = i;
        } else if (start >= 0) {
            if (i - start > best_len) {
                best = start;
                best_len = i - start;
            }
            start = -1;
        }
    }
    if (best_len < 2)
        best = -1;
    for (i = 0; i < 8; i++) {
        if (i == best) {
            o += sprintf(o, "::");
            i += best_len - 1;
            continue;
        }
        if (i > 0 && i != best + best_len)
            *o++ = ':';
        o += sprintf(o, "%x", words[i]);
    }
    *o = 0;
    return PyUnicode_FromString(buf);
}

static int put(PyObject *d, const char *name, PyObject *v)
{
    int r;

    if (!v)
        return -1;
    r = PyDict_SetItemString(d, name, v);
    Py_DECREF(v);
    return r;
}

#define PUT_INT(d, name, v) put(d, name, PyLong_FromUnsignedLong(v))

static PyObject *key_dict(const struct flow_key *k)
{
    PyObject *d = PyDict_New();
    uint32_t pr = k->present;
    int e = 0;

    if (!d)
        return NULL;
    e |= PUT_INT(d, "in_port", k->in_port);
    e |= put(d, "eth_dst", mac_str(k->eth_dst));
    e |= put(d, "eth_src", mac_str(k->eth_src));
    e |= PUT_INT(d, "eth_type", k->eth_type);
    if (pr & FK_VLAN) {
        e |= PUT_INT(d, "vlan_vid", k->vlan_vid);
        e |= PUT_INT(d, "vlan_pcp", k->vlan_pcp);
    }
    if (pr & FK_IP) {
        e |= PUT_INT(d, "ip_dscp", k->ip_dscp);
        e |= PUT_INT(d, "ip_ecn", k->ip_ecn);
        e |= PUT_INT(d, "ip_proto", k->ip_proto);
    }
    if (pr & FK_IPV4) {
        e |= put(d, "ipv4_src", ipv4_str(k->nw_src));
        e |= put(d, "ipv4_dst", ipv4_str(k->nw_dst));
    }
    if (pr & FK_IPV6) {
        e |= put(d, "ipv6_src", ipv6_str(k->nw_src));
        e |= put(d, "ipv6_dst", ipv6_str(k->nw_dst));
        e |= PUT_INT(d, "ipv6_flabel", k->ipv6_flabel);
    }
    if (pr & FK_TCP) {
        e |= PUT_INT(d, "tcp_src", k->tp_src);
        e |= PUT_INT(d, "tcp_dst", k->tp_dst);
        e |= PUT_INT(d, "tcp_flags", k->tcp_flags);
    }
    if (pr & FK_UDP) {
        e |= PUT_INT(d, "udp_src", k->tp_src);
        e |= PUT_INT(d, "udp_dst", k->tp_dst);
    }
    if (pr & FK_SCTP) {
        e |= PUT_INT(d, "sctp_src", k->tp_src);
        e |= PUT_INT(d, "sctp_dst", k->tp_dst);
    }
    if (pr & FK_ICMPV4) {
        e |= PUT_INT(d, "icmpv4_type", k->tp_src);
        e |= PUT_INT(d, "icmpv4_code", k->tp_dst);
    }
    if (pr & FK_ICMPV6) {
        e |= PUT_INT(d, "icmpv6_type", k->tp_src);
        e |= PUT_INT(d, "icmpv6_code", k->tp_dst);
    }
    if (pr & FK_ARP) {
        e |= PUT_INT(d, "arp_op", k->tp_src);
        e |= put(d, "arp_spa", ipv4_str(k->nw_src));
        e |= put(d, "arp_tpa", ipv4_str(k->nw_dst));
        e |= put(d, "arp_sha", mac_str(k->arp_sha));
        e |= put(d, "arp_tha", mac_str(k->arp_tha));
    }
    if (pr & FK_ND_TARGET)
        e |= put(d, "ipv6_nd_target", ipv6_str(k->nd_target));
    if (pr & FK_ND_SLL)
        e |= put(d, "ipv6_nd_sll", mac_str(k->arp_sha));
    if (pr & FK_ND_TLL)
        e |= put(d, "ipv6_nd_tll", mac_str(k->arp_tha));
    if (pr & FK_LB_LOOPBACK)     /* not a match field: what the tables may do with it */
        e |= put(d, LB_LOOPBACK_KEY, Py_NewRef(Py_True));
    if (e) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------------ actions */

enum vkind { V_MAC, V_IPV4, V_IPV6, V_INT };

static const struct field_def {
    const char *name;
    uint8_t id;
    uint8_t kind;
    uint8_t bits;
} FIELDS[] = {
    {"eth_dst", FLD_ETH_DST, V_MAC, 0},        {"eth_src", FLD_ETH_SRC, V_MAC, 0},
    {"vlan_vid", FLD_VLAN_VID, V_INT, 13},     {"vlan_pcp", FLD_VLAN_PCP, V_INT, 3},
    {"ip_dscp", FLD_IP_DSCP, V_INT, 6},        {"ip_ecn", FLD_IP_ECN, V_INT, 2},
    {"ipv4_src", FLD_IPV4_SRC, V_IPV4, 0},     {"ipv4_dst", FLD_IPV4_DST, V_IPV4, 0},
    {"ipv6_src", FLD_IPV6_SRC, V_IPV6, 0},     {"ipv6_dst", FLD_IPV6_DST, V_IPV6, 0},
    {"ipv6_flabel", FLD_IPV6_FLABEL, V_INT, 20}, {"tcp_src", FLD_TCP_SRC, V_INT, 16},
    {"tcp_dst", FLD_TCP_DST, V_INT, 16},       {"udp_src", FLD_UDP_SRC, V_INT, 16},
    {"udp_dst", FLD_UDP_DST, V_INT, 16},       {"icmpv4_type", FLD_ICMPV4_TYPE, V_INT, 8},
    {"icmpv4_code", FLD_ICMPV4_CODE, V_INT, 8}, {"icmpv6_type", FLD_ICMPV6_TYPE, V_INT, 8},
    {"icmpv6_code", FLD_ICMPV6_CODE, V_INT, 8}, {"arp_op", FLD_ARP_OP, V_INT, 16},
    {"arp_spa", FLD_ARP_SPA, V_IPV4, 0},       {"arp_tpa", FLD_ARP_TPA, V_IPV4, 0},
    {"arp_sha", FLD_ARP_SHA, V_MAC, 0},        {"arp_tha", FLD_ARP_THA, V_MAC, 0},
    {"ipv6_nd_target", FLD_IPV6_ND_TARGET, V_IPV6, 0},
    {"ipv6_nd_sll", FLD_IPV6_ND_SLL, V_MAC, 0}, {"ipv6_nd_tll", FLD_IPV6_ND_TLL, V_MAC, 0},
    {"sctp_src", FLD_SCTP_SRC, V_INT, 16},     {"sctp_dst", FLD_SCTP_DST, V_INT, 16},
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

static const struct field_def *field_by_id(uint8_t id)
{
    size_t i;

    for (i = 0; i < N_FIELDS; i++)
        if (FIELDS[i].id == id)
            return &FIELDS[i];
    return NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "aa:b:cc:..": six groups of one or two hex digits (what fastpath_ref accepts). */
static int parse_mac(const char *s, uint8_t *out)
{
    int i;

    for (i = 0; i < 6; i++) {
        int a = hexval(*s), b;

        if (a < 0)
            return -1;
        s++;
        b = hexval(*s);
        if (b >= 0) {
            a = a * 16 + b;
            s++;
        }
        out[i] = (uint8_t)a;
        if (i < 5 && *s++ != ':')
            return -1;
    }
    return *s ? -1 : 0;
}

static int bad_action(PyObject *a)
{
    PyErr_Format(PyExc_ValueError, "bad action %R", a);
    return -1;
}

static int is_int(PyObject *o) { return PyLong_Check(o) && !PyBool_Check(o); }

static int compile_set_field(PyObject *a, struct action_op *op)
{
    PyObject *name = PyTuple_GET_ITEM(a, 1), *v = PyTuple_GET_ITEM(a, 2);
    const char *n = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    const struct field_def *f = NULL;
    size_t i;

    if (!n) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "cannot set field %R", name);
        return -1;
    }
    for (i = 0; i < N_FIELDS; i++)
        if (!strcmp(FIELDS[i].name, n))
            f = &FIELDS[i];
    if (!f) {
        PyErr_Format(PyExc_ValueError, "cannot set field %R", name);
        return -1;
    }
    op->kind = OP_SET_FIELD;
    op->field = f->id;
    if (f->kind == V_INT) {
        int overflow;
        long long x = is_int(v) ? PyLong_AsLongLongAndOverflow(v, &overflow) : -1;

        if (!is_int(v) || overflow || x < 0 || x >= (1LL << f->bits)) {
            PyErr_Format(PyExc_ValueError, "bad value for %s: %R", n, v);
            return -1;
        }
        op->arg = (uint32_t)x;
        return 0;
    }
    {
        const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
        int ok;

        if (!s) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "bad value for %s: %R", n, v);
            return -1;
        }
        if (f->kind == V_MAC)
            ok = parse_mac(s, op->bytes) == 0;
        else
            ok = inet_pton(f->kind == V_IPV4 ? AF_INET : AF_INET6, s, op->bytes) == 1;
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "bad value for %s: %R", n, v);
            return -1;
        }
    }
    return 0;
}

/* actions (a sequence of tuples) -> *ops (PyMem_Malloc'd, zeroed) and *n. */
static int compile_actions(PyObject *actions, struct action_op **ops, uint32_t *n)
{
    PyObject *seq = PySequence_Fast(actions, "actions must be a list of tuples");
    Py_ssize_t i, len;

    *ops = NULL;
    *n = 0;
    if (!seq)
        return -1;
    len = PySequence_Fast_GET_SIZE(seq);
    *ops = PyMem_Calloc(len ? (size_t)len : 1, sizeof **ops);
    if (!*ops) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < len; i++) {
        PyObject *a = PySequence_Fast_GET_ITEM(seq, i), *kind;
        struct action_op *op = &(*ops)[i];
        const char *k;
        Py_ssize_t an;

        if (!PyTuple_Check(a) || PyTuple_GET_SIZE(a) == 0)
            goto bad;
        an = PyTuple_GET_SIZE(a);
        kind = PyTuple_GET_ITEM(a, 0);
        k = PyUnicode_Check(kind) ? PyUnicode_AsUTF8(kind) : NULL;
        if (!k) {
            PyErr_Clear();
            goto bad;
        }
        if (!strcmp(k, "output") && an == 2 && is_int(PyTuple_GET_ITEM(a, 1))) {
            int overflow;
            long long p = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(a, 1), &overflow);

            if (overflow || p < 0 || p > 0xffffffffLL)
                goto bad;
            op->kind = OP_OUTPUT;
            op->arg = (uint32_t)p;
        } else if (!strcmp(k, "set_field") && an == 3) {
            if (compile_set_field(a, op))
                goto fail;
        } else if (!strcmp(k, "push_vlan") && an == 2 && is_int(PyTuple_GET_ITEM(a, 1))) {
            long t = PyLong_AsLong(PyTuple_GET_ITEM(a, 1));

            if (t != 0x8100 && t != 0x88a8) {
                PyErr_Clear();
                goto bad;
            }
            op->kind = OP_PUSH_VLAN;
            op->arg = (uint32_t)t;
        } else if (!strcmp(k, "pop_vlan") && an == 1) {
            op->kind = OP_POP_VLAN;
        } else if (!strcmp(k, "dec_ttl") && an == 1) {
            op->kind = OP_DEC_TTL;
        } else if (!strcmp(k, "kp_lb") && an == 2 && is_int(PyTuple_GET_ITEM(a, 1))) {
            long v = PyLong_AsLong(PyTuple_GET_ITEM(a, 1));

            if (v <= 0 || v >= (long)LB_MAX_VIPS) {
                PyErr_Clear();
                goto bad;
            }
            op->kind = OP_LB;
            op->arg = (uint32_t)v;
        } else {
            goto bad;
        }
        continue;
bad:
        bad_action(a);
fail:
        Py_DECREF(seq);
        PyMem_Free(*ops);
        *ops = NULL;
        return -1;
    }
    Py_DECREF(seq);
    *n = (uint32_t)len;
    return 0;
}

static PyObject *op_tuple(const struct action_op *op)
{
    const struct field_def *f;
    PyObject *v;

    switch (op->kind) {
    case OP_OUTPUT:
        return Py_BuildValue("(sk)", "output", (unsigned long)op->arg);
    case OP_PUSH_VLAN:
        return Py_BuildValue("(sk)", "push_vlan", (unsigned long)op->arg);
    case OP_POP_VLAN:
        return Py_BuildValue("(s)", "pop_vlan");
    case OP_DEC_TTL:
        return Py_BuildValue("(s)", "dec_ttl");
    case OP_LB:
        return Py_BuildValue("(sk)", "kp_lb", (unsigned long)op->arg);
    default:
        break;
    }
    f = field_by_id(op->field);
    if (!f)
        return PyErr_Format(PyExc_SystemError, "corrupt action program");
    switch (f->kind) {
    case V_MAC:
        v = mac_str(op->bytes);
        break;
    case V_IPV4:
        v = ipv4_str(op->bytes);
        break;
    case V_IPV6:
        v = ipv6_str(op->bytes);
        break;
    default:
        v = PyLong_FromUnsignedLong(op->arg);
    }
    return v ? Py_BuildValue("(ssN)", "set_field", f->name, v) : NULL;
}

/* ------------------------------------------------------------------ argument helpers */

static int get_ids(PyObject *o, uint32_t *ids, uint32_t *n, uint32_t max)
{
    PyObject *seq = PySequence_Fast(o, "flow_ids must be a list of ints");
    Py_ssize_t i, len;

    if (!seq)
        return -1;
    len = PySequence_Fast_GET_SIZE(seq);
    if ((size_t)len > max) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %u flow ids", max);
        return -1;
    }
    for (i = 0; i < len; i++) {
        PyObject *x = PySequence_Fast_GET_ITEM(seq, i);
        int overflow;
        long long v = is_int(x) ? PyLong_AsLongLongAndOverflow(x, &overflow) : -1;

        if (!is_int(x) || overflow || v < 0 || v >= MAX_FLOW_IDS) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "flow id out of range: %R", x);
            return -1;
        }
        ids[i] = (uint32_t)v;
    }
    Py_DECREF(seq);
    *n = (uint32_t)len;
    return 0;
}

static int get_flow_id(PyObject *x, uint32_t *id)
{
    int overflow;
    long long v = is_int(x) ? PyLong_AsLongLongAndOverflow(x, &overflow) : -1;

    if (!is_int(x) || overflow || v < 0 || v >= MAX_FLOW_IDS) {
        PyErr_Format(PyExc_ValueError, "flow id out of range: %R", x);
        return -1;
    }
    *id = (uint32_t)v;
    return 0;
}

static int get_key(Py_buffer *b, struct flow_key *k)
{
    if (b->len != FLOW_KEY_SIZE) {
        PyErr_Format(PyExc_ValueError, "key_blob must be %d bytes", FLOW_KEY_SIZE);
        return -1;
    }
    memcpy(k, b->buf, FLOW_KEY_SIZE);
    return 0;
}

/* A key_blob given as one argument (bytes or any buffer). */
static int key_of(PyObject *o, struct flow_key *k)
{
    Py_buffer b;
    int r;

    if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE))
        return -1;
    r = get_key(&b, k);
    PyBuffer_Release(&b);
    return r;
}

/* An insert's (key_blob, actions, flow_ids): releases b; on failure no ops are left. */
static int insert_args(Py_buffer *b, PyObject *actions, PyObject *ids_o, struct flow_key *k,
                       struct action_op **ops, uint32_t *n_ops, uint32_t *ids,
                       uint32_t *n_ids)
{
    int r = get_key(b, k) || get_ids(ids_o, ids, n_ids, MAX_IDS_PER_INSERT) ||
            compile_actions(actions, ops, n_ops);

    PyBuffer_Release(b);
    return r ? -1 : 0;
}

static int check_buckets(unsigned long long n)
{
    if (n == 0 || n > MAX_BUCKETS || (n & (n - 1))) {
        PyErr_Format(PyExc_ValueError, "buckets must be a power of 2 (1 .. 2^20): %llu", n);
        return -1;
    }
    return 0;
}

static int get_buckets(PyObject *o, uint32_t *out)
{
    int overflow;
    long long n;

    if (!is_int(o)) {
        PyErr_Format(PyExc_ValueError, "buckets must be a power of 2 (1 .. 2^20): %R", o);
        return -1;
    }
    n = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || n <= 0 || check_buckets((unsigned long long)n)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "buckets must be a power of 2 (1 .. 2^20): %R", o);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

/* ------------------------------------------------------------------ module functions */

/* The packet in a buffer of exactly its length: a bytes object has a spare NUL after
 * its data, which would hide a one-byte over-read from AddressSanitizer. */
static uint8_t *exact_copy(const Py_buffer *b)
{
    uint8_t *p = PyMem_Malloc(b->len ? (size_t)b->len : 1);

    if (!p) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(p, b->buf, (size_t)b->len);
    return p;
}

/* parse() and parse_blob() share this: (packet, in_port) -> key. Returns 1 with the key
 * in *k, 0 for a runt (too short for Ethernet), -1 with a Python error set. */
static int parse_args_key(PyObject *args, const char *format, struct flow_key *k,
                          enum parse_result *r)
{
    Py_buffer b;
    unsigned long in_port;
    struct pkt_layout lay;
    uint8_t *pkt;

    if (!PyArg_ParseTuple(args, format, &b, &in_port))
        return -1;
    pkt = exact_copy(&b);
    if (pkt)
        *r = parse_packet(pkt, b.len > UINT32_MAX ? UINT32_MAX : (uint32_t)b.len,
                          (uint32_t)in_port, k, &lay);
    PyBuffer_Release(&b);
    PyMem_Free(pkt);
    if (!pkt)
        return -1;
    return *r == PARSE_RUNT ? 0 : 1;
}

static PyObject *fp_parse(PyObject *self, PyObject *args)
{
    struct flow_key k;
    enum parse_result r;
    int got;

    (void)self;
    got = parse_args_key(args, "y*k:parse", &k, &r);
    if (got < 0)
        return NULL;
    if (got == 0)
        Py_RETURN_NONE;
    return key_dict(&k);
}

static PyObject *fp_parse_blob(PyObject *self, PyObject *args)
{
    struct flow_key k;
    enum parse_result r;
    int got;
    PyObject *d;

    (void)self;
    got = parse_args_key(args, "y*k:parse_blob", &k, &r);
    if (got < 0)
        return NULL;
    if (got == 0)
        Py_RETURN_NONE;
    d = key_dict(&k);
    if (!d)
        return NULL;
    return Py_BuildValue("(Ny#O)", d, (const char *)&k, (Py_ssize_t)sizeof k,
                         r != PARSE_OK ? Py_True : Py_False);
}

struct collect {
    PyObject *list;
    int failed;
};

static void collect_emit(void *ctx_, uint32_t port, const uint8_t *frame, uint32_t len)
{
    struct collect *c = ctx_;
    PyObject *t;

    if (c->failed)
        return;
    t = Py_BuildValue("(ky#)", (unsigned long)port, (const char *)frame, (Py_ssize_t)len);
    if (!t || PyList_Append(c->list, t))
        c->failed = 1;
    Py_XDECREF(t);
}

static PyObject *fp_apply_actions(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"packet", "actions", "in_port", NULL};
    Py_buffer b;
    PyObject *actions;
    unsigned long in_port = 0;
    struct action_op *ops;
    uint32_t n;
    uint8_t *buf;
    struct pkt_buf pb;
    struct collect c = {NULL, 0};

    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*O|k:apply_actions", kwlist, &b, &actions,
                                     &in_port))
        return NULL;
    if (compile_actions(actions, &ops, &n)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    buf = PyMem_Malloc((size_t)b.len + ACTION_HEADROOM);
    c.list = PyList_New(0);
    if (!buf || !c.list) {
        PyMem_Free(buf);
        PyMem_Free(ops);
        Py_XDECREF(c.list);
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(buf + ACTION_HEADROOM, b.buf, (size_t)b.len);
    pb.data = buf + ACTION_HEADROOM;
    pb.len = (uint32_t)b.len;
    pb.headroom = ACTION_HEADROOM;
    {
        struct action_env env = {collect_emit, NULL, &c};   /* kp_lb: no switch, dropped */

        actions_run(&pb, (uint32_t)in_port, ops, n, &env);
    }
    PyMem_Free(buf);
    PyMem_Free(ops);
    PyBuffer_Release(&b);
    if (c.failed) {
        Py_DECREF(c.list);
        return NULL;
    }
    return c.list;
}

/* complete_partial_checksum(packet, csum_start=-1, csum_offset=-1) -> bytes, or None
 * when the packet cannot be finished (csum_finish_partial). */
static PyObject *fp_complete_partial_checksum(PyObject *self, PyObject *args)
{
    Py_buffer b;
    struct flow_key k;
    struct pkt_layout lay;
    PyObject *out;
    int start = -1, offset = -1, r = 0;

    (void)self;
    uint8_t *pkt;
    uint32_t len;

    if (!PyArg_ParseTuple(args, "y*|ii:complete_partial_checksum", &b, &start, &offset))
        return NULL;
    pkt = exact_copy(&b);
    len = (uint32_t)b.len;
    PyBuffer_Release(&b);
    if (!pkt)
        return NULL;
    if (parse_packet(pkt, len, 0, &k, &lay) != PARSE_RUNT)
        r = csum_finish_partial(pkt, &k, &lay, start < 0 ? -1 : start, offset);
    out = r ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize((const char *)pkt, len);
    PyMem_Free(pkt);
    return out;
}

static void seg_collect(void *ctx, const uint8_t *seg, uint32_t len)
{
    collect_emit(ctx, 0, seg, len);
}

typedef int (*segment_fn)(const uint8_t *, uint32_t, uint32_t, uint32_t, uint8_t *,
                          uint32_t, seg_emit_fn, void *);

static int udp_segment_fn(const uint8_t *frame, uint32_t len, uint32_t gso_size,
                          uint32_t unused, uint8_t *scratch, uint32_t scratch_len,
                          seg_emit_fn emit, void *ctx)
{
    (void)unused;
    return udp_segment(frame, len, gso_size, scratch, scratch_len, emit, ctx);
}

/* segment_tcp(frame, mtu[, seg_size]) / segment_udp(frame, gso_size): the frame's
 * segments, [frame] when it is left whole, [] when it is refused (SEG_REFUSED: the
 * datapath drops it). */
static PyObject *segment_frames(PyObject *args, const char *fmt, segment_fn segment,
                                unsigned int lo)
{
    Py_buffer b;
    unsigned int size, size2 = 0;
    struct collect c = {NULL, 0};
    uint8_t *scratch;
    PyObject *out;
    Py_ssize_t i;
    int n;

    if (!PyArg_ParseTuple(args, fmt, &b, &size, &size2))
        return NULL;
    if (size < lo || size > 65535 || size2 > 65535) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "size out of range: %u", size);
    }
    scratch = PyMem_Malloc(SEG_SCRATCH(size) + 256);   /* + any headers, as the datapath */
    c.list = PyList_New(0);
    if (!scratch || !c.list) {
        PyMem_Free(scratch);
        Py_XDECREF(c.list);
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    {
        uint8_t *pkt = exact_copy(&b);

        n = pkt ? segment(pkt, (uint32_t)b.len, size, size2, scratch,
                          SEG_SCRATCH(size) + 256, seg_collect, &c)
                : 0;
        if (!pkt)
            c.failed = 1;
        PyMem_Free(pkt);
    }
    PyMem_Free(scratch);
    if (!n && !c.failed)
        collect_emit(&c, 0, b.buf, (uint32_t)b.len);
    /* SEG_REFUSED: nothing was emitted, the list stays empty */
    PyBuffer_Release(&b);
    if (c.failed) {
        Py_DECREF(c.list);
        return NULL;
    }
    /* [(0, frame), ...] -> [frame, ...] */
    out = PyList_New(PyList_GET_SIZE(c.list));
    for (i = 0; out && i < PyList_GET_SIZE(c.list); i++) {
        PyObject *f = PyTuple_GET_ITEM(PyList_GET_ITEM(c.list, i), 1);

        Py_INCREF(f);
        PyList_SET_ITEM(out, i, f);
    }
    Py_DECREF(c.list);
    return out;
}

static PyObject *fp_segment_tcp(PyObject *self, PyObject *args)
{
    (void)self;
    return segment_frames(args, "y*I|I:segment_tcp", tcp_segment, 68);
}

static PyObject *fp_segment_udp(PyObject *self, PyObject *args)
{
    (void)self;
    return segment_frames(args, "y*I:segment_udp", udp_segment_fn, 1);
}

static PyObject *fp_key_hash(PyObject *self, PyObject *args)
{
    PyObject *blob;
    struct flow_key k;

    (void)self;
    if (!PyArg_ParseTuple(args, "O:key_hash", &blob) || key_of(blob, &k))
        return NULL;
    return PyLong_FromUnsignedLong(flow_key_hash(&k));
}

/* For tests: [CRC32c of data by each implementation the CPU has] (crc32c.h). */
static PyObject *fp_crc32c_impls(PyObject *self, PyObject *args)
{
    Py_buffer b;
    PyObject *out;
    int which;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*:crc32c_impls", &b))
        return NULL;
    out = PyList_New(0);
    for (which = 0; out && which < 2; which++) {
        int ok;
        uint32_t c = crc32c_impl(which, 0, b.buf, (size_t)b.len, &ok);
        PyObject *v;

        if (!ok)
            continue;
        v = PyLong_FromUnsignedLong(c);
        if (!v || PyList_Append(out, v)) {
            Py_XDECREF(v);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(v);
    }
    PyBuffer_Release(&b);
    return out;
}

static PyObject *fp_crc32c(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned long crc = 0;
    uint32_t c;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*|k:crc32c", &b, &crc))
        return NULL;
    c = crc32c((uint32_t)crc, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

/* The process secret (keyed_hash.h), for tests: the twin places entries as the C
 * tables do only under the same key.  Read only: nothing sets it. */
static PyObject *fp_hash_secret(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return Py_BuildValue("(KK)", (unsigned long long)keyed_hash_secret[0],
                         (unsigned long long)keyed_hash_secret[1]);
}

static PyObject *fp_session_hash(PyObject *self, PyObject *args)
{
    PyObject *blob;
    struct flow_key k;
    unsigned long basis;

    (void)self;
    if (!PyArg_ParseTuple(args, "Ok:session_hash", &blob, &basis) || key_of(blob, &k))
        return NULL;
    if (basis > SESSION_HASH_MAX_BASIS) {
        PyErr_Format(PyExc_ValueError, "hash basis %lu is not 0..%u", basis,
                     SESSION_HASH_MAX_BASIS);
        return NULL;
    }
    if (!(k.present & (FK_IPV4 | FK_IPV6))) {
        PyErr_SetString(PyExc_ValueError, "session_hash: not an IPv4 or IPv6 key");
        return NULL;
    }
    return PyLong_FromUnsignedLong(session_hash(&k, (uint32_t)basis));
}

/* ------------------------------------------------------------------ _CacheForTest */

typedef struct {
    PyObject_HEAD
    struct flow_cache *c;
    struct cache_stats st;
} CacheObject;

static PyObject *cache_stats_dict(const struct cache_stats *st, uint64_t extra_failures,
                                  uint64_t extra_mf_failures)
{
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsisKsKsKsKsK}", "hits", (unsigned long long)st->hits, "misses",
        (unsigned long long)st->misses, "inserts", (unsigned long long)st->inserts,
        "insert_failures", (unsigned long long)(st->insert_failures + extra_failures),
        "evictions", (unsigned long long)st->evictions, "expired",
        (unsigned long long)st->expired, "invalidated", (unsigned long long)st->invalidated,
        "entries", (unsigned long long)st->entries, "buckets",
        (unsigned long long)st->buckets, "ways", WAYS,
        "mf_hits", (unsigned long long)st->mf_hits,
        "mf_inserts", (unsigned long long)st->mf_inserts,
        "mf_insert_failures", (unsigned long long)(st->mf_insert_failures + extra_mf_failures),
        "mf_entries", (unsigned long long)st->mf_entries,
        "mf_subtables", (unsigned long long)st->mf_subtables);
}

/* An optional mask_blob argument: 0 with *has = 0 for None, 0 with the megaflow mask in
 * *m, or -1 with ValueError. */
static int mask_arg(PyObject *o, struct mf_key *m, int *has)
{
    struct flow_key k;

    *has = 0;
    if (!o || o == Py_None)
        return 0;
    if (PyObject_CheckBuffer(o) == 0) {
        PyErr_SetString(PyExc_ValueError, "mask_blob must be bytes or None");
        return -1;
    }
    {
        Py_buffer b;

        if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE))
            return -1;
        if (b.len != FLOW_KEY_SIZE) {
            PyBuffer_Release(&b);
            PyErr_Format(PyExc_ValueError, "mask_blob must be %d bytes", FLOW_KEY_SIZE);
            return -1;
        }
        memcpy(&k, b.buf, FLOW_KEY_SIZE);
        PyBuffer_Release(&b);
    }
    if (!mf_mask_of(&k, m)) {
        PyErr_SetString(PyExc_ValueError, "not a megaflow mask (a field's bits out of range "
                                          "or one that no cacheable packet has)");
        return -1;
    }
    *has = 1;
    return 0;
}

static int Cache_init(CacheObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buckets", NULL};
    PyObject *bo;
    uint32_t n;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:_CacheForTest", kwlist, &bo))
        return -1;
    if (get_buckets(bo, &n))
        return -1;
    flow_cache_free(self->c);
    memset(&self->st, 0, sizeof self->st);
    self->c = flow_cache_new(n, &self->st);
    if (!self->c) {
        PyErr_NoMemory();
        return -1;
    }
    flow_cache_adopt(self->c);
    return 0;
}

static void Cache_dealloc(CacheObject *self)
{
    flow_cache_free(self->c);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Cache_insert(CacheObject *self, PyObject *args)
{
    Py_buffer b;
    PyObject *actions, *ids_o, *mask_o = NULL;
    unsigned long long now;
    struct flow_key k;
    struct mf_key mask;
    struct action_op *ops = NULL;
    uint32_t n_ops, ids[MAX_IDS_PER_INSERT], n_ids;
    int has_mask;
    bool ok;

    if (!PyArg_ParseTuple(args, "y*OOK|O:insert", &b, &actions, &ids_o, &now, &mask_o))
        return NULL;
    if (mask_arg(mask_o, &mask, &has_mask)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    if (insert_args(&b, actions, ids_o, &k, &ops, &n_ops, ids, &n_ids))
        return NULL;
    ok = flow_cache_insert(self->c, &k, ops, n_ops, ids, n_ids, (uint32_t)now,
                           has_mask ? &mask : NULL);
    PyMem_Free(ops);
    return PyBool_FromLong(ok);
}

static PyObject *Cache_lookup(CacheObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned long long now;
    struct flow_key k;
    struct cache_key ck;
    uint64_t packed = 0;
    const struct action_prog *p;
    PyObject *acts, *ids;
    uint32_t i, n_ids;

    if (!PyArg_ParseTuple(args, "y*K:lookup", &b, &now))
        return NULL;
    if (get_key(&b, &k)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    PyBuffer_Release(&b);
    if (!cache_key_of(&k, &ck)) {
        flow_cache_miss(self->c);
        Py_RETURN_NONE;
    }
    {
        const uint8_t *v6 = (k.present & FK_IPV6) ? k.nw_src : NULL;

        p = flow_cache_lookup(self->c, &k, &ck, v6, cache_key_hash(&ck, v6), (uint32_t)now,
                              &packed);
    }
    if (!p)
        Py_RETURN_NONE;
    for (n_ids = 0; n_ids < MAX_IDS_PER_ENTRY && cache_ids_get(packed, n_ids) != IDS_NONE;
         n_ids++)
        ;
    acts = PyList_New(p->n_ops);
    ids = PyList_New(n_ids);
    if (!acts || !ids)
        goto fail;
    for (i = 0; i < p->n_ops; i++) {
        PyObject *t = op_tuple(&p->ops[i]);

        if (!t)
            goto fail;
        PyList_SET_ITEM(acts, i, t);
    }
    for (i = 0; i < n_ids; i++) {
        PyObject *x = PyLong_FromUnsignedLong(cache_ids_get(packed, i));

        if (!x)
            goto fail;
        PyList_SET_ITEM(ids, i, x);
    }
    return Py_BuildValue("(NN)", acts, ids);
fail:
    Py_XDECREF(acts);
    Py_XDECREF(ids);
    return NULL;
}

static PyObject *Cache_invalidate_flow(CacheObject *self, PyObject *arg)
{
    uint32_t id;

    if (get_flow_id(arg, &id))
        return NULL;
    flow_cache_invalidate_flow(self->c, id);
    Py_RETURN_NONE;
}

static PyObject *Cache_invalidate_all(CacheObject *self, PyObject *unused)
{
    (void)unused;
    flow_cache_invalidate_all(self->c);
    Py_RETURN_NONE;
}

static PyObject *Cache_advance_epoch(CacheObject *self, PyObject *arg)
{
    int overflow;
    long long n = is_int(arg) ? PyLong_AsLongLongAndOverflow(arg, &overflow) : -1;

    if (!is_int(arg) || overflow || n < 0 || n >= (1ll << 62))
        return PyErr_Format(PyExc_ValueError, "epoch step out of range: %R", arg);
    flow_cache_advance_epoch(self->c, (uint64_t)n);
    Py_RETURN_NONE;
}

static PyObject *Cache_bucket_of(CacheObject *self, PyObject *arg)
{
    struct flow_key k;

    return key_of(arg, &k) ? NULL : PyLong_FromUnsignedLong(flow_cache_bucket_of(self->c, &k));
}

static PyObject *Cache_buckets_of(CacheObject *self, PyObject *arg)
{
    struct flow_key k;

    if (key_of(arg, &k))
        return NULL;
    return Py_BuildValue("(kk)", (unsigned long)flow_cache_bucket_of(self->c, &k),
                         (unsigned long)flow_cache_alt_bucket_of(self->c, &k));
}

static PyObject *Cache_stats(CacheObject *self, PyObject *unused)
{
    (void)unused;
    return cache_stats_dict(&self->st, 0, 0);
}

static PyMethodDef Cache_methods[] = {
    {"insert", (PyCFunction)Cache_insert, METH_VARARGS, "insert(key_blob, actions, flow_ids, now_ms, mask_blob=None) -> bool"},
    {"lookup", (PyCFunction)Cache_lookup, METH_VARARGS, "lookup(key_blob, now_ms) -> (actions, flow_ids) | None"},
    {"invalidate_flow", (PyCFunction)Cache_invalidate_flow, METH_O, NULL},
    {"invalidate_all", (PyCFunction)Cache_invalidate_all, METH_NOARGS, NULL},
    {"advance_epoch", (PyCFunction)Cache_advance_epoch, METH_O,
     "advance_epoch(n): test hook, the epoch as after n invalidations of no entry"},
    {"bucket_of", (PyCFunction)Cache_bucket_of, METH_O, "bucket_of(key_blob) -> first bucket"},
    {"buckets_of", (PyCFunction)Cache_buckets_of, METH_O, "buckets_of(key_blob) -> (first, second)"},
    {"stats", (PyCFunction)Cache_stats, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kp_switch._fastpath._CacheForTest",
    .tp_doc = "The flow cache alone, with explicit time (tests only).",
    .tp_basicsize = sizeof(CacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cache_init,
    .tp_dealloc = (destructor)Cache_dealloc,
    .tp_methods = Cache_methods,
};

/* ------------------------------------------------------------------ Datapath */

typedef struct {
    PyObject_HEAD
    struct datapath *dp;
} DatapathObject;

static int Datapath_init(DatapathObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"ports", "buckets", "port_io", "threads", NULL};
    PyObject *ports, *seq, *bo = NULL;
    uint32_t buckets = 1024, *nos = NULL, n, i, j;
    int threads = 1;
    const char **names = NULL, *port_io = "afpacket";
    enum port_kind kind;
    char err[256] = "";
    struct datapath *dp;
    int rc = -1;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Osi:Datapath", kwlist, &ports, &bo, &port_io,
                                     &threads))
        return -1;
    if (threads < 1 || threads > DP_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "%d datapath threads: want 1..%d", threads,
                     DP_MAX_THREADS);
        return -1;
    }
    if (bo && get_buckets(bo, &buckets))
        return -1;
    if (!strcmp(port_io, "afpacket")) {
        kind = PORT_AFPACKET;
    } else if (!strcmp(port_io, "afxdp")) {
        kind = PORT_AFXDP;
    } else {
        PyErr_Format(PyExc_ValueError, "port_io must be 'afpacket' or 'afxdp', not '%s'",
                     port_io);
        return -1;
    }
    seq = PySequence_Fast(ports, "ports must be a list of (port_no, ifname)");
    if (!seq)
        return -1;
    n = (uint32_t)PySequence_Fast_GET_SIZE(seq);
    nos = PyMem_Calloc(n ? n : 1, sizeof *nos);
    names = PyMem_Calloc(n ? n : 1, sizeof *names);
    if (!nos || !names) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        long long no;
        int overflow = 0;

        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !is_int(PyTuple_GET_ITEM(t, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(t, 1))) {
            PyErr_Format(PyExc_ValueError, "bad port %R: want (port_no, ifname)", t);
            goto out;
        }
        no = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(t, 0), &overflow);
        for (j = 0; j < i; j++)
            if (nos[j] == no)
                overflow = 1;
        if (overflow || no <= 0 || no >= 0xffffff00LL) {
            PyErr_Format(PyExc_ValueError, "bad or duplicate port number %R",
                         PyTuple_GET_ITEM(t, 0));
            goto out;
        }
        nos[i] = (uint32_t)no;
        names[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 1));
        if (!names[i])
            goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    dp = dp_new(nos, names, n, kind, buckets, (uint32_t)threads, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (!dp) {
        PyErr_SetObject(PyExc_OSError,
                        Py_BuildValue("(is)", errno, err[0] ? err : strerror(errno)));
        goto out;
    }
    if (self->dp) {
        struct datapath *old = self->dp;

        Py_BEGIN_ALLOW_THREADS
        dp_free(old);
        Py_END_ALLOW_THREADS
    }
    self->dp = dp;
    rc = 0;
out:
    PyMem_Free(nos);
    PyMem_Free(names);
    Py_DECREF(seq);
    return rc;
}

static void Datapath_dealloc(DatapathObject *self)
{
    if (self->dp) {
        struct datapath *dp = self->dp;

        Py_BEGIN_ALLOW_THREADS
        dp_free(dp);
        Py_END_ALLOW_THREADS
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define NEED_DP(self)                                                                       \
    do {                                                                                    \
        if (!(self)->dp) {                                                                  \
            PyErr_SetString(PyExc_RuntimeError, "Datapath not initialised");                \
            return NULL;                                                                    \
        }                                                                                   \
    } while (0)

static PyObject *Datapath_start(DatapathObject *self, PyObject *unused)
{
    int r;

    (void)unused;
    NEED_DP(self);
    r = dp_start(self->dp);
    if (r) {
        errno = r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *Datapath_stop(DatapathObject *self, PyObject *unused)
{
    struct datapath *dp = self->dp;

    (void)unused;
    NEED_DP(self);
    Py_BEGIN_ALLOW_THREADS
    dp_stop(dp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Datapath_next_misses(DatapathObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout_ms", "max_count", NULL};
    int timeout_ms, max_count = 64;
    struct datapath *dp = self->dp;
    uint8_t *buf;
    uint32_t n, i;
    size_t len, off = 0;
    PyObject *out;

    NEED_DP(self);
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|i:next_misses", kwlist, &timeout_ms,
                                     &max_count))
        return NULL;
    if (max_count <= 0)
        return PyList_New(0);
    Py_BEGIN_ALLOW_THREADS
    buf = dp_next_misses(dp, timeout_ms, (uint32_t)max_count, &n, &len);
    Py_END_ALLOW_THREADS
    out = PyList_New(0);
    for (i = 0; out && i < n; i++) {
        const struct miss_rec *r = (const struct miss_rec *)(buf + off);
        PyObject *d = key_dict(&r->key), *t;

        t = d ? Py_BuildValue("(ky#Ny#k)", (unsigned long)r->in_port,
                              (const char *)r + MISS_HDR_LEN, (Py_ssize_t)r->pkt_len, d,
                              (const char *)&r->key, (Py_ssize_t)sizeof r->key,
                              (unsigned long)r->thread)
              : NULL;
        if (!t || PyList_Append(out, t)) {
            Py_XDECREF(t);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(t);
        off += r->rec_len;
    }
    free(buf);
    return out;
}

static PyObject *Datapath_execute(DatapathObject *self, PyObject *args)
{
    struct datapath *dp = self->dp;
    unsigned long in_port, thread = 0;
    Py_buffer b;
    PyObject *actions;
    struct action_op *ops;
    uint32_t n;
    int r;

    NEED_DP(self);
    if (!PyArg_ParseTuple(args, "ky*O|k:execute", &in_port, &b, &actions, &thread))
        return NULL;
    if (thread >= dp->n_threads) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "no datapath thread %lu (of %u)", thread,
                            dp->n_threads);
    }
    if (compile_actions(actions, &ops, &n)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    r = dp_execute(dp, (uint32_t)thread, (uint32_t)in_port, b.buf, (uint32_t)b.len, ops, n);
    Py_END_ALLOW_THREADS
    PyMem_Free(ops);
    PyBuffer_Release(&b);
    if (r)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *Datapath_cache_insert(DatapathObject *self, PyObject *args)
{
    struct datapath *dp = self->dp;
    Py_buffer b;
    PyObject *actions, *ids_o, *mask_o = NULL;
    struct flow_key k;
    struct mf_key mask;
    struct action_op *ops = NULL;
    uint32_t n_ops, ids[MAX_IDS_PER_INSERT], n_ids;
    int has_mask;

    NEED_DP(self);
    if (!PyArg_ParseTuple(args, "y*OO|O:cache_insert", &b, &actions, &ids_o, &mask_o))
        return NULL;
    if (mask_arg(mask_o, &mask, &has_mask)) {
        PyBuffer_Release(&b);
        return NULL;
    }
    if (insert_args(&b, actions, ids_o, &k, &ops, &n_ops, ids, &n_ids))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    dp_cache_insert(dp, &k, ops, n_ops, ids, n_ids, has_mask ? &mask : NULL);
    Py_END_ALLOW_THREADS
    PyMem_Free(ops);
    Py_RETURN_NONE;
}

static PyObject *Datapath_invalidate_flow(DatapathObject *self, PyObject *arg)
{
    struct datapath *dp = self->dp;
    uint32_t id;

    NEED_DP(self);
    if (get_flow_id(arg, &id))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    dp_invalidate_flow(dp, id);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Datapath_invalidate_all(DatapathObject *self, PyObject *unused)
{
    struct datapath *dp = self->dp;

    (void)unused;
    NEED_DP(self);
    Py_BEGIN_ALLOW_THREADS
    dp_invalidate_all(dp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Datapath_flow_counters(DatapathObject *self, PyObject *arg)
{
    PyObject *seq, *out;
    Py_ssize_t i, n;

    NEED_DP(self);
    seq = PySequence_Fast(arg, "flow_ids must be a list of ints");
    if (!seq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(n);
    for (i = 0; out && i < n; i++) {
        PyObject *x = PySequence_Fast_GET_ITEM(seq, i), *t;
        unsigned long long packets = 0, bytes = 0, last = 0;
        uint32_t id, th;

        if (get_flow_id(x, &id)) {
            Py_CLEAR(out);
            break;
        }
        for (th = 0; th < self->dp->n_threads; th++) {   /* each thread counts its own */
            struct flow_counter *fc = &self->dp->threads[th].counters[id];
            unsigned long long l = __atomic_load_n(&fc->last_hit_ns, __ATOMIC_RELAXED);

            packets += __atomic_load_n(&fc->packets, __ATOMIC_RELAXED);
            bytes += __atomic_load_n(&fc->bytes, __ATOMIC_RELAXED);
            last = l > last ? l : last;
        }
        t = Py_BuildValue("(KKK)", packets, bytes, last);
        if (!t) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, t);
    }
    Py_DECREF(seq);
    return out;
}

static PyObject *Datapath_set_buckets(DatapathObject *self, PyObject *arg)
{
    struct datapath *dp = self->dp;
    uint32_t n;
    int r;

    NEED_DP(self);
    if (get_buckets(arg, &n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = dp_set_buckets(dp, n);
    Py_END_ALLOW_THREADS
    if (r == ENOMEM)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

#define LD(x) ((unsigned long long)__atomic_load_n(&(x), __ATOMIC_RELAXED))

static PyObject *Datapath_stats(DatapathObject *self, PyObject *unused)
{
    struct datapath *dp = self->dp;
    struct cache_stats st;
    unsigned long long parse_errors = 0, malformed = 0, refused = 0, miss_drops = 0;
    PyObject *d, *ports;
    uint32_t i, t;

    (void)unused;
    NEED_DP(self);
    /* Sums over the threads; buckets is one cache's (each thread's has as many). */
    memset(&st, 0, sizeof st);
    for (t = 0; t < dp->n_threads; t++) {
        const struct dp_thread *th = &dp->threads[t];

        st.hits += LD(th->cst.hits);
        st.misses += LD(th->cst.misses);
        st.inserts += LD(th->cst.inserts);
        st.insert_failures += LD(th->cst.insert_failures);
        st.evictions += LD(th->cst.evictions);
        st.expired += LD(th->cst.expired);
        st.invalidated += LD(th->cst.invalidated);
        st.entries += LD(th->cst.entries);
        st.mf_hits += LD(th->cst.mf_hits);
        st.mf_inserts += LD(th->cst.mf_inserts);
        st.mf_insert_failures += LD(th->cst.mf_insert_failures);
        st.mf_entries += LD(th->cst.mf_entries);
        st.mf_subtables += LD(th->cst.mf_subtables);
        parse_errors += LD(th->parse_errors);
        malformed += LD(th->malformed);
        refused += LD(th->refused);
        miss_drops += LD(th->miss_queue_drops);
    }
    st.buckets = LD(dp->threads[0].cst.buckets);
    d = cache_stats_dict(&st, LD(dp->cmd_queue_drops), LD(dp->mf_cmd_drops));
    ports = PyDict_New();
    if (!d || !ports)
        goto fail;
    if (put(d, "parse_errors", PyLong_FromUnsignedLongLong(parse_errors)) ||
        put(d, "malformed", PyLong_FromUnsignedLongLong(malformed)) ||
        put(d, "refused", PyLong_FromUnsignedLongLong(refused)) ||
        put(d, "miss_queue_drops", PyLong_FromUnsignedLongLong(miss_drops)) ||
        put(d, "threads", PyLong_FromUnsignedLong(dp->n_threads)))
        goto fail;
    for (i = 0; i < dp->n_ports; i++) {
        struct port_stats ps;
        PyObject *pd, *key;
        int r;

        memset(&ps, 0, sizeof ps);
        for (t = 0; t < dp->n_threads; t++) {
            const struct dp_port *p = &dp->threads[t].ports[i];

            ps.rx_packets += LD(p->st.rx_packets);
            ps.rx_bytes += LD(p->st.rx_bytes);
            ps.rx_dropped += LD(p->st.rx_dropped);
            ps.rx_errors += LD(p->st.rx_errors);
            ps.tx_packets += LD(p->st.tx_packets);
            ps.tx_bytes += LD(p->st.tx_bytes);
            ps.tx_dropped += LD(p->st.tx_dropped);
            ps.tx_errors += LD(p->st.tx_errors);
        }
        pd = Py_BuildValue(
            "{sKsKsKsKsKsKsKsK}", "rx_packets", (unsigned long long)ps.rx_packets, "rx_bytes",
            (unsigned long long)ps.rx_bytes, "rx_dropped", (unsigned long long)ps.rx_dropped,
            "rx_errors", (unsigned long long)ps.rx_errors, "tx_packets",
            (unsigned long long)ps.tx_packets, "tx_bytes", (unsigned long long)ps.tx_bytes,
            "tx_dropped", (unsigned long long)ps.tx_dropped, "tx_errors",
            (unsigned long long)ps.tx_errors);
        key = PyLong_FromUnsignedLong(dp->threads[0].ports[i].port_no);
        r = pd && key ? PyDict_SetItem(ports, key, pd) : -1;

        Py_XDECREF(pd);
        Py_XDECREF(key);
        if (r)
            goto fail;
    }
    if (PyDict_SetItemString(d, "ports", ports))
        goto fail;
    Py_DECREF(ports);
    return d;
fail:
    Py_XDECREF(d);
    Py_XDECREF(ports);
    return NULL;
}

/* {port_no: "afpacket" | "afxdp native copy" | ...}: each port's I/O, for logs. */
static PyObject *Datapath_port_io(DatapathObject *self, PyObject *unused)
{
    PyObject *d;
    uint32_t i;

    (void)unused;
    if (!self->dp)
        return PyErr_Format(PyExc_ValueError, "datapath not initialised");
    d = PyDict_New();
    for (i = 0; d && i < self->dp->n_ports; i++) {
        const struct dp_port *p = &self->dp->threads[0].ports[i];
        char buf[64];
        PyObject *key = PyLong_FromUnsignedLong(p->port_no), *v;

        port_describe(p, buf, sizeof buf);
        v = PyUnicode_FromString(buf);
        if (!key || !v || PyDict_SetItem(d, key, v))
            Py_CLEAR(d);
        Py_XDECREF(key);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *Datapath_set_port_state(DatapathObject *self, PyObject *args)
{
    unsigned long port_no;
    int up;
    struct dp_port *p;
    uint32_t t;

    NEED_DP(self);
    if (!PyArg_ParseTuple(args, "kp:set_port_state", &port_no, &up))
        return NULL;
    p = dp_port(self->dp, (uint32_t)port_no);
    if (!p)
        return PyErr_Format(PyExc_ValueError, "no port %lu", port_no);
    for (t = 0; t < self->dp->n_threads; t++)   /* every thread's socket on it */
        __atomic_store_n(&dp_thread_port(&self->dp->threads[t], (uint32_t)port_no)->up, up,
                         __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

#define LB_METHOD(name)                                                                    \
    static PyObject *Datapath_lb_##name(DatapathObject *self, PyObject *a)                 \
    {                                                                                      \
        NEED_DP(self);                                                                     \
        return lb_py_##name(self->dp, a);                                                  \
    }
LB_METHOD(configure)
LB_METHOD(set_vip)
LB_METHOD(delete_vip)
LB_METHOD(flush)
LB_METHOD(set_hash_key)
LB_METHOD(stats)
LB_METHOD(sessions)

static PyMethodDef Datapath_methods[] = {
    {"lb_configure", (PyCFunction)Datapath_lb_configure, METH_VARARGS,
     "lb_configure(buckets, (tcp_established, tcp_closing, tcp_opening, udp)[, hairpin4, hairpin6])"},
    {"lb_set_vip", (PyCFunction)Datapath_lb_set_vip, METH_VARARGS,
     "lb_set_vip(vip_id, version, basis, table_u16be, pods_20byte_records)"},
    {"lb_delete_vip", (PyCFunction)Datapath_lb_delete_vip, METH_O, NULL},
    {"lb_flush", (PyCFunction)Datapath_lb_flush, METH_VARARGS,
     "lb_flush(vip_id, pod_addr16=None, version=0, port=0) -> sessions ended"},
    {"lb_set_hash_key", (PyCFunction)Datapath_lb_set_hash_key, METH_VARARGS, NULL},
    {"lb_stats", (PyCFunction)Datapath_lb_stats, METH_VARARGS,
     "lb_stats(first_vip_id=0, most=65536) -> dict (VIPs from that id on, at most most)"},
    {"lb_sessions", (PyCFunction)Datapath_lb_sessions, METH_VARARGS, NULL},
    {"start", (PyCFunction)Datapath_start, METH_NOARGS, "Start the datapath thread."},
    {"stop", (PyCFunction)Datapath_stop, METH_NOARGS, "Stop and join it (idempotent)."},
    {"next_misses", (PyCFunction)(void (*)(void))Datapath_next_misses,
     METH_VARARGS | METH_KEYWORDS,
     "next_misses(timeout_ms, max_count=64) -> [(in_port, packet, key, key_blob, thread)]"},
    {"execute", (PyCFunction)Datapath_execute, METH_VARARGS,
     "execute(in_port, packet, actions, thread=0): run actions and transmit now (a "
     "kp_lb's session goes in that datapath thread's table: the miss's)."},
    {"cache_insert", (PyCFunction)Datapath_cache_insert, METH_VARARGS,
     "cache_insert(key_blob, actions, flow_ids, mask_blob=None): lossy."},
    {"invalidate_flow", (PyCFunction)Datapath_invalidate_flow, METH_O, NULL},
    {"invalidate_all", (PyCFunction)Datapath_invalidate_all, METH_NOARGS, NULL},
    {"flow_counters", (PyCFunction)Datapath_flow_counters, METH_O,
     "flow_counters(ids) -> [(packets, bytes, last_hit_monotonic_ns)]"},
    {"set_buckets", (PyCFunction)Datapath_set_buckets, METH_O, NULL},
    {"stats", (PyCFunction)Datapath_stats, METH_NOARGS, NULL},
    {"set_port_state", (PyCFunction)Datapath_set_port_state, METH_VARARGS, NULL},
    {"port_io", (PyCFunction)Datapath_port_io, METH_NOARGS,
     "port_io() -> {port_no: 'afpacket' | 'afxdp native copy' | ...}"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DatapathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kp_switch._fastpath.Datapath",
    .tp_doc = "Datapath(ports, buckets=1024, port_io='afpacket', threads=1): AF_PACKET or "
              "AF_XDP ports, and threads datapath threads, each with its own caches.",
    .tp_basicsize = sizeof(DatapathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Datapath_init,
    .tp_dealloc = (destructor)Datapath_dealloc,
    .tp_methods = Datapath_methods,
};

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"parse", fp_parse, METH_VARARGS, "parse(packet, in_port) -> dict | None"},
    {"parse_blob", fp_parse_blob, METH_VARARGS,
     "parse_blob(packet, in_port) -> (key, key_blob, malformed) | None"},
    {"apply_actions", (PyCFunction)(void (*)(void))fp_apply_actions,
     METH_VARARGS | METH_KEYWORDS, "apply_actions(packet, actions, in_port=0) -> [(port, frame)]"},
    {"complete_partial_checksum", fp_complete_partial_checksum, METH_VARARGS, NULL},
    {"segment_tcp", fp_segment_tcp, METH_VARARGS,
     "segment_tcp(frame, mtu, seg_size=0) -> [frame]"},
    {"segment_udp", fp_segment_udp, METH_VARARGS,
     "segment_udp(frame, gso_size) -> [frame]"},
    {"key_hash", fp_key_hash, METH_VARARGS, NULL},
    {"crc32c", fp_crc32c, METH_VARARGS, "crc32c(data, crc=0) -> CRC32c (SCTP's checksum)"},
    {"crc32c_impls", fp_crc32c_impls, METH_VARARGS, NULL},
    {"hash_secret", fp_hash_secret, METH_NOARGS,
     "hash_secret() -> (k0, k1): the process secret the tables are keyed with"},
    {"session_hash", fp_session_hash, METH_VARARGS,
     "session_hash(key_blob, basis) -> Open vSwitch's symmetric_l3l4+udp hash"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastpath", "kp's C fast path (see switch/FASTPATH.md).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m;

    if (PyType_Ready(&DatapathType) < 0 || PyType_Ready(&CacheType) < 0)
        return NULL;
    m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&DatapathType);
    Py_INCREF(&CacheType);
    if (PyModule_AddObject(m, "Datapath", (PyObject *)&DatapathType) ||
        PyModule_AddObject(m, "_CacheForTest", (PyObject *)&CacheType) ||
        PyModule_AddIntConstant(m, "WAYS", WAYS) ||
        PyModule_AddIntConstant(m, "MAX_FLOW_IDS", MAX_FLOW_IDS) ||
        PyModule_AddIntConstant(m, "CACHE_IDLE_MS", CACHE_IDLE_MS) ||
        PyModule_AddIntConstant(m, "MAX_OPS", MAX_OPS) ||
        PyModule_AddIntConstant(m, "MAX_IDS_PER_ENTRY", MAX_IDS_PER_ENTRY) ||
        PyModule_AddIntConstant(m, "MAX_IDS_PER_INSERT", MAX_IDS_PER_INSERT) ||
        PyModule_AddIntConstant(m, "PROG_POOL", PROG_POOL) ||
        PyModule_AddIntConstant(m, "ADDR_POOL", ADDR_POOL) ||
        PyModule_AddIntConstant(m, "BYTES_PER_FLOW", (long)BYTES_PER_FLOW) ||
        PyModule_AddIntConstant(m, "MF_SUBTABLES", MF_SUBTABLES) ||
        PyModule_AddIntConstant(m, "MF_BUCKETS", MF_BUCKETS) ||
        PyModule_AddIntConstant(m, "MF_WAYS", MF_WAYS) ||
        PyModule_AddIntConstant(m, "MF_SWEEP_BUCKETS", MF_SWEEP_BUCKETS) ||
        PyModule_AddIntConstant(m, "MF_BYTES_PER_FLOW", (long)MF_BYTES_PER_FLOW) ||
        PyModule_AddIntConstant(m, "AGE_LIMIT", (long)AGE_LIMIT) ||
        PyModule_AddIntConstant(m, "MISS_QUEUE_LEN", MISS_QUEUE_LEN) ||
        PyModule_AddIntConstant(m, "MAX_THREADS", DP_MAX_THREADS) ||
        PyModule_AddIntConstant(m, "KEY_SIZE", FLOW_KEY_SIZE) ||
        PyModule_AddIntConstant(m, "MAX_BUCKETS", MAX_BUCKETS)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
