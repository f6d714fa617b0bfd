/* CPython glue for the in-switch load balancer (lb.h): the Datapath's lb_* methods.
 * Each takes the load balancers' locks with the GIL released; nothing here touches a
 * packet.  Twin: fastpath_ref.LoadBalancer.
 *
 * Every datapath thread has its own load balancer (datapath.h): a change is made to
 * each, under all their locks at once (taken in thread order), so no thread sees a
 * VIP that another does not; a VIP's table and pods are built once per thread, and
 * its counters are read as their sum over the threads, the session list as every
 * thread's sessions. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#include "datapath.h"
#include "lb_binding.h"

static const char *const timeout_names[LB_N_TIMEOUTS] = {"tcp_established", "tcp_closing",
                                                         "tcp_opening", "udp"};

PyObject *lb_py_configure(struct datapath *dp, PyObject *args)
{
    unsigned long buckets;
    unsigned long t[LB_N_TIMEOUTS];
    uint32_t ts[LB_N_TIMEOUTS];
    int r, i, bad = -1;
    Py_buffer hp[2] = {{0}, {0}};
    uint8_t hairpin_src[2][16];
    const uint8_t *hairpin[2] = {NULL, NULL};
    static const Py_ssize_t hairpin_len[2] = {4, 16};

    if (!PyArg_ParseTuple(args, "k(kkkk)|z*z*:lb_configure", &buckets, &t[0], &t[1], &t[2],
                          &t[3], &hp[0], &hp[1]))
        return NULL;
    /* Copied out, the buffers released at once: every return below is then plain. */
    for (i = 0; i < 2; i++) {
        if (!hp[i].obj)
            continue;
        if (hp[i].len == hairpin_len[i]) {
            memcpy(hairpin_src[i], hp[i].buf, (size_t)hairpin_len[i]);
            hairpin[i] = hairpin_src[i];
        } else if (bad < 0) {
            bad = i;
        }
        PyBuffer_Release(&hp[i]);
    }
    if (bad >= 0)
        return PyErr_Format(PyExc_ValueError, "an IPv%d hairpin source of %s bytes: want %zd",
                            bad ? 6 : 4, "another number of", hairpin_len[bad]);
    for (i = 0; i < LB_N_TIMEOUTS; i++) {
        if (t[i] == 0 || t[i] > 864000u)
            return PyErr_Format(PyExc_ValueError, "%s timeout %lu s out of 1..864000",
                                timeout_names[i], t[i]);
        ts[i] = (uint32_t)t[i];
    }
    if (buckets == 0 || buckets > LB_MAX_BUCKETS || (buckets & (buckets - 1)))
        return PyErr_Format(PyExc_ValueError, "%lu session buckets: want a power of 2 in 1..%u",
                            buckets, LB_MAX_BUCKETS);
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (i = 0, r = 0; i < (int)dp->n_threads && !r; i++)   /* ENOMEM: it keeps its table */
        r = lb_configure(dp->threads[i].lb, (uint32_t)buckets, ts, hairpin);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    if (r == ENOMEM)
        return PyErr_NoMemory();
    if (r)
        return PyErr_Format(PyExc_ValueError, "bad load balancer configuration");
    Py_RETURN_NONE;
}

PyObject *lb_py_set_vip(struct datapath *dp, PyObject *args)
{
    unsigned long id, version, basis;
    Py_buffer table, pods;
    struct lb_vip *v[DP_MAX_THREADS] = {NULL};
    char err[160] = "";
    uint32_t t, built = 0;

    if (!PyArg_ParseTuple(args, "kkky*y*:lb_set_vip", &id, &version, &basis, &table, &pods))
        return NULL;
    if (table.len % 2 || pods.len % 20 || id > 0xFFFFFFFFul || version > 255 ||
        basis > 0xFFFFFFFFul || (size_t)table.len / 2 > LB_MAX_TABLE ||
        (size_t)pods.len / 20 > LB_MAX_PODS)
        snprintf(err, sizeof err, "lb_set_vip: %zd table bytes, %zd pod bytes", table.len,
                 pods.len);
    else   /* one copy per thread, all built before any is published */
        for (; built < dp->n_threads; built++)
            if (!(v[built] = lb_vip_build((uint32_t)id, (uint32_t)version,
                                          (uint32_t)(table.len / 2), (uint32_t)basis,
                                          table.buf, pods.buf, (uint32_t)(pods.len / 20), err,
                                          sizeof err)))
                break;
    PyBuffer_Release(&table);
    PyBuffer_Release(&pods);
    if (built < dp->n_threads) {
        for (t = 0; t < built; t++)
            lb_vip_free(v[t]);
        return PyErr_Format(PyExc_ValueError, "%s", err);
    }
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (t = 0; t < dp->n_threads; t++)
        lb_vip_set(dp->threads[t].lb, (uint32_t)id, v[t]);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject *lb_py_delete_vip(struct datapath *dp, PyObject *arg)
{
    unsigned long id = PyLong_AsUnsignedLong(arg);
    uint32_t t;

    if (PyErr_Occurred())
        return NULL;
    if (id == 0 || id >= LB_MAX_VIPS)
        return PyErr_Format(PyExc_ValueError, "VIP id %lu out of 1..%u", id, LB_MAX_VIPS - 1);
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (t = 0; t < dp->n_threads; t++)
        lb_vip_set(dp->threads[t].lb, (uint32_t)id, NULL);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject *lb_py_flush(struct datapath *dp, PyObject *args)
{
    unsigned long id, version = 0, port = 0;
    PyObject *addr = Py_None;
    uint8_t pod[16];
    int has_pod = 0;
    uint64_t n;
    uint32_t t;

    if (!PyArg_ParseTuple(args, "k|Okk:lb_flush", &id, &addr, &version, &port))
        return NULL;
    if (addr != Py_None) {
        char *buf;
        Py_ssize_t len;

        if (PyBytes_AsStringAndSize(addr, &buf, &len))
            return NULL;
        if (len != 16 || (version != 4 && version != 6) || port > 0xFFFF)
            return PyErr_Format(PyExc_ValueError, "lb_flush: a pod is 16 address bytes, "
                                "version 4 or 6, a port");
        memcpy(pod, buf, 16);
        has_pod = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (t = 0, n = 0; t < dp->n_threads; t++)
        n += lb_flush(dp->threads[t].lb, (uint32_t)id, has_pod ? pod : NULL, (uint32_t)version,
                      (uint16_t)port);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(n);
}

PyObject *lb_py_set_hash_key(struct datapath *dp, PyObject *args)
{
    unsigned long long k0, k1;
    uint32_t t;

    if (!PyArg_ParseTuple(args, "KK:lb_set_hash_key", &k0, &k1))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (t = 0; t < dp->n_threads; t++)
        lb_set_hash_key(dp->threads[t].lb, k0, k1);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* A snapshot taken under the lock, turned into Python objects after it. */
struct vip_snap {
    uint32_t id, n_pods;
    uint64_t packets, bytes, sessions, untracked;
    uint64_t *pods;
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The VIPs from id `first` on, at most `most` of them, summed over the threads (every
 * lock held: each thread has the same VIPs, with the same pods). */
static int take_snapshot(struct datapath *dp, struct vip_snap **out, uint32_t *n_out,
                         uint64_t totals[10], uint64_t now, uint32_t first, uint32_t most)
{
    struct lb *lb = dp->threads[0].lb;
    uint32_t i, n = 0, s, total, t, j;
    struct vip_snap *snap;

    if (first == 0)
        first = 1;
    for (i = first; i < LB_MAX_VIPS && n < most; i++)
        n += lb->vips[i] != NULL;
    snap = calloc(n ? n : 1, sizeof *snap);
    if (!snap)
        return -1;
    for (i = first, n = 0; i < LB_MAX_VIPS && n < most; i++) {
        struct lb_vip *v = lb->vips[i];

        if (!v)
            continue;
        snap[n].id = v->id;
        snap[n].n_pods = v->n_pods;
        snap[n].pods = calloc(v->n_pods ? v->n_pods : 1, sizeof *snap[n].pods);
        if (!snap[n].pods)
            snap[n].n_pods = 0;
        for (t = 0; t < dp->n_threads; t++) {
            const struct lb_vip *tv = dp->threads[t].lb->vips[i];

            if (!tv)
                continue;
            snap[n].packets += tv->packets;
            snap[n].bytes += tv->bytes;
            snap[n].sessions += tv->sessions;
            snap[n].untracked += tv->untracked;
            for (j = 0; j < snap[n].n_pods && j < tv->n_pods; j++)
                snap[n].pods[j] += tv->pod_sessions[j];
        }
        n++;
    }
    memset(totals, 0, 10 * sizeof *totals);
    for (t = 0; t < dp->n_threads; t++) {
        lb = dp->threads[t].lb;
        /* Live sessions, counted now (entries wait for an insert to reclaim them). */
        total = lb->n_buckets * LB_WAYS;
        for (s = 0; s < total; s++) {
            const struct lb_entry *e = &lb->entries[s];

            totals[0] += e->sid && (e->flags & LB_E_FORWARD) &&
                         now - e->last_ms < lb->timeout_ms[e->state];
        }
        totals[1] += (uint64_t)total / 2;
        totals[2] += lb->c.created;
        totals[3] += lb->c.untracked;
        totals[4] += lb->c.dropped;
        totals[5] += lb->c.table_full;
        totals[6] += lb->c.source_limited;
        totals[7] += lb->c.fragments;
        totals[8] += lb->c.icmp_errors;
        totals[9] += lb->c.split;
    }
    *out = snap;
    *n_out = n;
    return 0;
}

PyObject *lb_py_stats(struct datapath *dp, PyObject *args)
{
    struct vip_snap *snap = NULL;
    uint64_t totals[10];
    uint32_t n = 0, i, j;
    PyObject *vips = NULL, *out = NULL;
    uint64_t now = now_ms();
    unsigned long first = 0, most = LB_MAX_VIPS;
    int r;

    if (!PyArg_ParseTuple(args, "|kk:lb_stats", &first, &most))
        return NULL;
    if (first >= LB_MAX_VIPS)
        first = LB_MAX_VIPS;
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    r = take_snapshot(dp, &snap, &n, totals, now, (uint32_t)first,
                      most > LB_MAX_VIPS ? LB_MAX_VIPS : (uint32_t)most);
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    if (r)
        return PyErr_NoMemory();
    vips = PyList_New(0);
    if (!vips)
        goto done;
    for (i = 0; i < n; i++) {
        PyObject *pods = PyList_New(snap[i].n_pods), *d;

        if (!pods)
            goto fail;
        for (j = 0; j < snap[i].n_pods; j++)
            PyList_SET_ITEM(pods, j, PyLong_FromUnsignedLongLong(snap[i].pods[j]));
        d = Py_BuildValue("{sksKsKsKsKsN}", "vip_id", (unsigned long)snap[i].id, "packets",
                          (unsigned long long)snap[i].packets, "bytes",
                          (unsigned long long)snap[i].bytes, "sessions",
                          (unsigned long long)snap[i].sessions, "untracked",
                          (unsigned long long)snap[i].untracked, "pods", pods);
        if (!d || PyList_Append(vips, d)) {
            Py_XDECREF(d);
            goto fail;
        }
        Py_DECREF(d);
    }
    out = Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsO}", "sessions", (unsigned long long)totals[0],
                        "capacity", (unsigned long long)totals[1], "created",
                        (unsigned long long)totals[2], "untracked",
                        (unsigned long long)totals[3], "dropped", (unsigned long long)totals[4],
                        "table_full", (unsigned long long)totals[5], "source_limited",
                        (unsigned long long)totals[6], "fragments",
                        (unsigned long long)totals[7], "icmp_errors",
                        (unsigned long long)totals[8], "split_sessions",
                        (unsigned long long)totals[9], "vips", vips);
fail:
    Py_XDECREF(vips);
done:
    for (i = 0; i < n; i++)
        free(snap[i].pods);
    free(snap);
    return out;
}

/* Up to max forward entries: (proto, version, client, client port, VIP address, VIP
 * port, pod, pod port, VIP id, state, idle ms). */
PyObject *lb_py_sessions(struct datapath *dp, PyObject *args)
{
    unsigned long max = 1000;
    struct lb_entry *copy;
    uint64_t now = now_ms(), *idle;
    uint32_t n = 0, s, total, i, t;
    PyObject *out;
    static const char *const states[LB_N_TIMEOUTS] = {"established", "closing", "opening",
                                                      "udp"};

    if (!PyArg_ParseTuple(args, "|k:lb_sessions", &max))
        return NULL;
    if (max > 1u << 20)
        max = 1u << 20;
    copy = malloc((max ? max : 1) * sizeof *copy);
    idle = malloc((max ? max : 1) * sizeof *idle);
    if (!copy || !idle) {
        free(copy);
        free(idle);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    dp_lb_lock_all(dp);
    for (t = 0; t < dp->n_threads; t++) {     /* each session is in one thread's table */
        const struct lb *lb = dp->threads[t].lb;

        total = lb->n_buckets * LB_WAYS;
        for (s = 0; s < total && n < max; s++) {
            const struct lb_entry *e = &lb->entries[s];

            if (e->sid && (e->flags & LB_E_FORWARD) &&
                now - e->last_ms < lb->timeout_ms[e->state]) {
                copy[n] = *e;
                idle[n++] = now - e->last_ms;
            }
        }
    }
    dp_lb_unlock_all(dp);
    Py_END_ALLOW_THREADS
    out = PyList_New(0);
    for (i = 0; out && i < n; i++) {
        const struct lb_entry *e = &copy[i];
        int alen = e->key.v6 ? 16 : 4;
        PyObject *t = Py_BuildValue("(iiy#iy#iy#iksK)", e->key.proto, e->key.v6 ? 6 : 4,
                                    (const char *)e->key.src, (Py_ssize_t)alen, e->key.sport,
                                    (const char *)e->key.dst, (Py_ssize_t)alen, e->key.dport,
                                    (const char *)e->new_dst, (Py_ssize_t)alen, e->new_dport,
                                    (unsigned long)e->vip_id, states[e->state],
                                    (unsigned long long)idle[i]);

        if (!t || PyList_Append(out, t))
            Py_CLEAR(out);
        Py_XDECREF(t);
    }
    free(copy);
    free(idle);
    return out;
}
