/* kp_app._maglev: the new-connection table's fill (kp_app/maglev.py is its twin and its
 * specification), in C because a Service of 1,000 pods has a table of 2^17 entries:
 * about 4 s in Python, which a pod change would wait for, a few ms here.
 *
 * build_table(keys, size) -> list: keys are the pods' walk keys in table order (u64,
 * maglev.py computes them with BLAKE2b from the addresses), size a power of 2; the
 * result maps each slot to a pod's index.  Each pod walks the slots in the order of a
 * keyed 4-round Feistel permutation of the slot bits (an odd bit count cycle-walks a
 * domain twice the table) and the pods take turns claiming their next free slot.
 * The rounds are computed, not tabulated, so memory is the table and one cursor per
 * pod whatever the size.  The arithmetic matches Python's on unbounded integers,
 * including the one place it is wider than 64 bits (key + round). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>

static uint64_t mix(uint64_t x)
{
    x = (x ^ (x >> 33)) * 0xFF51AFD7ED558CCDULL;
    x = (x ^ (x >> 33)) * 0xC4CEB9FE1A85EC53ULL;
    return x ^ (x >> 33);
}

/* mix(key + i) as Python computes it: key + i may pass 2^64, and the carry then shows
 * in the first shift (the product drops it: only the low 64 bits are kept). */
static uint64_t round_key(uint64_t key, uint64_t i)
{
    uint64_t s = key + i, carry = s < key;
    uint64_t x = (s ^ ((s >> 33) | (carry << 31))) * 0xFF51AFD7ED558CCDULL;

    x = (x ^ (x >> 33)) * 0xC4CEB9FE1A85EC53ULL;
    return x ^ (x >> 33);
}

struct walk {
    uint64_t k[4];       /* the rounds' keys */
    uint64_t next;       /* the next position of the walk */
};

static uint64_t permute(const struct walk *w, uint64_t j, unsigned half, uint64_t mask)
{
    uint64_t left = j >> half, right = j & mask, t;
    int r;

    for (r = 0; r < 4; r++) {
        t = right;
        right = left ^ (mix(right ^ w->k[r]) & mask);
        left = t;
    }
    return (left << half) | right;
}

/* The pod's next slot in its walk (every slot once, over `size` calls). */
static uint64_t step(struct walk *w, uint64_t size, unsigned half, uint64_t mask)
{
    uint64_t j = w->next++;

    do
        j = permute(w, j, half, mask);
    while (j >= size);
    return j;
}

static PyObject *build_table(PyObject *self, PyObject *args)
{
    PyObject *keys_o, *seq, *out = NULL;
    unsigned long long size;
    Py_ssize_t n, i;
    struct walk *walks = NULL;
    int32_t *table = NULL;
    unsigned bits = 0, half;
    uint64_t mask, filled = 0, s;

    (void)self;
    if (!PyArg_ParseTuple(args, "OK:build_table", &keys_o, &size))
        return NULL;
    if (size == 0 || (size & (size - 1)) || size > (1ULL << 30))
        return PyErr_Format(PyExc_ValueError, "table size %llu is not a power of 2 up to 2^30",
                            size);
    seq = PySequence_Fast(keys_o, "keys must be a sequence of integers");
    if (!seq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        return PyList_New(0);
    }
    walks = calloc((size_t)n, sizeof *walks);
    table = malloc((size_t)size * sizeof *table);
    if (!walks || !table) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        unsigned long long key = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        int r;

        if (PyErr_Occurred())
            goto done;
        for (r = 0; r < 4; r++)
            walks[i].k[r] = round_key(key, (uint64_t)r);
    }
    while ((1ULL << bits) < size)
        bits++;
    half = (bits + 1) / 2;
    mask = (1ULL << half) - 1;
    for (s = 0; s < size; s++)
        table[s] = -1;
    Py_BEGIN_ALLOW_THREADS
    while (filled < size) {
        for (i = 0; i < n && filled < size; i++) {
            uint64_t slot;

            do     /* each pod's walk resumes where it stopped */
                slot = step(&walks[i], size, half, mask);
            while (table[slot] >= 0);
            table[slot] = (int32_t)i;
            filled++;
        }
    }
    Py_END_ALLOW_THREADS
    out = PyList_New((Py_ssize_t)size);
    for (s = 0; out && s < size; s++) {
        PyObject *v = PyLong_FromLong(table[s]);

        if (!v) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)s, v);
    }
done:
    free(walks);
    free(table);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"build_table", build_table, METH_VARARGS,
     "build_table(walk_keys, size) -> [pod index per slot] (see kp_app/maglev.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "kp_app._maglev", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__maglev(void) { return PyModule_Create(&module); }
