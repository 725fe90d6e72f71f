/*
 * tiercache._core.WTinyLFUCore: the Python type over the policy engine (policy.c): its
 * allocation and garbage collection, _core_setup, and the methods and attributes the
 * Python policies (tiercache/policy.py) call: on_hit, on_hits, admit, remove, keys,
 * segment, resize_window and the modes' setup. The per-access work is policy.c's.
 */
#include "policy.h"

#include <string.h>

/* the reuse gate's ghost (see policy.c); the gate is off after this */
static void reuse_free(Core *c) {
    PyMem_Free(c->rg_hash);
    PyMem_Free(c->rg_last);
    PyMem_Free(c->rg_tab);
    c->rg_hash = NULL;
    c->rg_last = NULL;
    c->rg_tab = NULL;
    c->rg_head = c->rg_count = 0;
    c->rg_mask = 0;
    c->reuse_cap = 0;
}

PyObject *tc_SEG_NAMES[4] = {NULL, NULL, NULL, NULL};
static void free_arrays(Core *c) {
    if (c->nodes) {
        for (Py_ssize_t i = 0; i < c->n_nodes; i++) Py_CLEAR(c->nodes[i].key);
    }
    PyMem_Free(c->nodes);
    c->nodes = NULL;
    c->n_nodes = 0;
    PyMem_Free(c->hint);
    c->hint = NULL;
    PyMem_Free(c->buckets);
    c->buckets = NULL;
    tc_free_ghost(c);
    reuse_free(c);
    tc_mini_free(c);
}

static int Core_traverse(Core *c, visitproc visit, void *arg) {
    Py_VISIT(c->index);
    Py_VISIT(c->sketch);
    Py_VISIT(c->counts);
    Py_VISIT(c->hasher);
    Py_VISIT(c->rng);
    if (c->nodes) {
        for (Py_ssize_t i = FIRST_NODE; i < c->n_nodes; i++) Py_VISIT(c->nodes[i].key);
    }
    Py_VISIT(c->ghost_index);
    if (c->ghost) {
        for (Py_ssize_t i = GHOSTS; i < c->ghost_n; i++) Py_VISIT(c->ghost[i].key);
    }
    return 0;
}

static int Core_clear(Core *c) {
    /* not ready first, and the nodes detached, before anything is released: a key's
       finalizer that calls back into the policy finds it empty, never half freed */
    c->ready = 0;
    Node *nodes = c->nodes;
    Py_ssize_t nn = c->n_nodes;
    c->nodes = NULL;
    c->n_nodes = 0;
    c->free_head = -1;
    for (int s = 0; s < N_SEGS; s++) c->len[s] = 0;
    if (nodes) {
        for (Py_ssize_t i = 0; i < nn; i++) Py_CLEAR(nodes[i].key);
        PyMem_Free(nodes);
    }
    PyMem_Free(c->hint);
    c->hint = NULL;
    PyMem_Free(c->buckets);
    c->buckets = NULL;
    tc_free_ghost(c);
    reuse_free(c);
    tc_mini_free(c);
    Py_CLEAR(c->index);
    Py_CLEAR(c->sketch);
    Py_CLEAR(c->counts);
    Py_CLEAR(c->hasher);
    Py_CLEAR(c->rng);
    return 0;
}

static void Core_dealloc(Core *c) {
    PyObject_GC_UnTrack(c);
    Core_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static void apply_window(Core *c, Py_ssize_t window) {
    c->window_capacity = window;
    c->main_capacity = c->cap - window;
    c->protected_capacity = (Py_ssize_t)((double)c->main_capacity * c->protected_fraction);
}

/* _core_setup(capacity, window, protected_fraction, sketch, hasher, fast_hash, rng,
               jitter_threshold, climbing, period[, mode]) */
static PyObject *Core_setup(Core *c, PyObject *args) {
    Py_ssize_t cap, window, jitter, period;
    double pf;
    PyObject *sketch, *hasher, *rng;
    int fast, climbing, mode = MODE_WTINYLFU;
    if (!PyArg_ParseTuple(args, "nndOOiOnpn|i", &cap, &window, &pf, &sketch, &hasher, &fast,
                          &rng, &jitter, &climbing, &period, &mode))
        return NULL;
    if (mode < MODE_WTINYLFU || mode > MODE_ARC ||
        (mode != MODE_WTINYLFU && (window != 0 || pf != 0.0 || climbing))) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0 (W-TinyLFU), or 1 (TinyLFU), 2 (LRU), "
                                          "3 (LFU), 4 (S3-FIFO) or 5 (ARC) with no window, "
                                          "protected or climber");
        return NULL;
    }
    if (c->busy) {
        PyErr_SetString(PyExc_RuntimeError, "policy re-entered from a callback");
        return NULL;
    }
    if (cap < 0 || cap > (PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(Node)) - 64) {
        PyErr_SetString(PyExc_ValueError, "capacity out of range");
        return NULL;
    }
    if (mode == MODE_WTINYLFU && (cap <= 1 ? window != 0 : (window < 1 || window > cap - 1))) {
        PyErr_SetString(PyExc_ValueError,
                        "window must be 0 when capacity <= 1, else in [1, capacity - 1]");
        return NULL;
    }
    if (!(pf >= 0.0 && pf <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "protected_fraction must be in [0, 1]");
        return NULL;
    }
    PyObject *counts = PyObject_GetAttrString(sketch, "_counts");
    if (!counts) return NULL;
    if (!PyByteArray_Check(counts)) {
        Py_DECREF(counts);
        PyErr_SetString(PyExc_TypeError, "sketch._counts must be a bytearray");
        return NULL;
    }
    long long width = 0, shift = 0, k0 = 0;
    unsigned long long mult[4];
    PyObject *a = PyObject_GetAttrString(sketch, "width");
    if (a) { width = PyLong_AsLongLong(a); Py_DECREF(a); }
    a = PyObject_GetAttrString(sketch, "_shift");
    if (a) { shift = PyLong_AsLongLong(a); Py_DECREF(a); }
    a = PyObject_GetAttrString(sketch, "_k0");
    if (a) { k0 = (long long)PyLong_AsUnsignedLongLongMask(a); Py_DECREF(a); }
    PyObject *m = PyObject_GetAttrString(sketch, "_mults");
    if (m) {
        for (int r = 0; r < 4; r++) {
            PyObject *x = PySequence_GetItem(m, r);
            if (!x) break;
            mult[r] = PyLong_AsUnsignedLongLongMask(x);
            Py_DECREF(x);
        }
        Py_DECREF(m);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(counts);
        return NULL;
    }
    if (width < 16 || PyByteArray_GET_SIZE(counts) != 4 * width || shift < 1 || shift > 60 ||
        (unsigned long long)width != (1ULL << (64 - shift))) {
        Py_DECREF(counts);
        PyErr_SetString(PyExc_ValueError, "sketch layout not understood");
        return NULL;
    }
    Core_clear(c);
    c->index = PyDict_New();
    if (!c->index) {
        Py_DECREF(counts);
        return NULL;
    }
    Py_ssize_t nn = cap + FIRST_NODE + 4;
    c->nodes = PyMem_Calloc((size_t)nn, sizeof(Node));
    int hbits = 4; /* one entry per node, at most 2^22 (32 MB): a direct-mapped cache
                      smaller than the policy only misses more, into the dict */
    while (hbits < 22 && ((Py_ssize_t)1 << hbits) < nn) hbits++;
    c->hint_shift = 64 - hbits;
    c->hint = PyMem_Malloc(((size_t)1 << hbits) * sizeof(Py_ssize_t));
    if (c->hint) memset(c->hint, 0xFF, ((size_t)1 << hbits) * sizeof(Py_ssize_t)); /* -1 */
    if (mode == MODE_LFU && cap < INT32_MAX - 2) {
        /* cap keys use at most cap buckets, and a hit takes its new bucket before it
           frees the old one: cap + 1, plus the sentinel */
        c->buckets = PyMem_Malloc((size_t)(cap + 2) * sizeof(Bucket));
        if (c->buckets) {
            c->buckets[0] = (Bucket){0, -1, 0, 0};
            c->bucket_free = 1;
            for (Py_ssize_t i = 1; i <= cap + 1; i++)
                c->buckets[i].next = i <= cap ? i + 1 : -1;
        }
    }
    if (!c->nodes || !c->hint || (mode == MODE_LFU && !c->buckets)) {
        Py_DECREF(counts);
        free_arrays(c);
        return PyErr_NoMemory();
    }
    c->n_nodes = nn;
    for (int s = 1; s < N_SEGS; s++) {
        c->nodes[s].prev = c->nodes[s].next = s;
        c->nodes[s].seg = (uint8_t)s;
        c->len[s] = 0;
    }
    c->free_head = -1;
    for (Py_ssize_t i = nn - 1; i >= FIRST_NODE; i--) {
        c->nodes[i].next = c->free_head;
        c->free_head = i;
    }
    c->counts = counts;
    c->table = (uint8_t *)PyByteArray_AS_STRING(counts);
    c->width = (uint64_t)width;
    c->shift = (int)shift;
    c->k0 = (uint64_t)k0;
    for (int r = 0; r < 4; r++) c->mult[r] = mult[r];
    Py_INCREF(sketch);
    c->sketch = sketch;
    Py_INCREF(hasher);
    c->hasher = hasher;
    Py_INCREF(rng);
    c->rng = rng;
    if (fast < 0 || fast > 2) {
        PyErr_SetString(PyExc_ValueError, "fast_hash must be 0, 1 or 2");
        Core_clear(c);
        return NULL;
    }
    c->fast_hash = (char)fast;
    c->cap = cap;
    c->protected_fraction = pf;
    c->jitter_threshold = jitter;
    c->climbing = (char)climbing;
    c->mode = (char)mode;
    c->reuse_cap = c->reuse_pause = 0; /* the reuse gate is off until _reuse_setup */
    c->clock = 0;
    c->period = period;
    c->full = 0;
    c->sample_hits = c->sample_requests = c->sample_recurring = 0;
    apply_window(c, window);
    c->ready = 1;
    Py_RETURN_NONE;
}

static Py_ssize_t Core_len(Core *c) {
    return resident(c);
}

static int Core_contains(Core *c, PyObject *key) {
    if (!c->ready) return 0;
    PyObject *v = PyDict_GetItemWithError(c->index, key);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    return 1;
}

static PyObject *Core_segment(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    if (n < 0) Py_RETURN_NONE;
    if (c->nodes[n].seg > SEG_PROTECTED) Py_RETURN_NONE; /* S3-FIFO's queues: unnamed */
    PyObject *name = tc_SEG_NAMES[c->nodes[n].seg];
    Py_INCREF(name);
    return name;
}

static PyObject *Core_on_hit_impl(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    if (tc_policy_touch(c, n, NULL, key) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_on_hit(Core *c, PyObject *key) {
    if (c->busy) return reentered();
    c->busy = 1;
    PyObject *r = Core_on_hit_impl(c, key);
    c->busy = 0;
    return r;
}

static PyObject *Core_on_hits_impl(Core *c, PyObject *keys) {
    if (not_ready(c)) return NULL;
    PyObject *seq = PySequence_Tuple(keys); /* a private copy: callbacks cannot change it */
    if (!seq) return NULL;
    Py_ssize_t len = PyTuple_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *k = PyTuple_GET_ITEM(seq, i);
        Py_ssize_t n = find(c, k);
        if (n == -2 || tc_policy_touch(c, n, NULL, k) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

static PyObject *Core_on_hits(Core *c, PyObject *keys) {
    if (c->busy) return reentered();
    c->busy = 1;
    PyObject *r = Core_on_hits_impl(c, keys);
    c->busy = 0;
    return r;
}

static PyObject *admission_of(Placed *p) {
    if (!p->admitted && !p->evicted) {
        Py_INCREF(tc_REJECTED);
        return tc_REJECTED;
    }
    if (!p->evicted) {
        Py_INCREF(tc_ADMITTED);
        return tc_ADMITTED;
    }
    PyObject *t = PyTuple_Pack(1, p->evicted);
    Py_DECREF(p->evicted);
    p->evicted = NULL;
    if (!t) return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(tc_AdmissionType, Py_True, t, NULL);
    Py_DECREF(t);
    return r;
}

static PyObject *Core_admit_impl(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    PyObject *r;
    if (n >= 0) {
        Py_INCREF(tc_ADMITTED);
        r = tc_ADMITTED;
    } else {
        if (tc_count_offer(c, key) < 0) return NULL;
        Placed p;
        if (tc_policy_place(c, key, &p) < 0) return NULL;
        r = admission_of(&p);
    }
    mark_full(c);
    return r;
}

static PyObject *Core_admit(Core *c, PyObject *key) {
    if (c->busy) return reentered();
    c->busy = 1;
    PyObject *r = Core_admit_impl(c, key);
    c->busy = 0;
    return r;
}

static PyObject *Core_remove_impl(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    if (n < 0) Py_RETURN_FALSE;
    PyObject *k = tc_drop_resident(c, n);
    if (!k) return NULL;
    Py_DECREF(k);
    Py_RETURN_TRUE;
}

static PyObject *Core_s3fifo_setup(Core *c, PyObject *args) {
    Py_ssize_t small, ghost;
    int threshold;
    if (!PyArg_ParseTuple(args, "nni", &small, &ghost, &threshold)) return NULL;
    if (not_ready(c)) return NULL;
    if (c->busy) return reentered();
    if (c->mode != MODE_S3FIFO || resident(c) > 0) {
        PyErr_SetString(PyExc_ValueError, "_s3fifo_setup: an empty mode-4 policy only");
        return NULL;
    }
    if (small < 0 || small > c->cap || ghost < 0 || ghost > PY_SSIZE_T_MAX / 64 ||
        threshold < 1) {
        PyErr_SetString(PyExc_ValueError, "_s3fifo_setup: sizes out of range");
        return NULL;
    }
    if (tc_alloc_ghost(c, ghost + GHOSTS) < 0) return NULL;
    c->ghost_cap = ghost;
    c->small_cap = small;
    c->s3_main_cap = c->cap - small;
    c->move_threshold = threshold;
    Py_RETURN_NONE;
}

static PyObject *Core_reuse_setup(Core *c, PyObject *args) {
    Py_ssize_t ghost;
    if (!PyArg_ParseTuple(args, "n", &ghost)) return NULL;
    if (not_ready(c)) return NULL;
    if (c->busy) return reentered();
    if (c->mode != MODE_WTINYLFU || resident(c) > 0) {
        PyErr_SetString(PyExc_ValueError, "_reuse_setup: an empty mode-0 policy only");
        return NULL;
    }
    if (ghost < 1 || ghost > ((Py_ssize_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "_reuse_setup: ghost capacity out of range");
        return NULL;
    }
    reuse_free(c);
    uint64_t size = 2;
    while (size < 2 * (uint64_t)ghost) size <<= 1; /* load factor <= 1/2 */
    c->rg_hash = PyMem_Calloc((size_t)ghost, sizeof(uint64_t));
    c->rg_last = PyMem_Calloc((size_t)ghost, sizeof(uint32_t));
    c->rg_tab = PyMem_Malloc((size_t)size * sizeof(Py_ssize_t));
    if (!c->rg_hash || !c->rg_last || !c->rg_tab) {
        reuse_free(c);
        PyErr_NoMemory();
        return NULL;
    }
    for (uint64_t i = 0; i < size; i++) c->rg_tab[i] = -1;
    c->rg_mask = size - 1;
    c->reuse_cap = ghost;
    c->clock = 0;
    Py_RETURN_NONE;
}

/* sizing: mini: _mini_setup(threshold, period, shadows, salt=0x5DEECE66D), each shadow a
   tuple (capacity, window, protected, jitter_threshold, ghost, width, shift, k0, (m0, m1, m2,
   m3), sample_size, rng_seed); an empty list turns it off; a key hashing to h is sampled
   when mini_sample(h, salt) < threshold */
static PyObject *Core_mini_setup(Core *c, PyObject *args) {
    unsigned long long threshold;
    long long period;
    PyObject *specs;
    unsigned long long salt = 0x5DEECE66DULL;
    if (!PyArg_ParseTuple(args, "KLO!|K", &threshold, &period, &PyList_Type, &specs, &salt))
        return NULL;
    if (not_ready(c)) return NULL;
    if (c->busy) return reentered();
    Py_ssize_t k = PyList_GET_SIZE(specs);
    if (c->mode != MODE_WTINYLFU || k > MINI_MAX_SHADOWS || period < 1) {
        PyErr_SetString(PyExc_ValueError, "_mini_setup: mode 0, at most 8 shadows, period >= 1");
        return NULL;
    }
    tc_mini_free(c);
    if (k == 0) Py_RETURN_NONE;
    Mini *m = PyMem_Calloc(1, sizeof(Mini));
    if (!m) return PyErr_NoMemory();
    m->threshold = threshold;
    m->salt = salt;
    m->period = period;
    for (Py_ssize_t i = 0; i < k; i++) {
        int cap, wcap, pcap, jitter, ghost, shift;
        unsigned long long width, k0, mu[4];
        long long sample_size;
        unsigned long long seed;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(specs, i), "iiiiiKiK(KKKK)LK", &cap, &wcap, &pcap,
                              &jitter, &ghost, &width, &shift, &k0, &mu[0], &mu[1], &mu[2],
                              &mu[3], &sample_size, &seed))
            goto fail;
        if (cap < 3 || wcap < 1 || wcap >= cap || pcap < 0 || pcap > cap - wcap || ghost < 0 ||
            width < 16 || (width & (width - 1)) || sample_size < 1) {
            PyErr_SetString(PyExc_ValueError, "_mini_setup: bad shadow sizes");
            goto fail;
        }
        uint64_t mult[4] = {mu[0], mu[1], mu[2], mu[3]};
        Shadow *first = &m->sh[0];
        if (i > 0 && (width != first->width || shift != first->shift || k0 != first->k0 ||
                      memcmp(mult, first->mult, sizeof(mult)) != 0 ||
                      sample_size != first->sample_size)) {
            PyErr_SetString(PyExc_ValueError, "_mini_setup: the shadows share one sketch");
            goto fail;
        }
        if (tc_shadow_init(&m->sh[i], cap, wcap, pcap, jitter, ghost, width, shift, k0, mult,
                           sample_size, seed, i > 0 ? first->sk : NULL) < 0)
            goto fail;
        m->k = (int)i + 1;
    }
    c->mini = m;
    Py_RETURN_NONE;
fail:
    for (int i = m->k - 1; i >= 0; i--) tc_shadow_free(&m->sh[i]);
    PyMem_Free(m);
    return NULL;
}

/* sizing: mini's state for tests and reports: (sampled accesses since the last decision,
   (each shadow's hits since then, ...), (each shadow's resident entries, ...), bytes) */
static PyObject *Core_mini_state(Core *c, PyObject *Py_UNUSED(ignored)) {
    Mini *m = c->mini;
    if (!m) Py_RETURN_NONE;
    PyObject *hits = PyTuple_New(m->k), *lens = PyTuple_New(m->k);
    if (!hits || !lens) goto fail;
    size_t bytes = sizeof(Mini);
    for (int i = 0; i < m->k; i++) {
        Shadow *s = &m->sh[i];
        PyObject *a = PyLong_FromLongLong(s->hits);
        PyObject *b = PyLong_FromLong((long)(s->len[1] + s->len[2] + s->len[3]));
        if (!a || !b) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            goto fail;
        }
        PyTuple_SET_ITEM(hits, i, a);
        PyTuple_SET_ITEM(lens, i, b);
        bytes += tc_shadow_bytes(s);
    }
    return Py_BuildValue("(LNNn)", m->count, hits, lens, (Py_ssize_t)bytes);
fail:
    Py_XDECREF(hits);
    Py_XDECREF(lens);
    return NULL;
}

static PyObject *Core_arc_setup(Core *c, PyObject *Py_UNUSED(ignored)) {
    if (not_ready(c)) return NULL;
    if (c->busy) return reentered();
    if (c->mode != MODE_ARC || resident(c) > 0 || c->cap > PY_SSIZE_T_MAX / 64) {
        PyErr_SetString(PyExc_ValueError, "_arc_setup: an empty mode-5 policy only");
        return NULL;
    }
    /* B1 and B2 hold at most 2 * capacity keys (with T1 and T2) */
    if (tc_alloc_ghost(c, 2 * c->cap + 1 + GHOSTS) < 0) return NULL;
    c->p = 0.0;
    Py_RETURN_NONE;
}

static PyObject *Core_lfu_count(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    if (c->mode != MODE_LFU) {
        PyErr_SetString(PyExc_ValueError, "not an LFU policy");
        return NULL;
    }
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    return PyLong_FromUnsignedLongLong(n < 0 ? 0 : c->buckets[c->nodes[n].bucket].count);
}

static PyObject *Core_remove(Core *c, PyObject *key) {
    if (c->busy) return reentered();
    c->busy = 1;
    PyObject *r = Core_remove_impl(c, key);
    c->busy = 0;
    return r;
}

static int extend_segment(Core *c, PyObject *list, int s) {
    for (Py_ssize_t n = c->nodes[s].next; n != s; n = c->nodes[n].next) {
        if (PyList_Append(list, c->nodes[n].key) < 0) return -1;
    }
    return 0;
}

static PyObject *Core_keys(Core *c, PyObject *Py_UNUSED(ignored)) {
    if (not_ready(c)) return NULL;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int s = 1; s < N_SEGS; s++) {
        if (extend_segment(c, list, s) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static PyObject *Core_segment_keys(Core *c, PyObject *arg) {
    if (not_ready(c)) return NULL;
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred()) return NULL;
    if (s < 1 || s > 3) {
        PyErr_SetString(PyExc_ValueError, "segment must be 1, 2 or 3");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    if (extend_segment(c, list, (int)s) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *Core_resize_window_impl(Core *c, PyObject *arg) {
    if (not_ready(c)) return NULL;
    int overflow = 0;
    long long w = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (w == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t cap = c->cap;
    Py_ssize_t window = overflow > 0 ? cap : overflow < 0 ? 0
                        : (Py_ssize_t)(w > cap ? cap : (w < 0 ? 0 : w));
    if (cap < 3 || c->mode != MODE_WTINYLFU) Py_RETURN_NONE; /* no window to move */
    if (window > cap - 1) window = cap - 1;
    if (window < 1) window = 1;
    if (window == c->window_capacity) Py_RETURN_NONE;
    apply_window(c, window);
    while (c->len[SEG_WINDOW] > window) {
        Py_ssize_t k = lru_of(c, SEG_WINDOW);
        unlink_node(c, k);
        push_mru(c, SEG_PROBATION, k);
    }
    /* main's LRU entries (probation first) move to the window's LRU end, oldest first */
    Py_ssize_t at = SEG_WINDOW;
    while (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] > c->main_capacity) {
        int s = c->len[SEG_PROBATION] ? SEG_PROBATION : SEG_PROTECTED;
        Py_ssize_t k = lru_of(c, s);
        unlink_node(c, k);
        insert_after(c, at, SEG_WINDOW, k);
        at = k;
    }
    while (c->len[SEG_PROTECTED] > c->protected_capacity) {
        Py_ssize_t k = lru_of(c, SEG_PROTECTED);
        unlink_node(c, k);
        push_mru(c, SEG_PROBATION, k);
    }
    Py_RETURN_NONE;
}

static PyObject *Core_resize_window(Core *c, PyObject *arg) {
    if (c->busy) return reentered();
    c->busy = 1;
    PyObject *r = Core_resize_window_impl(c, arg);
    c->busy = 0;
    return r;
}

static PyObject *Core_set_window(Core *c, PyObject *arg) {
    /* sizes only (no entries move): the Python _set_window */
    if (not_ready(c)) return NULL;
    if (c->busy) {
        PyErr_SetString(PyExc_RuntimeError, "policy re-entered from a callback");
        return NULL;
    }
    Py_ssize_t window = PyLong_AsSsize_t(arg);
    if (window == -1 && PyErr_Occurred()) return NULL;
    if (c->mode != MODE_WTINYLFU) {
        PyErr_SetString(PyExc_ValueError, "this policy has no window");
        return NULL;
    }
    if (c->cap <= 1 ? window != 0 : (window < 1 || window > c->cap - 1)) {
        PyErr_SetString(PyExc_ValueError,
                        "window must be 0 when capacity <= 1, else in [1, capacity - 1]");
        return NULL;
    }
    if (c->len[SEG_WINDOW] > window || c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] >
                                           c->cap - window) {
        PyErr_SetString(PyExc_ValueError, "_set_window would leave a segment over its size "
                                          "(use resize_window)");
        return NULL;
    }
    apply_window(c, window);
    Py_RETURN_NONE;
}

static PyMethodDef Core_methods[] = {
    {"_core_setup", (PyCFunction)Core_setup, METH_VARARGS,
     "_core_setup(capacity, window, protected_fraction, sketch, hasher, fast_hash, rng, "
     "jitter_threshold, climbing, period[, mode]): allocate the segments and bind the "
     "sketch; mode 1 (TinyLFU) and 2 (LRU) take window 0, protected 0, no climber."},
    {"segment", (PyCFunction)Core_segment, METH_O,
     "\"window\", \"probation\", \"protected\" or None (not resident)."},
    {"on_hit", (PyCFunction)Core_on_hit, METH_O,
     "Record a hit on a resident key (no-op otherwise; a climber sample either way)."},
    {"on_hits", (PyCFunction)Core_on_hits, METH_O, "on_hit for each key, in order."},
    {"admit", (PyCFunction)Core_admit, METH_O, "Offer a key; returns an Admission."},
    {"remove", (PyCFunction)Core_remove, METH_O, "Forget a key; True if it was resident."},
    {"_s3fifo_setup", (PyCFunction)Core_s3fifo_setup, METH_VARARGS,
     "Mode 4 (S3-FIFO): _s3fifo_setup(small_capacity, ghost_capacity, move_threshold)."},
    {"_reuse_setup", (PyCFunction)Core_reuse_setup, METH_VARARGS,
     "Mode 0 (W-TinyLFU): _reuse_setup(ghost_capacity) turns the reuse gate on."},
    {"_mini_setup", (PyCFunction)Core_mini_setup, METH_VARARGS,
     "Mode 0 (W-TinyLFU), sizing: mini: _mini_setup(threshold, period, shadows, salt)."},
    {"_mini_state", (PyCFunction)Core_mini_state, METH_NOARGS,
     "sizing: mini: (sampled since the last decision, shadow hits, shadow sizes, bytes)."},
    {"_arc_setup", (PyCFunction)Core_arc_setup, METH_NOARGS,
     "Mode 5 (ARC): allocate the ghost lists B1 and B2."},
    {"_lfu_count", (PyCFunction)Core_lfu_count, METH_O,
     "Mode 3 (LFU): the resident key's count (0 if not resident)."},
    {"keys", (PyCFunction)Core_keys, METH_NOARGS,
     "Window, then probation, then protected; least recently used first in each."},
    {"_segment_keys", (PyCFunction)Core_segment_keys, METH_O,
     "Keys of segment 1 (window), 2 (probation) or 3 (protected), LRU first."},
    {"resize_window", (PyCFunction)Core_resize_window, METH_O,
     "Move the window/main split (clamped to [1, C - 1]); never evicts."},
    {"_set_window", (PyCFunction)Core_set_window, METH_O,
     "Set the window capacity and the derived main/protected capacities (no moves)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Core_members[] = {
    {"window_capacity", T_PYSSIZET, offsetof(Core, window_capacity), READONLY,
     "Entries the window may hold."},
    {"main_capacity", T_PYSSIZET, offsetof(Core, main_capacity), READONLY,
     "Entries probation and protected may hold together."},
    {"protected_capacity", T_PYSSIZET, offsetof(Core, protected_capacity), READONLY,
     "Entries protected may hold."},
    {"_sample_hits", T_PYSSIZET, offsetof(Core, sample_hits), 0, "Climber sample hits."},
    {"_sample_requests", T_PYSSIZET, offsetof(Core, sample_requests), 0,
     "Climber sample requests."},
    {"p", T_DOUBLE, offsetof(Core, p), 0, "Mode 5 (ARC): the target size of T1."},
    {"_reuse_pause", T_PYSSIZET, offsetof(Core, reuse_pause), 0,
     "Mode 0's reuse gate: accesses left with the gate open (after a shift)."},
    {"_clock", T_UINT, offsetof(Core, clock), READONLY,
     "Mode 0's reuse gate: accesses seen (32-bit, wrapping)."},
    {"_sample_recurring", T_PYSSIZET, offsetof(Core, sample_recurring), 0,
     "Climber sample: offered misses of keys with sketch frequency >= 2."},
    {"_period", T_PYSSIZET, offsetof(Core, period), 0, "Climber sample period."},
    {"_climbing", T_BOOL, offsetof(Core, climbing), 0, "The climber is on."},
    {"_full", T_BOOL, offsetof(Core, full), 0, "The cache has filled once."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods Core_as_sequence = {
    .sq_length = (lenfunc)Core_len,
    .sq_contains = (objobjproc)Core_contains,
};

PyTypeObject tc_CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.WTinyLFUCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Segments and per-access operations of the W-TinyLFU policy (see "
              "tiercache/_core_src/policy.c).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_as_sequence = &Core_as_sequence,
};

