/*
 * tiercache._core: the compiled core of the default policy (W-TinyLFU) and the loops that
 * drive it.
 *
 * One implementation serves both the live cache and the simulator:
 *
 *   - WTinyLFUCore: the residency state of tiercache.policy.WTinyLFUPolicy (window LRU,
 *     probation and protected segments as intrusive doubly linked lists over node arrays,
 *     a dict from key to node) and its per-access operations (on_hit, on_hits, admit,
 *     remove, resize_window, keys, segment). The Python subclass keeps configuration and
 *     the hill climber's decision (_climb), which runs once per sample period.
 *   - drain(policy, keys): the engine's buffered drain (sketch increment, then on_hit, per
 *     key, in order).
 *   - replay(policy, trace, misses_out): the simulator's loop (hit: record; miss: record
 *     and offer), the exact calls TierCache makes for its hot tier.
 *
 * The frequency sketch stays a Python object (tiercache.sketch.FrequencySketch); this code
 * reads and updates its counter buffer in place with the same indexing and aging, and keeps
 * its ``additions`` and ``resets`` attributes in step. The Python implementation in
 * tiercache/policy.py (_PyWTinyLFUPolicy) is the specification; tests replay random traces
 * through both and require identical decisions.
 *
 * Not thread-safe on its own: the engine serialises calls (it holds the cache's lock), and
 * every call runs with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#define SEG_FREE 0
#define SEG_WINDOW 1
#define SEG_PROBATION 2
#define SEG_PROTECTED 3
#define FIRST_NODE 4
#define MAX_COUNT 15

static PyObject *AdmissionType = NULL; /* tiercache.policy.Admission */
static PyObject *ADMITTED = NULL;      /* Admission(True) */
static PyObject *REJECTED = NULL;      /* Admission(False, (), "rejected") */
static PyObject *SEG_NAMES[4] = {NULL, NULL, NULL, NULL};

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    Py_ssize_t prev, next;
    PyObject *key; /* strong reference while resident */
    uint8_t seg;
} Node;

typedef struct {
    PyObject_HEAD
    /* configuration and sizes (window_capacity etc. are exposed as attributes) */
    Py_ssize_t cap;
    Py_ssize_t window_capacity, main_capacity, protected_capacity;
    double protected_fraction;
    /* hill climber sampling state (the decision itself is the Python _climb) */
    Py_ssize_t sample_hits, sample_requests, period;
    char climbing, full, ready, fast_hash;
    char busy; /* a mutating operation is running (it may call the hasher, the rng, a key's
                  __eq__/__hash__, or trigger a finalizer): re-entry is refused */
    Py_ssize_t jitter_threshold;
    /* segments: sentinels are nodes 1..3 (SEG_* ids); next[s] = LRU, prev[s] = MRU */
    Py_ssize_t len[4];
    Py_ssize_t n_nodes, free_head;
    Node *nodes; /* one struct per node: a touch costs one cache line, not four */
    PyObject *index; /* dict: key -> int node */
    /* a direct-mapped cache of key object -> node, by the object's address: a hit (the
       node's key is that very object) skips the dict probe and the int it returns,
       ~3 cache misses of a drained access. A stale or colliding entry fails the identity
       check and the dict answers (and refills the entry). */
    Py_ssize_t *hint;
    int hint_shift;
    /* the frequency sketch (a Python FrequencySketch) and how to hash keys for it */
    PyObject *sketch, *counts, *hasher, *rng;
    uint8_t *table;
    uint64_t width, k0, mult[4];
    int shift;
} Core;

/* ---- sketch ------------------------------------------------------------------------- */

static inline uint8_t sk_frequency(Core *c, uint64_t h) {
    uint64_t z = splitmix64(h ^ c->k0);
    uint8_t *t = c->table;
    uint64_t w = c->width;
    uint8_t m = t[(z * c->mult[0]) >> c->shift];
    uint8_t v = t[w + ((z * c->mult[1]) >> c->shift)];
    if (v < m) m = v;
    v = t[2 * w + ((z * c->mult[2]) >> c->shift)];
    if (v < m) m = v;
    v = t[3 * w + ((z * c->mult[3]) >> c->shift)];
    if (v < m) m = v;
    return m;
}

/* additions/resets/sample_size mirrored from the Python sketch during a C loop */
typedef struct {
    long long additions, resets, sample_size;
} SketchSync;

static int load_ll(PyObject *obj, const char *name, long long *out) {
    PyObject *a = PyObject_GetAttrString(obj, name);
    if (!a) return -1;
    long long v = PyLong_AsLongLong(a);
    Py_DECREF(a);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* the sketch's counters into s; on error s is unusable (never store it back) */
static int sync_load(Core *c, SketchSync *s) {
    if (load_ll(c->sketch, "additions", &s->additions) < 0 ||
        load_ll(c->sketch, "resets", &s->resets) < 0 ||
        load_ll(c->sketch, "sample_size", &s->sample_size) < 0)
        return -1;
    if (s->sample_size < 1) {
        PyErr_SetString(PyExc_ValueError, "sketch.sample_size must be >= 1");
        return -1;
    }
    return 0;
}

static int sync_store(Core *c, SketchSync *s) {
    /* keeps an exception already set (the loop's error) and reports its own otherwise */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int rc = 0;
    PyObject *a = PyLong_FromLongLong(s->additions);
    if (!a || PyObject_SetAttrString(c->sketch, "additions", a) < 0) rc = -1;
    Py_XDECREF(a);
    if (rc == 0) {
        a = PyLong_FromLongLong(s->resets);
        if (!a || PyObject_SetAttrString(c->sketch, "resets", a) < 0) rc = -1;
        Py_XDECREF(a);
    }
    if (et) {
        if (rc < 0) PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return rc;
}

static inline void sk_increment(Core *c, SketchSync *s, uint64_t h) {
    uint64_t z = splitmix64(h ^ c->k0);
    uint8_t *t = c->table;
    uint64_t w = c->width;
    for (int r = 0; r < 4; r++) {
        uint8_t *p = t + (uint64_t)r * w + ((z * c->mult[r]) >> c->shift);
        if (*p < MAX_COUNT) (*p)++;
    }
    s->additions += 1;
    if (s->additions >= s->sample_size) {
        uint64_t n = 4 * w;
        for (uint64_t i = 0; i < n; i++) t[i] >>= 1;
        s->additions >>= 1;
        s->resets += 1;
    }
}

/* The 64-bit hash the sketch sees for a key: tiercache.policy.default_hasher's fast cases
 * inline (16-byte digests: first 8 bytes little endian; ints: value mod 2**64), anything
 * else (or a custom hasher) through the Python callable. */
static int key_hash(Core *c, PyObject *key, uint64_t *out) {
    /* fast_hash: 0 = always call the hasher; 1 = default_hasher (8+ byte bytes, ints);
       2 = keys.key_hash64 (8+ byte bytes) */
    if (c->fast_hash) {
        if (PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) >= 8) {
            const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(key);
            uint64_t h = 0;
            for (int i = 7; i >= 0; i--) h = (h << 8) | b[i];
            *out = h;
            return 0;
        }
        if (c->fast_hash == 1 && PyLong_CheckExact(key)) {
            uint64_t h = PyLong_AsUnsignedLongLongMask(key);
            if (h == (uint64_t)-1 && PyErr_Occurred()) return -1;
            *out = h;
            return 0;
        }
    }
    PyObject *r = PyObject_CallOneArg(c->hasher, key);
    if (!r) return -1;
    if (!PyLong_Check(r)) {
        PyErr_Format(PyExc_TypeError, "hasher must return an int, not %s", Py_TYPE(r)->tp_name);
        Py_DECREF(r);
        return -1;
    }
    uint64_t h = PyLong_AsUnsignedLongLongMask(r);
    Py_DECREF(r);
    if (h == (uint64_t)-1 && PyErr_Occurred()) return -1;
    *out = h;
    return 0;
}

/* ---- segments ----------------------------------------------------------------------- */

static inline void unlink_node(Core *c, Py_ssize_t n) {
    Py_ssize_t p = c->nodes[n].prev, x = c->nodes[n].next;
    c->nodes[p].next = x;
    c->nodes[x].prev = p;
    c->len[c->nodes[n].seg]--;
}

static inline void push_mru(Core *c, int s, Py_ssize_t n) {
    Py_ssize_t last = c->nodes[s].prev;
    c->nodes[last].next = n;
    c->nodes[n].prev = last;
    c->nodes[n].next = s;
    c->nodes[s].prev = n;
    c->nodes[n].seg = (uint8_t)s;
    c->len[s]++;
}

static inline void insert_after(Core *c, Py_ssize_t at, int s, Py_ssize_t n) {
    Py_ssize_t x = c->nodes[at].next;
    c->nodes[at].next = n;
    c->nodes[n].prev = at;
    c->nodes[n].next = x;
    c->nodes[x].prev = n;
    c->nodes[n].seg = (uint8_t)s;
    c->len[s]++;
}

static inline Py_ssize_t lru_of(Core *c, int s) { return c->nodes[s].next; }

static inline Py_ssize_t *hint_slot(Core *c, PyObject *key) {
    return &c->hint[((uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ULL) >> c->hint_shift];
}

/* node of key, -1 if not resident, -2 on error */
static inline Py_ssize_t find(Core *c, PyObject *key) {
    Py_ssize_t *h = hint_slot(c, key);
    Py_ssize_t n = *h;
    /* a live key object is at one address only: the node holding this very object is
       key's node (its strong reference keeps the object, hence the address, alive) */
    if (n >= FIRST_NODE && n < c->n_nodes && c->nodes[n].key == key) return n;
    PyObject *v = PyDict_GetItemWithError(c->index, key);
    if (!v) return PyErr_Occurred() ? -2 : -1;
    n = PyLong_AsSsize_t(v);
    if (n >= FIRST_NODE && n < c->n_nodes && c->nodes[n].key == key) *h = n;
    return n;
}

/* a new resident node for key (not linked); -1 on error */
static Py_ssize_t new_node(Core *c, PyObject *key) {
    Py_ssize_t n = c->free_head;
    if (n < 0) {
        PyErr_SetString(PyExc_RuntimeError, "tiercache._core: node pool exhausted");
        return -1;
    }
    c->free_head = c->nodes[n].next; /* taken before any Python code can run */
    PyObject *v = PyLong_FromSsize_t(n);
    int rc = v ? PyDict_SetItem(c->index, key, v) : -1;
    Py_XDECREF(v);
    if (rc < 0) {
        c->nodes[n].next = c->free_head;
        c->free_head = n;
        return -1;
    }
    Py_INCREF(key);
    c->nodes[n].key = key;
    return n;
}

/* unlink and free node n; returns its key (a new reference) or NULL on error */
static PyObject *drop_node(Core *c, Py_ssize_t n) {
    PyObject *k = c->nodes[n].key;
    if (PyDict_DelItem(c->index, k) < 0) return NULL;
    unlink_node(c, n);
    c->nodes[n].seg = SEG_FREE;
    c->nodes[n].key = NULL;
    c->nodes[n].next = c->free_head;
    c->free_head = n;
    return k; /* the reference the node held */
}

/* free node n that new_node made but that is not linked yet; returns its key */
static PyObject *drop_node_unlinked(Core *c, Py_ssize_t n) {
    PyObject *k = c->nodes[n].key;
    if (PyDict_DelItem(c->index, k) < 0) return NULL;
    c->nodes[n].seg = SEG_FREE;
    c->nodes[n].key = NULL;
    c->nodes[n].next = c->free_head;
    c->free_head = n;
    return k;
}

/* ---- the policy --------------------------------------------------------------------- */

static PyObject *reentered(void) {
    PyErr_SetString(PyExc_RuntimeError,
                    "tiercache policy re-entered from a callback (the hasher, the rng, a key's "
                    "__eq__ or __hash__, or a finalizer) in the middle of an operation");
    return NULL;
}

static int do_climb(Core *c, SketchSync *s) {
    /* the climber is Python (WTinyLFUPolicy._climb); keep the sketch attributes current
       around it in case it reads or ages the sketch */
    if (s && sync_store(c, s) < 0) return -1;
    char busy = c->busy;
    c->busy = 0; /* the climber may call the policy's own methods */
    PyObject *r = PyObject_CallMethod((PyObject *)c, "_climb", NULL);
    c->busy = busy;
    if (!r) return -1;
    Py_DECREF(r);
    if (s && sync_load(c, s) < 0) return -1;
    return 0;
}

/* on_hit for node n (-1: the key is not resident, a recorded miss); 0, or 1 when the
   climber (Python) ran, or -1 on error */
static inline int touch(Core *c, Py_ssize_t n, SketchSync *s) {
    int hit = 0;
    if (n >= 0) {
        hit = 1;
        int sg = c->nodes[n].seg;
        if (sg == SEG_PROTECTED) {
            unlink_node(c, n);
            push_mru(c, SEG_PROTECTED, n);
        } else if (sg == SEG_PROBATION) {
            unlink_node(c, n);
            push_mru(c, SEG_PROTECTED, n);
            if (c->len[SEG_PROTECTED] > c->protected_capacity) {
                Py_ssize_t d = lru_of(c, SEG_PROTECTED);
                unlink_node(c, d);
                push_mru(c, SEG_PROBATION, d);
            }
        } else {
            unlink_node(c, n);
            push_mru(c, SEG_WINDOW, n);
        }
    }
    if (c->climbing && c->full) {
        c->sample_hits += hit;
        c->sample_requests += 1;
        if (c->sample_requests >= c->period) return do_climb(c, s) < 0 ? -1 : 1;
    }
    return 0;
}

/* TinyLFU: does candidate replace victim? 1 yes, 0 no, -1 error */
static int tinylfu_admit(Core *c, PyObject *cand, PyObject *victim) {
    uint64_t hc, hv;
    Py_INCREF(cand);
    Py_INCREF(victim);
    int rc = key_hash(c, cand, &hc) < 0 || key_hash(c, victim, &hv) < 0 ? -1 : 0;
    Py_DECREF(cand);
    Py_DECREF(victim);
    if (rc < 0) return -1;
    uint8_t fc = sk_frequency(c, hc), fv = sk_frequency(c, hv);
    if (fc > fv) return 1;
    if ((Py_ssize_t)fc >= c->jitter_threshold) {
        PyObject *r = PyObject_CallMethod(c->rng, "getrandbits", "i", 7);
        if (!r) return -1;
        long v = PyLong_AsLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) return -1;
        return v == 0;
    }
    return 0;
}

typedef struct {
    int admitted;
    PyObject *evicted; /* new reference or NULL */
} Placed;

/* _place: offer a non-resident key (see the Python _place). 0 ok, -1 error */
static int place(Core *c, PyObject *key, Placed *out) {
    out->admitted = 0;
    out->evicted = NULL;
    if (c->cap == 0) return 0;
    if (c->window_capacity == 0) {
        /* capacity 1: no window; the offered key itself is the candidate */
        if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] < c->main_capacity) {
            Py_ssize_t n = new_node(c, key);
            if (n < 0) return -1;
            push_mru(c, SEG_PROBATION, n);
            out->admitted = 1;
            return 0;
        }
        if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] == 0) return 0; /* no victim */
        Py_ssize_t v = c->len[SEG_PROBATION] ? lru_of(c, SEG_PROBATION) : lru_of(c, SEG_PROTECTED);
        int ok = tinylfu_admit(c, key, c->nodes[v].key);
        if (ok < 0) return -1;
        if (!ok) return 0;
        Py_ssize_t n = new_node(c, key); /* first: a failure leaves everything as it was */
        if (n < 0) return -1;
        PyObject *vk = drop_node(c, v);
        if (!vk) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyObject *k2 = drop_node_unlinked(c, n);
            Py_XDECREF(k2);
            PyErr_Restore(et, ev, tb);
            return -1;
        }
        push_mru(c, SEG_PROBATION, n);
        out->admitted = 1;
        out->evicted = vk;
        return 0;
    }
    Py_ssize_t n = new_node(c, key);
    if (n < 0) return -1;
    push_mru(c, SEG_WINDOW, n);
    out->admitted = 1;
    if (c->len[SEG_WINDOW] <= c->window_capacity) return 0;
    Py_ssize_t cand = lru_of(c, SEG_WINDOW);
    if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] < c->main_capacity) {
        unlink_node(c, cand);
        push_mru(c, SEG_PROBATION, cand);
        return 0;
    }
    if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] == 0) {
        PyErr_SetString(PyExc_RuntimeError, "tiercache._core: main region is empty and full");
        goto rollback;
    }
    Py_ssize_t v = c->len[SEG_PROBATION] ? lru_of(c, SEG_PROBATION) : lru_of(c, SEG_PROTECTED);
    int ok = tinylfu_admit(c, c->nodes[cand].key, c->nodes[v].key);
    if (ok < 0) goto rollback;
    if (!ok) {
        PyObject *ck = drop_node(c, cand); /* the window's loser leaves the cache */
        if (!ck) return -1;
        out->evicted = ck;
        return 0;
    }
    PyObject *vk = drop_node(c, v);
    if (!vk) goto rollback;
    unlink_node(c, cand);
    push_mru(c, SEG_PROBATION, cand);
    out->evicted = vk;
    return 0;
rollback: {
        /* the competition failed (the hasher or the rng raised): undo the insert, so the
           policy is exactly as before the call */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *k2 = drop_node(c, n);
        if (k2) Py_DECREF(k2); else PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        out->admitted = 0;
        return -1;
    }
}

static inline void mark_full(Core *c) {
    if (!c->full && c->len[1] + c->len[2] + c->len[3] >= c->cap) c->full = 1;
}

static void free_arrays(Core *c) {
    if (c->nodes) {
        for (Py_ssize_t i = 0; i < c->n_nodes; i++) Py_CLEAR(c->nodes[i].key);
    }
    PyMem_Free(c->nodes);
    c->nodes = NULL;
    c->n_nodes = 0;
    PyMem_Free(c->hint);
    c->hint = NULL;
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
    for (int s = 0; s < 4; s++) c->len[s] = 0;
    if (nodes) {
        for (Py_ssize_t i = 0; i < nn; i++) Py_CLEAR(nodes[i].key);
        PyMem_Free(nodes);
    }
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

static int not_ready(Core *c) {
    if (!c->ready) {
        PyErr_SetString(PyExc_RuntimeError, "WTinyLFUCore used before _core_setup()");
        return 1;
    }
    return 0;
}

static void apply_window(Core *c, Py_ssize_t window) {
    c->window_capacity = window;
    c->main_capacity = c->cap - window;
    c->protected_capacity = (Py_ssize_t)((double)c->main_capacity * c->protected_fraction);
}

/* _core_setup(capacity, window, protected_fraction, sketch, hasher, fast_hash, rng,
               jitter_threshold, climbing, period) */
static PyObject *Core_setup(Core *c, PyObject *args) {
    Py_ssize_t cap, window, jitter, period;
    double pf;
    PyObject *sketch, *hasher, *rng;
    int fast, climbing;
    if (!PyArg_ParseTuple(args, "nndOOiOnpn", &cap, &window, &pf, &sketch, &hasher, &fast,
                          &rng, &jitter, &climbing, &period))
        return NULL;
    if (c->busy) {
        PyErr_SetString(PyExc_RuntimeError, "policy re-entered from a callback");
        return NULL;
    }
    if (cap < 0 || cap > (PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(Node)) - 64) {
        PyErr_SetString(PyExc_ValueError, "capacity out of range");
        return NULL;
    }
    if (cap <= 1 ? window != 0 : (window < 1 || window > cap - 1)) {
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
    if (!c->nodes || !c->hint) {
        Py_DECREF(counts);
        free_arrays(c);
        return PyErr_NoMemory();
    }
    c->n_nodes = nn;
    for (int s = 1; s <= 3; s++) {
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
    c->period = period;
    c->full = 0;
    c->sample_hits = c->sample_requests = 0;
    apply_window(c, window);
    c->ready = 1;
    Py_RETURN_NONE;
}

static Py_ssize_t Core_len(Core *c) {
    return c->len[1] + c->len[2] + c->len[3];
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
    PyObject *name = SEG_NAMES[c->nodes[n].seg];
    Py_INCREF(name);
    return name;
}

static PyObject *Core_on_hit_impl(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    if (touch(c, n, NULL) < 0) return NULL;
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
        Py_ssize_t n = find(c, PyTuple_GET_ITEM(seq, i));
        if (n == -2 || touch(c, n, NULL) < 0) {
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
        Py_INCREF(REJECTED);
        return REJECTED;
    }
    if (!p->evicted) {
        Py_INCREF(ADMITTED);
        return ADMITTED;
    }
    PyObject *t = PyTuple_Pack(1, p->evicted);
    Py_DECREF(p->evicted);
    p->evicted = NULL;
    if (!t) return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(AdmissionType, Py_True, t, NULL);
    Py_DECREF(t);
    return r;
}

static PyObject *Core_admit_impl(Core *c, PyObject *key) {
    if (not_ready(c)) return NULL;
    Py_ssize_t n = find(c, key);
    if (n == -2) return NULL;
    PyObject *r;
    if (n >= 0) {
        Py_INCREF(ADMITTED);
        r = ADMITTED;
    } else {
        Placed p;
        if (place(c, key, &p) < 0) return NULL;
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
    PyObject *k = drop_node(c, n);
    if (!k) return NULL;
    Py_DECREF(k);
    Py_RETURN_TRUE;
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
    for (int s = 1; s <= 3; s++) {
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
    if (cap < 3) Py_RETURN_NONE;
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
     "jitter_threshold, climbing, period): allocate the segments and bind the sketch."},
    {"segment", (PyCFunction)Core_segment, METH_O,
     "\"window\", \"probation\", \"protected\" or None (not resident)."},
    {"on_hit", (PyCFunction)Core_on_hit, METH_O,
     "Record a hit on a resident key (no-op otherwise; a climber sample either way)."},
    {"on_hits", (PyCFunction)Core_on_hits, METH_O, "on_hit for each key, in order."},
    {"admit", (PyCFunction)Core_admit, METH_O, "Offer a key; returns an Admission."},
    {"remove", (PyCFunction)Core_remove, METH_O, "Forget a key; True if it was resident."},
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
    {"_period", T_PYSSIZET, offsetof(Core, period), 0, "Climber sample period."},
    {"_climbing", T_BOOL, offsetof(Core, climbing), 0, "The climber is on."},
    {"_full", T_BOOL, offsetof(Core, full), 0, "The cache has filled once."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods Core_as_sequence = {
    .sq_length = (lenfunc)Core_len,
    .sq_contains = (objobjproc)Core_contains,
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.WTinyLFUCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Segments and per-access operations of the W-TinyLFU policy (see _core.c).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_as_sequence = &Core_as_sequence,
};


/* ---- the hot tier's read path --------------------------------------------------------
 *
 * HotReader(fallback, lock, by_content, slab, expires, keys, buffer, access_buffer, drain,
 *           clock, record_latency): TierCache.embed's hot hit in one C call. Under the
 * cache's lock (taken without blocking), a str/bytes content found in the hot tier's
 * content map, unexpired, is copied out of the slab into a new float32 array, its digest
 * is appended to the engine's access buffer (draining it when full, as record_hot_hit
 * does) and counted; anything else (another type, a miss, an expired entry, the lock
 * busy) is handed to ``fallback(content)``, the Python implementation, unchanged. One
 * lookup in 16 is timed and passed to ``record_latency(seconds)``.
 */

/* the fields both compiled readers (HotReader, WarmReader) start with, so that their
 * close(), take_hits() and hits are one implementation */
#define READER_HEAD                                                                          \
    PyObject_HEAD                                                                            \
    unsigned long long hits; /* served and not yet taken by the cache's counters */          \
    char closed;             /* TierCache.close(): every call goes to the fallback */

typedef struct {
    READER_HEAD
} ReaderHead;

static PyObject *reader_close(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    ((ReaderHead *)self)->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *reader_take_hits(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    ReaderHead *r = (ReaderHead *)self;
    unsigned long long n = r->hits;
    r->hits = 0;
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *reader_get_hits(PyObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(((ReaderHead *)self)->hits);
}

typedef struct {
    READER_HEAD
    PyObject *fallback, *acquire, *release, *by_content, *slab, *expires, *keys, *buffer;
    PyObject *drain, *clock, *record_latency;
    const char *slab_data;
    Py_ssize_t rows, row_bytes, access_buffer;
    npy_intp dim;
    unsigned long long tick;
    vectorcallfunc vectorcall;
} Reader;

static inline double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static PyObject *reader_fallback(Reader *r, PyObject *content) {
    if (!r->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(r->fallback, content);
}

/* 1: hit, *out set; 0: not served here; -1: error. Called with the lock held. */
/* the slot content maps to (-1: absent), checked against the tier's arrays */
static Py_ssize_t reader_slot(Reader *r, PyObject *content) {
    PyObject *so = PyDict_GetItemWithError(r->by_content, content);
    if (!so) return PyErr_Occurred() ? -2 : -1;
    Py_ssize_t slot = PyLong_AsSsize_t(so);
    if (slot == -1 && PyErr_Occurred()) return -2;
    if (slot < 0 || slot >= r->rows || slot >= PyList_GET_SIZE(r->expires) ||
        slot >= PyList_GET_SIZE(r->keys)) {
        PyErr_SetString(PyExc_RuntimeError, "hot tier slot out of range");
        return -2;
    }
    return slot;
}

static int reader_hit(Reader *r, PyObject *content, PyObject **out) {
    /* the array first: its allocation may run the garbage collector (finalizers are
       Python code); from the lookup to the copy no Python code runs, except the clock,
       after which the lookup is repeated */
    PyObject *vec = PyArray_SimpleNew(1, &r->dim, NPY_FLOAT32);
    if (!vec) return -1;
    Py_ssize_t slot = reader_slot(r, content);
    if (slot < 0) {
        Py_DECREF(vec);
        return slot == -1 ? 0 : -1;
    }
    PyObject *expobj = PyList_GET_ITEM(r->expires, slot);
    double exp = PyFloat_AsDouble(expobj);
    if (exp == -1.0 && PyErr_Occurred()) {
        Py_DECREF(vec);
        return -1;
    }
    if (!isinf(exp) || exp < 0) {
        Py_INCREF(expobj);
        PyObject *now = PyObject_CallNoArgs(r->clock);
        int fresh = now ? PyObject_RichCompareBool(expobj, now, Py_GT) : -1;
        Py_XDECREF(now);
        Py_DECREF(expobj);
        /* the clock is the caller's code: it may have changed the tier (the lock is
           re-entrant); serve only if content still maps to the same, unexpired slot */
        if (fresh > 0 && reader_slot(r, content) != slot) fresh = PyErr_Occurred() ? -1 : 0;
        if (fresh <= 0) {
            Py_DECREF(vec);
            return fresh; /* expired or changed (the fallback handles it), or an error */
        }
    }
    memcpy(PyArray_DATA((PyArrayObject *)vec), r->slab_data + slot * r->row_bytes,
           (size_t)r->row_bytes);
    if (PyList_Append(r->buffer, PyList_GET_ITEM(r->keys, slot)) < 0) {
        Py_DECREF(vec);
        return -1;
    }
    if (PyList_GET_SIZE(r->buffer) >= r->access_buffer) {
        PyObject *d = PyObject_CallNoArgs(r->drain);
        if (!d) {
            Py_DECREF(vec);
            return -1;
        }
        Py_DECREF(d);
    }
    r->hits++;
    *out = vec;
    return 1;
}

static PyObject *Reader_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Reader *r = (Reader *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!r->fallback || !r->slab_data) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is not initialised");
        return NULL;
    }
    if (nargs != 1 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        return PyObject_Vectorcall(r->fallback, args, nargsf, kwnames);
    }
    PyObject *content = args[0];
    if (r->closed || (!PyUnicode_CheckExact(content) && !PyBytes_CheckExact(content)))
        return reader_fallback(r, content);
    int timed = (++r->tick & 15) == 0;
    double t0 = timed ? mono_s() : 0.0;
    PyObject *got = PyObject_CallOneArg(r->acquire, Py_False);
    if (!got) return NULL;
    int locked = PyObject_IsTrue(got);
    Py_DECREF(got);
    if (locked < 0) return NULL;
    if (!locked) return reader_fallback(r, content); /* busy: the Python path waits */
    PyObject *vec = NULL;
    int rc = reader_hit(r, content, &vec);
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *rel = PyObject_CallNoArgs(r->release);
    if (!rel) {
        Py_XDECREF(vec);
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        return NULL;
    }
    Py_DECREF(rel);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    if (rc < 0) return NULL;
    if (rc == 0) return reader_fallback(r, content);
    if (timed) {
        PyObject *sec = PyFloat_FromDouble(mono_s() - t0);
        PyObject *res = sec ? PyObject_CallOneArg(r->record_latency, sec) : NULL;
        Py_XDECREF(sec);
        if (!res) {
            Py_DECREF(vec);
            return NULL;
        }
        Py_DECREF(res);
    }
    return vec;
}

static int Reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    PyObject *fallback, *lock, *by_content, *slab, *expires, *keys, *buffer, *drain, *clock,
        *record_latency;
    Py_ssize_t access_buffer;
    if (!PyArg_ParseTuple(args, "OOO!OO!O!O!nOOO", &fallback, &lock, &PyDict_Type, &by_content,
                          &slab, &PyList_Type, &expires, &PyList_Type, &keys, &PyList_Type,
                          &buffer, &access_buffer, &drain, &clock, &record_latency))
        return -1;
    if (!PyArray_Check(slab) || PyArray_TYPE((PyArrayObject *)slab) != NPY_FLOAT32 ||
        PyArray_NDIM((PyArrayObject *)slab) != 2 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)slab)) {
        PyErr_SetString(PyExc_TypeError, "slab must be a C-contiguous 2-d float32 array");
        return -1;
    }
    if (access_buffer < 1) {
        PyErr_SetString(PyExc_ValueError, "access_buffer must be >= 1");
        return -1;
    }
    PyObject *acq = PyObject_GetAttrString(lock, "acquire");
    if (!acq) return -1;
    PyObject *rel = PyObject_GetAttrString(lock, "release");
    if (!rel) {
        Py_DECREF(acq);
        return -1;
    }
#define SET(field, value) do { PyObject *_v = (value); Py_INCREF(_v); Py_XSETREF(r->field, _v); } while (0)
    SET(fallback, fallback);
    SET(by_content, by_content);
    SET(slab, slab);
    SET(expires, expires);
    SET(keys, keys);
    SET(buffer, buffer);
    SET(drain, drain);
    SET(clock, clock);
    SET(record_latency, record_latency);
#undef SET
    Py_XSETREF(r->acquire, acq);
    Py_XSETREF(r->release, rel);
    PyArrayObject *a = (PyArrayObject *)slab;
    r->slab_data = PyArray_BYTES(a);
    r->rows = PyArray_DIM(a, 0);
    r->dim = PyArray_DIM(a, 1);
    r->row_bytes = (Py_ssize_t)r->dim * 4;
    r->access_buffer = access_buffer;
    r->hits = 0;
    r->tick = 0;
    r->closed = 0;
    r->vectorcall = Reader_vectorcall;
    return 0;
}

static int Reader_traverse(Reader *r, visitproc visit, void *arg) {
    Py_VISIT(r->fallback);
    Py_VISIT(r->acquire);
    Py_VISIT(r->release);
    Py_VISIT(r->by_content);
    Py_VISIT(r->slab);
    Py_VISIT(r->expires);
    Py_VISIT(r->keys);
    Py_VISIT(r->buffer);
    Py_VISIT(r->drain);
    Py_VISIT(r->clock);
    Py_VISIT(r->record_latency);
    return 0;
}

static int Reader_clear(Reader *r) {
    r->slab_data = NULL; /* first: a call from a finalizer below finds it uninitialised */
    r->rows = 0;
    Py_CLEAR(r->fallback);
    Py_CLEAR(r->acquire);
    Py_CLEAR(r->release);
    Py_CLEAR(r->by_content);
    Py_CLEAR(r->slab);
    Py_CLEAR(r->expires);
    Py_CLEAR(r->keys);
    Py_CLEAR(r->buffer);
    Py_CLEAR(r->drain);
    Py_CLEAR(r->clock);
    Py_CLEAR(r->record_latency);
    r->slab_data = NULL;
    r->rows = 0;
    return 0;
}

static void Reader_dealloc(Reader *r) {
    PyObject_GC_UnTrack(r);
    Reader_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *Reader_call(PyObject *self, PyObject *args, PyObject *kwds) {
    return PyVectorcall_Call(self, args, kwds);
}

/* gather(contents, out) -> list of the indices not served: with the lock held by the
 * caller and no entry carrying an expiry, copy the hot row of every content found into
 * out[i] and record its access (draining a full buffer once at the end, as
 * record_hot_hits does). Hits are not counted here (the caller counts the batch). */
/* out is a writable C-contiguous float32 array of dim columns (gather's and rows') */
static int out_rows_ok(PyObject *out, npy_intp dim) {
    if (!PyArray_Check(out)) return 0;
    PyArrayObject *a = (PyArrayObject *)out;
    return PyArray_TYPE(a) == NPY_FLOAT32 && PyArray_NDIM(a) == 2 &&
           PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISWRITEABLE(a) && PyArray_DIM(a, 1) == dim;
}

static PyObject *Reader_gather(Reader *r, PyObject *args) {
    PyObject *contents, *outobj;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &contents, &outobj)) return NULL;
    if (!r->slab_data) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is not initialised");
        return NULL;
    }
    if (r->closed) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is closed");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(contents);
    if (!out_rows_ok(outobj, r->dim) || PyArray_DIM((PyArrayObject *)outobj, 0) != n) {
        PyErr_SetString(PyExc_TypeError,
                        "out must be a writable C-contiguous float32 array (len(contents), dim)");
        return NULL;
    }
    char *dst = PyArray_BYTES((PyArrayObject *)outobj);
    PyObject *misses = PyList_New(0);
    if (!misses) return NULL;
    Py_ssize_t nkeys = PyList_GET_SIZE(r->keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *so = PyDict_GetItemWithError(r->by_content, PyList_GET_ITEM(contents, i));
        Py_ssize_t slot = -1;
        if (so) {
            slot = PyLong_AsSsize_t(so);
            if (slot == -1 && PyErr_Occurred()) goto fail;
        } else if (PyErr_Occurred()) {
            goto fail;
        }
        if (slot < 0) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (!idx || PyList_Append(misses, idx) < 0) {
                Py_XDECREF(idx);
                goto fail;
            }
            Py_DECREF(idx);
            continue;
        }
        if (slot >= r->rows || slot >= nkeys) {
            PyErr_SetString(PyExc_RuntimeError, "hot tier slot out of range");
            goto fail;
        }
        memcpy(dst + i * r->row_bytes, r->slab_data + slot * r->row_bytes, (size_t)r->row_bytes);
        if (PyList_Append(r->buffer, PyList_GET_ITEM(r->keys, slot)) < 0) goto fail;
    }
    if (PyList_GET_SIZE(r->buffer) >= r->access_buffer) {
        PyObject *d = PyObject_CallNoArgs(r->drain);
        if (!d) goto fail;
        Py_DECREF(d);
    }
    return misses;
fail:
    Py_DECREF(misses);
    return NULL;
}

static PyMethodDef Reader_methods[] = {
    {"gather", (PyCFunction)Reader_gather, METH_VARARGS,
     "gather(contents, out) -> indices not served: copy hot rows into out (lock held by "
     "the caller; only when no hot entry has an expiry)."},
    {"close", reader_close, METH_NOARGS,
     "From now on every call goes to the fallback (the closed cache's Python embed)."},
    {"take_hits", reader_take_hits, METH_NOARGS,
     "Hits served since the last call (the counter restarts at 0)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"hits", reader_get_hits, NULL, "Hits served and not yet taken.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Reader_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Reader, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.HotReader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TierCache.embed's hot hit in C (see _core.c); everything else falls back.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_call = Reader_call,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_methods = Reader_methods,
    .tp_members = Reader_members,
    .tp_getset = Reader_getset,
};


/* ---- BLAKE2b (RFC 7693): the cache key's digest, in C for the warm reader --------------
 *
 * tiercache.keys.KeyMaker.digest is blake2b(digest_size=16, person=b"tiercache.key.1")
 * over a fingerprint prefix, then a type tag, the content's length (u64 LE) and its bytes.
 * The reader absorbs the prefix once and copies that state per key, as KeyMaker copies a
 * primed hashlib object. Tests compare every digest with hashlib's.
 */

typedef struct {
    uint64_t h[8], t[2];
    uint8_t b[128];
    size_t c;
    size_t outlen;
} B2;

static const uint64_t B2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t load64le(const uint8_t *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint64_t rotr64(uint64_t x, unsigned n) { return (x >> n) | (x << (64 - n)); }

#define B2_G(a, b, c, d, x, y)        \
    do {                              \
        v[a] = v[a] + v[b] + (x);     \
        v[d] = rotr64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];           \
        v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y);     \
        v[d] = rotr64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];           \
        v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)

static void b2_compress(B2 *s, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= s->t[0];
    v[13] ^= s->t[1];
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64le(s->b + 8 * i);
    /* unrolled, the message schedule's indexes are constants: m[] stays in registers
       (~2x faster than the rolled loop at -O2) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 12
#elif defined(__clang__)
#pragma unroll
#endif
    for (int r = 0; r < 12; r++) {
        const uint8_t *g = B2_SIGMA[r];
        B2_G(0, 4, 8, 12, m[g[0]], m[g[1]]);
        B2_G(1, 5, 9, 13, m[g[2]], m[g[3]]);
        B2_G(2, 6, 10, 14, m[g[4]], m[g[5]]);
        B2_G(3, 7, 11, 15, m[g[6]], m[g[7]]);
        B2_G(0, 5, 10, 15, m[g[8]], m[g[9]]);
        B2_G(1, 6, 11, 12, m[g[10]], m[g[11]]);
        B2_G(2, 7, 8, 13, m[g[12]], m[g[13]]);
        B2_G(3, 4, 9, 14, m[g[14]], m[g[15]]);
    }
    for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

/* digest size outlen (1..64), no key, a personalisation of up to 16 bytes */
static void b2_init(B2 *s, size_t outlen, const uint8_t *person, size_t person_len) {
    uint8_t p[16] = {0};
    memcpy(p, person, person_len > 16 ? 16 : person_len);
    for (int i = 0; i < 8; i++) s->h[i] = B2_IV[i];
    s->h[0] ^= 0x01010000ULL ^ (uint64_t)outlen;
    s->h[6] ^= load64le(p);
    s->h[7] ^= load64le(p + 8);
    s->t[0] = s->t[1] = 0;
    s->c = 0;
    s->outlen = outlen;
    memset(s->b, 0, sizeof s->b);
}

static void b2_update(B2 *s, const uint8_t *in, size_t n) {
    while (n > 0) {
        if (s->c == 128) { /* a full block is compressed only once more input arrives */
            s->t[0] += 128;
            if (s->t[0] < 128) s->t[1]++;
            b2_compress(s, 0);
            s->c = 0;
        }
        size_t take = 128 - s->c;
        if (take > n) take = n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
    }
}

static void b2_final(B2 *s, uint8_t *out) {
    s->t[0] += s->c;
    if (s->t[0] < s->c) s->t[1]++;
    memset(s->b + s->c, 0, 128 - s->c);
    b2_compress(s, 1);
    for (size_t i = 0; i < s->outlen; i++) out[i] = (uint8_t)(s->h[i >> 3] >> (8 * (i & 7)));
}

/* the key of a str (UTF-8, tag 's') or bytes (tag 'b') content: 1 done, 0 not here (a
 * str that is not valid UTF-8, i.e. lone surrogates: KeyMaker encodes them with
 * surrogatepass), -1 error */
static int content_digest(const B2 *base, PyObject *content, uint8_t out[16]) {
    const char *data;
    Py_ssize_t len;
    PyObject *tmp = NULL;
    uint8_t tag;
    if (PyUnicode_CheckExact(content)) {
        tag = 's';
        if (PyUnicode_IS_ASCII(content)) {
            data = (const char *)PyUnicode_DATA(content);
            len = PyUnicode_GET_LENGTH(content);
        } else {
            tmp = PyUnicode_AsUTF8String(content);
            if (!tmp) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
                PyErr_Clear();
                return 0;
            }
            data = PyBytes_AS_STRING(tmp);
            len = PyBytes_GET_SIZE(tmp);
        }
    } else if (PyBytes_CheckExact(content)) {
        tag = 'b';
        data = PyBytes_AS_STRING(content);
        len = PyBytes_GET_SIZE(content);
    } else {
        return 0;
    }
    B2 s = *base;
    uint8_t head[9];
    head[0] = tag;
    for (int i = 0; i < 8; i++) head[1 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    b2_update(&s, head, 9);
    b2_update(&s, (const uint8_t *)data, (size_t)len);
    b2_final(&s, out);
    Py_XDECREF(tmp);
    return 1;
}


/* ---- the warm tier's read path -------------------------------------------------------
 *
 * WarmReader(fallback, lock, tier, generations, prefix, person, dim, buffer, access_buffer,
 *            drain, clock, record_latency, xxh3): TierCache.embed for a cache whose hot
 * tier is off, in one C call: the key's digest (BLAKE2b above), one read transaction on
 * the LMDB tier through py-lmdb's own objects (the same environment, so LMDB's
 * one-environment-per-process rule holds), the record found as LmdbTier.get_at finds it,
 * verified as codec.decode_at verifies it (header, dim, XXH3 checksum over the record),
 * decoded into a new float32 array, then, under the cache's lock, the access recorded in
 * the engine's buffer as TierCache._warm_get_one records it. Hits are counted here and
 * folded into the cache's counters by take_hits().
 *
 * It serves only clean hits. Anything else is handed to ``fallback(content)``, the Python
 * embed, before anything is counted: a miss, a corrupt or unreadable record, an expired
 * one, an LMDB error (a map resized by another process included), a resize in progress in
 * this process, a handle opened before a fork, a closed tier or cache, another content
 * type. The fallback reads again and does what the Python path does (count, delete,
 * recompute).
 *
 * ``tier`` is the LmdbTier; its ``_fast_bind()`` returns (handle, begin, index, records,
 * segs, active, wake, packed_first, generation) for its current environment handle, or
 * None. ``generations`` is the dict holding the module's ``_fork_generation``.
 */

typedef uint64_t (*xxh3_fn)(const void *, size_t);

/* XXH3_64bits, the C function behind the Python ``xxh3`` callable (xxhash's
 * xxh3_64_intdigest), looked up in the extension module that defines the callable, so a
 * record's checksum costs no Python call. Used only when that module exports it and it
 * agrees with the callable on inputs of every length class XXH3 treats apart (0-3, 4-8,
 * 9-16, 17-128, 129-240, longer, up to several 1 KB stripes blocks); else NULL and the
 * callable is called. Never raises. */
static xxh3_fn resolve_xxh3(PyObject *pyfn) {
    xxh3_fn fn = NULL;
#if defined(__unix__) || defined(__APPLE__)
    PyObject *name = PyObject_GetAttrString(pyfn, "__module__");
    PyObject *mod = name && PyUnicode_Check(name) ? PyImport_GetModule(name) : NULL;
    PyObject *file = mod ? PyObject_GetAttrString(mod, "__file__") : NULL;
    const char *path = file && PyUnicode_Check(file) ? PyUnicode_AsUTF8(file) : NULL;
    if (path) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* already loaded, or nothing */
        if (lib) {
            *(void **)(&fn) = dlsym(lib, "XXH3_64bits");
            dlclose(lib); /* the module keeps it loaded */
        }
    }
    Py_XDECREF(file);
    Py_XDECREF(mod);
    Py_XDECREF(name);
    static const Py_ssize_t lens[] = {0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023,
                                      1024, 1560, 3100, 5000};
    uint8_t buf[5000];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 131u + (i >> 7));
    for (size_t k = 0; fn && k < sizeof lens / sizeof lens[0]; k++) {
        PyObject *mv = PyMemoryView_FromMemory((char *)buf, lens[k], PyBUF_READ);
        PyObject *d = mv ? PyObject_CallOneArg(pyfn, mv) : NULL;
        unsigned long long want = d ? PyLong_AsUnsignedLongLong(d) : 0;
        Py_XDECREF(mv);
        Py_XDECREF(d);
        if (PyErr_Occurred() || want != fn(buf, (size_t)lens[k])) fn = NULL;
    }
    PyErr_Clear();
#endif
    return fn;
}

typedef struct {
    READER_HEAD
    PyObject *fallback, *acquire, *release, *tier, *generations, *buffer, *drain, *clock,
        *record_latency, *xxh3;
    xxh3_fn xxh3_c; /* xxh3's own C function, when resolved (see resolve_xxh3) */
    /* the environment handle bound last (from tier._fast_bind()) */
    PyObject *h, *begin, *index, *records, *segs, *active, *wake;
    long generation;
    int packed_first;
    B2 base;
    npy_intp dim;
    Py_ssize_t access_buffer;
    unsigned long long tick;
    char ready;
    vectorcallfunc vectorcall;
} WReader;

static PyObject *S_handle, *S_resizing, *S_get, *S_abort, *S_fork_generation;

static PyObject *wreader_fallback(WReader *r, PyObject *content) {
    if (!r->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "WarmReader is not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(r->fallback, content);
}

/* bind to tier._handle if it changed: 1 bound and current, 0 not usable now, -1 error */
static int wreader_bind(WReader *r) {
    PyObject *h = PyObject_GetAttr(r->tier, S_handle);
    if (!h) return -1;
    if (h == Py_None) {
        Py_DECREF(h);
        return 0;
    }
    if (h != r->h) {
        PyObject *t = PyObject_CallMethod(r->tier, "_fast_bind", NULL);
        if (!t) {
            Py_DECREF(h);
            return -1;
        }
        PyObject *nh, *begin, *index, *records, *segs, *active, *wake;
        int packed_first;
        long generation;
        if (t == Py_None || !PyArg_ParseTuple(t, "OOOOOO!Opl;_fast_bind() result", &nh, &begin,
                                              &index, &records, &segs, &PyList_Type, &active,
                                              &wake, &packed_first, &generation)) {
            Py_DECREF(t);
            Py_DECREF(h);
            return PyErr_Occurred() ? -1 : 0;
        }
#define SET(field, value) do { PyObject *_v = (value); Py_INCREF(_v); Py_XSETREF(r->field, _v); } while (0)
        SET(h, nh);
        SET(begin, begin);
        SET(index, index);
        SET(records, records);
        SET(segs, segs);
        SET(active, active);
        SET(wake, wake);
#undef SET
        r->packed_first = packed_first;
        r->generation = generation;
        Py_DECREF(t);
        if (nh != h) { /* the handle changed again meanwhile: next call */
            Py_DECREF(h);
            return 0;
        }
    }
    Py_DECREF(h);
    PyObject *g = PyDict_GetItemWithError(r->generations, S_fork_generation);
    if (!g) return PyErr_Occurred() ? -1 : 0;
    long gen = PyLong_AsLong(g);
    if (gen == -1 && PyErr_Occurred()) return -1;
    return gen == r->generation; /* a forked child reopens through the Python path */
}

/* n little-endian float16 values to float32, exactly (numpy's conversion), portable and
 * without a branch per element, so the compiler vectorises it (setup.py passes
 * -ftree-vectorize). Normal and subnormal halves: the exponent and mantissa bits shifted
 * into a float's place read as 2^-112 times the value (a subnormal half lands on a
 * subnormal float with the same scale), so one multiply by 2^112 gives it exactly. Inf and
 * NaN (exponent all ones) keep their mantissa bits. */
static void halfs_to_floats_portable(const uint8_t *src, float *dst, npy_intp n) {
    const float scale = 0x1p112f;
    for (npy_intp i = 0; i < n; i++) {
        uint32_t h = (uint32_t)src[2 * i] | ((uint32_t)src[2 * i + 1] << 8);
        uint32_t em = h & 0x7FFFu, sign = (h & 0x8000u) << 16;
        uint32_t bits = em << 13, out;
        float f;
        memcpy(&f, &bits, 4);
        f *= scale;
        memcpy(&out, &f, 4);
        uint32_t special = 0x7F800000u | ((em & 0x3FFu) << 13);
        uint32_t mask = 0u - (uint32_t)(em >= 0x7C00u); /* all ones for Inf and NaN */
        out = (out & ~mask) | (special & mask) | sign;
        memcpy(&dst[i], &out, 4);
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define TC_HAVE_F16C 1
/* the same conversion with the F16C instruction (vcvtph2ps: exact for every half, NaNs
 * stay NaN), 8 halves at a time: ~35 ns for 384 against ~650 ns for the scalar loop on
 * this project's 2-core AMD EPYC VMs. Chosen at import when the CPU and OS support it. */
__attribute__((target("avx,f16c"))) static void halfs_to_floats_f16c(const uint8_t *src,
                                                                    float *dst, npy_intp n) {
    npy_intp i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    halfs_to_floats_portable(src + 2 * i, dst + i, n - i);
}
#endif

static int use_f16c = 0; /* set by the module's init: the CPU and OS support F16C */

static void halfs_to_floats(const uint8_t *src, float *dst, npy_intp n) {
#ifdef TC_HAVE_F16C
    if (use_f16c) {
        halfs_to_floats_f16c(src, dst, n);
        return;
    }
#endif
    halfs_to_floats_portable(src, dst, n);
}

#define REC_HEADER 24
#define REC_VERSION 1
#define REC_FLAG_BLOB 1

/* statuses of one key (rows() returns one byte per key) */
#define WR_ABSENT 0
#define WR_HIT 1
#define WR_BLOB 2    /* valid, with a blob (metadata, text): left to the Python path */
#define WR_CORRUPT 3 /* stored but not valid: never served */
#define WR_EXPIRED 4

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* verify and decode one record (codec.decode_at's rules) into dst: 1 decoded (*expires,
 * *blob set), 0 not valid (corrupt, another dim or version), -1 error */
static int wreader_decode(WReader *r, const uint8_t *p, Py_ssize_t n, float *dst,
                          double *expires, int *blob) {
    if (n < REC_HEADER) return 0;
    uint32_t crc = le32(p), rdim = le32(p + 8);
    uint8_t version = p[4], codec_id = p[5], flags = p[6];
    if (version != REC_VERSION || (npy_intp)rdim != r->dim) return 0;
    Py_ssize_t itemsize = codec_id == 0 ? 4 : codec_id == 1 ? 2 : codec_id == 2 ? 1 : 0;
    if (!itemsize) return 0;
    Py_ssize_t body_end = REC_HEADER + itemsize * (Py_ssize_t)r->dim;
    if (n != body_end && (n < body_end || !(flags & REC_FLAG_BLOB))) return 0;
    float scale;
    memcpy(expires, p + 12, 8);
    memcpy(&scale, p + 20, 4);
    if (codec_id == 2 && !isfinite(scale)) return 0;
    /* the whole record's cache lines requested at once (a cold record: the misses overlap
       instead of streaming one after another through the checksum) */
    for (Py_ssize_t o = 64; o < n; o += 64) __builtin_prefetch(p + o);
    unsigned long long digest;
    if (r->xxh3_c) {
        digest = r->xxh3_c(p + 4, (size_t)(n - 4));
    } else {
        PyObject *mv = PyMemoryView_FromMemory((char *)p + 4, n - 4, PyBUF_READ);
        if (!mv) return -1;
        PyObject *d = PyObject_CallOneArg(r->xxh3, mv);
        Py_DECREF(mv);
        if (!d) return -1;
        digest = PyLong_AsUnsignedLongLong(d);
        Py_DECREF(d);
        if (digest == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    }
    if ((uint32_t)digest != crc) return 0;
    const uint8_t *body = p + REC_HEADER;
    if (codec_id == 0) {
        memcpy(dst, body, (size_t)r->dim * 4);
    } else if (codec_id == 1) {
        halfs_to_floats(body, dst, r->dim);
    } else {
        for (npy_intp i = 0; i < r->dim; i++) dst[i] = (float)(int8_t)body[i] * scale;
    }
    *blob = n != body_end;
    return 1;
}

/* txn.get(key, None, db): a new reference, Py_None if absent, NULL on error */
static PyObject *txn_get(PyObject *txn, PyObject *key, PyObject *db) {
    PyObject *args[4] = {txn, key, Py_None, db};
    return PyObject_VectorcallMethod(S_get, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* a packed slot found through the index: segment id (8 bytes, big-endian), the record's
 * byte offset inside the segment (past the slot's 16-byte digest) and length */
typedef struct {
    uint8_t sid[8];
    uint32_t off, len;
} WSlot;

#define WR_SLOT 5 /* wreader_find: a packed slot, read by wreader_slot */

/* the first step of LmdbTier.get_at's lookup of key inside txn: a plain record decoded
 * into dst (WR_HIT, *expires and *blob set, or WR_CORRUPT), WR_ABSENT, or WR_SLOT with
 * *slot set (the index entry of a packed record; its segment is read by wreader_slot);
 * -1 on error */
static int wreader_find(WReader *r, PyObject *txn, PyObject *key, float *dst,
                        double *expires, int *blob, WSlot *slot) {
    PyObject *iv = NULL, *buf = NULL;
    Py_buffer v;
    int rc = WR_ABSENT, d;
    if (r->packed_first) {
        if (!(iv = txn_get(txn, key, r->index))) return -1;
        if (iv == Py_None) {
            Py_CLEAR(iv);
            if (!(buf = txn_get(txn, key, r->records))) return -1;
            if (buf == Py_None) goto done;
        }
    } else {
        if (!(buf = txn_get(txn, key, r->records))) return -1;
        if (buf == Py_None) {
            Py_CLEAR(buf);
            if (!(iv = txn_get(txn, key, r->index))) return -1;
            if (iv == Py_None) goto done;
        }
    }
    rc = WR_CORRUPT;
    if (buf) {
        if (PyObject_GetBuffer(buf, &v, PyBUF_SIMPLE) < 0) {
            rc = -1;
            goto done;
        }
        d = wreader_decode(r, (const uint8_t *)v.buf, v.len, dst, expires, blob);
        PyBuffer_Release(&v);
        rc = d < 0 ? -1 : d ? WR_HIT : WR_CORRUPT;
        goto done;
    }
    if (PyObject_GetBuffer(iv, &v, PyBUF_SIMPLE) < 0) {
        rc = -1;
        goto done;
    }
    if (v.len == 16) { /* else a damaged index entry: corrupt */
        const uint8_t *ip = (const uint8_t *)v.buf;
        memcpy(slot->sid, ip, 8);
        slot->off = le32(ip + 8);
        slot->len = le32(ip + 12);
        rc = WR_SLOT;
    }
    PyBuffer_Release(&v);
done:
    Py_XDECREF(iv);
    Py_XDECREF(buf);
    return rc;
}

/* the segment of slot (new reference; Py_None if absent, NULL on error) */
static PyObject *wreader_segment(WReader *r, PyObject *txn, const WSlot *slot) {
    PyObject *sid = PyBytes_FromStringAndSize((const char *)slot->sid, 8);
    if (!sid) return NULL;
    PyObject *seg = txn_get(txn, sid, r->segs);
    Py_DECREF(sid);
    return seg;
}

/* the record of key's slot inside the segment's bytes (seg, n): its address when the slot
 * lies inside the segment and holds key's digest, else NULL (corrupt) */
static inline const uint8_t *slot_record(const uint8_t *seg, Py_ssize_t n, const WSlot *slot,
                                         PyObject *key) {
    if (!seg || (uint64_t)slot->off + 16 + slot->len > (uint64_t)n ||
        memcmp(seg + slot->off, PyBytes_AS_STRING(key), 16) != 0)
        return NULL;
    return seg + slot->off + 16;
}

/* the packed record of key at slot inside the segment's bytes (seg, n): WR_HIT (decoded
 * into dst) when slot_record finds it and it is valid, else WR_CORRUPT; -1 on error */
static int wreader_slot(WReader *r, const uint8_t *seg, Py_ssize_t n, const WSlot *slot,
                        PyObject *key, float *dst, double *expires, int *blob) {
    const uint8_t *rec = slot_record(seg, n, slot, key);
    if (!rec) return WR_CORRUPT;
    int d = wreader_decode(r, rec, (Py_ssize_t)slot->len, dst, expires, blob);
    return d < 0 ? -1 : d ? WR_HIT : WR_CORRUPT;
}

/* the record of key inside txn, found as LmdbTier.get_at finds it (a plain record, or a
 * packed slot whose stored digest is key's), decoded into dst: WR_HIT (*expires and *blob
 * set), WR_ABSENT, WR_CORRUPT, or -1 on error */
static int wreader_lookup(WReader *r, PyObject *txn, PyObject *key, float *dst,
                          double *expires, int *blob) {
    WSlot slot;
    int rc = wreader_find(r, txn, key, dst, expires, blob, &slot);
    if (rc != WR_SLOT) return rc;
    PyObject *seg = wreader_segment(r, txn, &slot);
    if (!seg) return -1;
    rc = WR_CORRUPT; /* an index entry without its segment: corrupt */
    if (seg != Py_None) {
        Py_buffer v;
        if (PyObject_GetBuffer(seg, &v, PyBUF_SIMPLE) < 0) {
            rc = -1;
        } else {
            rc = wreader_slot(r, (const uint8_t *)v.buf, v.len, &slot, key, dst, expires,
                              blob);
            PyBuffer_Release(&v);
        }
    }
    Py_DECREF(seg);
    return rc;
}

/* A read transaction as LmdbTier.get_at opens one: bound to the tier's current handle,
 * announced in its ``active`` list, refused while this process resizes the map. */
typedef struct {
    PyObject *h, *active, *txn;
} WTxn;

/* 1 open, 0 not usable now (closed tier, forked child, resize), -1 error */
static int wtxn_enter(WReader *r, WTxn *t) {
    t->h = t->active = t->txn = NULL;
    int b = wreader_bind(r);
    if (b <= 0) return b;
    t->h = r->h;
    t->active = r->active;
    Py_INCREF(t->h);
    Py_INCREF(t->active);
    if (PyList_Append(t->active, Py_None) < 0) {
        Py_CLEAR(t->h);
        Py_CLEAR(t->active);
        return -1;
    }
    PyObject *res = PyObject_GetAttr(t->h, S_resizing);
    int resizing = res ? PyObject_IsTrue(res) : -1;
    Py_XDECREF(res);
    if (resizing != 0) return resizing > 0 ? 0 : -1; /* the caller still calls wtxn_exit */
    t->txn = PyObject_CallNoArgs(r->begin);
    return t->txn ? 1 : -1;
}

/* Close what wtxn_enter opened (abort the transaction, leave ``active``, wake a waiting
 * resizer) and settle the outcome ``rc`` (-1 with an exception set, or >= 0): an error
 * raised while leaving wins, as in Python. Errors that are Exceptions (LMDB's, a map
 * resized by another process) become 0, "not served here": the Python path reads again and
 * handles them. Others (KeyboardInterrupt) are returned as -1. */
static int wtxn_exit(WReader *r, WTxn *t, int rc) {
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb);
    if (t->txn) {
        PyObject *args[1] = {t->txn};
        PyObject *ab = PyObject_VectorcallMethod(S_abort, args,
                                                 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_XDECREF(ab);
        Py_CLEAR(t->txn);
    }
    if (t->active) {
        Py_ssize_t na = PyList_GET_SIZE(t->active);
        if (na > 0) PyList_SetSlice(t->active, na - 1, na, NULL);
        PyObject *res = PyObject_GetAttr(t->h, S_resizing);
        int resizing = res ? PyObject_IsTrue(res) : -1;
        Py_XDECREF(res);
        if (resizing > 0) {
            PyObject *w = PyObject_CallNoArgs(r->wake);
            Py_XDECREF(w);
        }
    }
    Py_CLEAR(t->h);
    Py_CLEAR(t->active);
    if (PyErr_Occurred()) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(etb);
        rc = -1;
    } else {
        PyErr_Restore(et, ev, etb);
    }
    if (rc < 0) {
        if (!PyErr_Occurred()) return 0;
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    return rc;
}

/* embed's read: 1 *vec (a new array) and *expires set, 0 not served here, -1 error */
static int wreader_read(WReader *r, PyObject *key, PyObject **vec, double *expires) {
    /* the array first: its allocation may run the garbage collector (finalizers are
       Python code), better before the transaction than inside it */
    PyObject *a = PyArray_SimpleNew(1, &r->dim, NPY_FLOAT32);
    if (!a) return -1;
    WTxn t;
    int rc = wtxn_enter(r, &t), blob = 0;
    if (rc > 0) {
        rc = wreader_lookup(r, t.txn, key, (float *)PyArray_DATA((PyArrayObject *)a), expires,
                            &blob);
        if (rc >= 0) rc = rc == WR_HIT;
    }
    rc = wtxn_exit(r, &t, rc);
    if (rc == 1) {
        *vec = a;
    } else {
        Py_DECREF(a);
    }
    return rc;
}

static PyObject *WReader_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames) {
    WReader *r = (WReader *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!r->ready) {
        PyErr_SetString(PyExc_RuntimeError, "WarmReader is not initialised");
        return NULL;
    }
    if (nargs != 1 || (kwnames && PyTuple_GET_SIZE(kwnames)))
        return PyObject_Vectorcall(r->fallback, args, nargsf, kwnames);
    PyObject *content = args[0];
    if (r->closed) return wreader_fallback(r, content);
    int timed = (++r->tick & 15) == 0;
    double t0 = timed ? mono_s() : 0.0;
    uint8_t digest[16];
    int d = content_digest(&r->base, content, digest);
    if (d < 0) return NULL;
    if (d == 0) return wreader_fallback(r, content);
    PyObject *key = PyBytes_FromStringAndSize((const char *)digest, 16);
    if (!key) return NULL;
    PyObject *vec = NULL;
    double expires = 0.0;
    int rc = wreader_read(r, key, &vec, &expires);
    if (rc <= 0) {
        Py_DECREF(key);
        return rc < 0 ? NULL : wreader_fallback(r, content);
    }
    if (expires != 0.0) { /* the caller's clock decides; expired: the Python path deletes */
        PyObject *now = PyObject_CallNoArgs(r->clock);
        if (!now) goto fail;
        PyObject *e = PyFloat_FromDouble(expires);
        int fresh = e ? PyObject_RichCompareBool(e, now, Py_GT) : -1;
        Py_XDECREF(e);
        Py_DECREF(now);
        if (fresh < 0) goto fail;
        if (!fresh) {
            Py_DECREF(vec);
            Py_DECREF(key);
            return wreader_fallback(r, content);
        }
    }
    if (r->closed) { /* closed by the clock (the caller's code) */
        Py_DECREF(vec);
        Py_DECREF(key);
        return wreader_fallback(r, content);
    }
    /* _warm_get_one's locked section for a hit: record the access (and drain a full
       buffer); the counters are kept here and folded in by take_hits() */
    PyObject *got = PyObject_CallNoArgs(r->acquire);
    if (!got) goto fail;
    Py_DECREF(got);
    int ok = PyList_Append(r->buffer, key) == 0;
    if (ok && PyList_GET_SIZE(r->buffer) >= r->access_buffer) {
        PyObject *dr = PyObject_CallNoArgs(r->drain);
        ok = dr != NULL;
        Py_XDECREF(dr);
    }
    if (ok) r->hits++;
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *rel = PyObject_CallNoArgs(r->release);
    if (!rel) {
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        goto fail;
    }
    Py_DECREF(rel);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    if (!ok) goto fail;
    Py_DECREF(key);
    if (timed) {
        PyObject *sec = PyFloat_FromDouble(mono_s() - t0);
        PyObject *res = sec ? PyObject_CallOneArg(r->record_latency, sec) : NULL;
        Py_XDECREF(sec);
        if (!res) {
            Py_DECREF(vec);
            return NULL;
        }
        Py_DECREF(res);
    }
    return vec;
fail:
    Py_DECREF(vec);
    Py_DECREF(key);
    return NULL;
}

static int WReader_init(WReader *r, PyObject *args, PyObject *kwds) {
    PyObject *fallback, *lock, *tier, *generations, *buffer, *drain, *clock, *record_latency,
        *xxh3;
    Py_buffer prefix, person;
    Py_ssize_t dim, access_buffer;
    if (!PyArg_ParseTuple(args, "OOOO!y*y*nO!nOOOO", &fallback, &lock, &tier, &PyDict_Type,
                          &generations, &prefix, &person, &dim, &PyList_Type, &buffer,
                          &access_buffer, &drain, &clock, &record_latency, &xxh3))
        return -1;
    int bad = dim < 1 || access_buffer < 1 || person.len > 16;
    if (!bad) {
        b2_init(&r->base, 16, (const uint8_t *)person.buf, (size_t)person.len);
        b2_update(&r->base, (const uint8_t *)prefix.buf, (size_t)prefix.len);
    }
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&person);
    if (bad) {
        PyErr_SetString(PyExc_ValueError,
                        "dim and access_buffer must be >= 1, person at most 16 bytes");
        return -1;
    }
    PyObject *acq = PyObject_GetAttrString(lock, "acquire");
    if (!acq) return -1;
    PyObject *rel = PyObject_GetAttrString(lock, "release");
    if (!rel) {
        Py_DECREF(acq);
        return -1;
    }
#define SET(field, value) do { PyObject *_v = (value); Py_INCREF(_v); Py_XSETREF(r->field, _v); } while (0)
    SET(fallback, fallback);
    SET(tier, tier);
    SET(generations, generations);
    SET(buffer, buffer);
    SET(drain, drain);
    SET(clock, clock);
    SET(record_latency, record_latency);
    SET(xxh3, xxh3);
#undef SET
    r->xxh3_c = resolve_xxh3(xxh3);
    Py_XSETREF(r->acquire, acq);
    Py_XSETREF(r->release, rel);
    Py_CLEAR(r->h); /* bound on the first call */
    r->dim = (npy_intp)dim;
    r->access_buffer = access_buffer;
    r->hits = r->tick = 0;
    r->closed = 0;
    r->ready = 1;
    r->vectorcall = WReader_vectorcall;
    return 0;
}

static int WReader_traverse(WReader *r, visitproc visit, void *arg) {
    Py_VISIT(r->fallback);
    Py_VISIT(r->acquire);
    Py_VISIT(r->release);
    Py_VISIT(r->tier);
    Py_VISIT(r->generations);
    Py_VISIT(r->buffer);
    Py_VISIT(r->drain);
    Py_VISIT(r->clock);
    Py_VISIT(r->record_latency);
    Py_VISIT(r->xxh3);
    Py_VISIT(r->h);
    Py_VISIT(r->begin);
    Py_VISIT(r->index);
    Py_VISIT(r->records);
    Py_VISIT(r->segs);
    Py_VISIT(r->active);
    Py_VISIT(r->wake);
    return 0;
}

static int WReader_clear(WReader *r) {
    r->ready = 0; /* first: a call from a finalizer below finds it uninitialised */
    Py_CLEAR(r->fallback);
    Py_CLEAR(r->acquire);
    Py_CLEAR(r->release);
    Py_CLEAR(r->tier);
    Py_CLEAR(r->generations);
    Py_CLEAR(r->buffer);
    Py_CLEAR(r->drain);
    Py_CLEAR(r->clock);
    Py_CLEAR(r->record_latency);
    Py_CLEAR(r->xxh3);
    Py_CLEAR(r->h);
    Py_CLEAR(r->begin);
    Py_CLEAR(r->index);
    Py_CLEAR(r->records);
    Py_CLEAR(r->segs);
    Py_CLEAR(r->active);
    Py_CLEAR(r->wake);
    return 0;
}

static void WReader_dealloc(WReader *r) {
    PyObject_GC_UnTrack(r);
    WReader_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* rows(contents, out, rows_of, now, digest) -> (keys, status, expiries) or None.
 *
 * The warm part of embed_many, for the distinct contents a batch still wants: their keys
 * (BLAKE2b here; ``digest(content)``, KeyMaker's, where this code leaves it), then one read
 * transaction in which every record is found and verified as a single get finds and
 * verifies it, and decoded into ``out[rows_of[i][0]]`` (then copied to the content's other
 * rows, its repeats in the batch). ``status`` holds one byte per content: 0 absent, 1 hit
 * (its rows written, expiry in ``expiries``, float64 per content), 2 a valid record with a
 * blob (left to the Python path, which needs the blob), 3 stored but corrupt, 4 expired at
 * ``now``. Nothing is counted or recorded here. None: the store cannot be read here now
 * (closed, a forked child, a resize, an LMDB error); the caller reads it in Python.
 */
#define PREFETCH_AHEAD 4

/* a sort item: key k, payload i (an index) */
typedef struct {
    uint64_t k;
    Py_ssize_t i;
} Ord;

/* a[0..n) sorted by the top ``bytes`` bytes of k (stable LSD radix sort, a byte per pass,
 * a pass skipped where every item has the same byte); tmp holds n items. Linear: a
 * thousand keys sort in a few microseconds, where qsort's comparisons cost ~100. */
static void radix_sort(Ord *a, Ord *tmp, Py_ssize_t n, int bytes) {
    Ord *src = a, *dst = tmp;
    for (int byte = 8 - bytes; byte < 8 && n > 1; byte++) {
        int shift = 8 * byte;
        Py_ssize_t count[256] = {0};
        for (Py_ssize_t q = 0; q < n; q++) count[(src[q].k >> shift) & 255]++;
        if (count[(src[0].k >> shift) & 255] == n) continue;
        Py_ssize_t at = 0;
        for (int d = 0; d < 256; d++) {
            Py_ssize_t c = count[d];
            count[d] = at;
            at += c;
        }
        for (Py_ssize_t q = 0; q < n; q++) dst[count[(src[q].k >> shift) & 255]++] = src[q];
        Ord *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(Ord));
}

/* a packed slot of rows() waiting for its segment: the slot and the key's index */
typedef struct {
    WSlot slot;
    Py_ssize_t i;
} Pending;

static inline uint64_t be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = (v << 8) | p[k];
    return v;
}

/* rows(): settle key i's lookup status s (its vector, if any, already in its first row):
 * a blob or an expiry changes the status; a served hit is copied to its other rows */
static inline void rows_settle(WReader *r, float *base, const Py_ssize_t *at,
                               const Py_ssize_t *start, Py_ssize_t i, int s, double e,
                               int blob, double now, uint8_t *st, double *ex) {
    if (s == WR_HIT) {
        if (blob) {
            s = WR_BLOB;
        } else if (e != 0.0 && e <= now) { /* NaN never expires, as in Python */
            s = WR_EXPIRED;
        } else {
            const float *dst = base + at[start[i]] * r->dim;
            for (Py_ssize_t q = start[i] + 1; q < start[i + 1]; q++)
                memcpy(base + at[q] * r->dim, dst, (size_t)r->dim * 4);
        }
        ex[i] = e;
    }
    st[i] = (uint8_t)s;
}

static PyObject *WReader_rows(WReader *r, PyObject *args) {
    PyObject *contents, *outobj, *rows_of, *digest_fn;
    double now;
    if (!PyArg_ParseTuple(args, "O!OOdO", &PyList_Type, &contents, &outobj, &rows_of, &now,
                          &digest_fn))
        return NULL;
    if (!r->ready) {
        PyErr_SetString(PyExc_RuntimeError, "WarmReader is not initialised");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(contents);
    if (!out_rows_ok(outobj, r->dim)) {
        PyErr_SetString(PyExc_TypeError, "out must be a writable C-contiguous float32 array "
                                         "(rows, dim)");
        return NULL;
    }
    /* rows_of None: content i's row is i (a batch without repeats) */
    int identity = rows_of == Py_None;
    if (!identity && (!PyList_Check(rows_of) || PyList_GET_SIZE(rows_of) != n)) {
        PyErr_SetString(PyExc_ValueError,
                        "rows_of must be None or have one list of rows per content");
        return NULL;
    }
    /* every row checked before anything is read (the lists are the caller's: copied) */
    Py_ssize_t nrows = PyArray_DIM((PyArrayObject *)outobj, 0), total = identity ? n : 0;
    if (identity && n > nrows) {
        PyErr_SetString(PyExc_IndexError, "out has fewer rows than contents");
        return NULL;
    }
    for (Py_ssize_t i = 0; !identity && i < n; i++) {
        PyObject *rl = PyList_GET_ITEM(rows_of, i);
        if (!PyList_Check(rl) || PyList_GET_SIZE(rl) < 1) {
            PyErr_SetString(PyExc_TypeError, "rows_of items must be non-empty lists of rows");
            return NULL;
        }
        total += PyList_GET_SIZE(rl);
    }
    Py_ssize_t *at = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(Py_ssize_t));
    Py_ssize_t *start = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    PyObject *keys = NULL, *status = NULL, *expiries = NULL, *result = NULL;
    if (!at || !start) {
        PyErr_NoMemory();
        goto out;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; identity && i < n; i++) {
        start[i] = i;
        at[m++] = i;
    }
    for (Py_ssize_t i = 0; !identity && i < n; i++) {
        PyObject *rl = PyList_GET_ITEM(rows_of, i);
        start[i] = m;
        Py_ssize_t nr = PyList_GET_SIZE(rl);
        if (m + nr > total) {
            PyErr_SetString(PyExc_RuntimeError, "rows_of changed while read");
            goto out;
        }
        for (Py_ssize_t q = 0; q < nr; q++) {
            Py_ssize_t row = PyLong_AsSsize_t(PyList_GET_ITEM(rl, q));
            if (row == -1 && PyErr_Occurred()) goto out;
            if (row < 0 || row >= nrows) {
                PyErr_SetString(PyExc_IndexError, "a row of rows_of is outside out");
                goto out;
            }
            at[m++] = row;
        }
    }
    start[n] = m;
    if (!(keys = PyList_New(n))) goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(contents, i), *k;
        uint8_t digest[16];
        int d = content_digest(&r->base, c, digest);
        if (d < 0) goto out;
        if (d) {
            k = PyBytes_FromStringAndSize((const char *)digest, 16);
        } else {
            k = PyObject_CallOneArg(digest_fn, c);
            if (k && (!PyBytes_CheckExact(k) || PyBytes_GET_SIZE(k) != 16)) {
                Py_DECREF(k);
                PyErr_SetString(PyExc_TypeError, "digest() must return 16 bytes");
                k = NULL;
            }
        }
        if (!k) goto out;
        PyList_SET_ITEM(keys, i, k);
    }
    if (!(status = PyBytes_FromStringAndSize(NULL, n))) goto out;
    if (!(expiries = PyBytes_FromStringAndSize(NULL, n * 8))) goto out;
    uint8_t *st = (uint8_t *)PyBytes_AS_STRING(status);
    double *ex = (double *)(void *)PyBytes_AS_STRING(expiries);
    memset(st, WR_ABSENT, (size_t)n);
    memset(ex, 0, (size_t)n * 8);
    float *base = (float *)PyArray_DATA((PyArrayObject *)outobj);
    Ord *ord = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Ord));
    Ord *tmp = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Ord));
    Pending *pend = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Pending));
    const uint8_t **recp = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint8_t *));
    if (!ord || !tmp || !pend || !recp) {
        PyMem_Free(ord);
        PyMem_Free(tmp);
        PyMem_Free(pend);
        PyMem_Free(recp);
        PyErr_NoMemory();
        goto out;
    }
    /* phase 1 in digest order (the index B-tree's order: neighbouring searches share
       pages; the top 16 bits are order enough for that), packed slots only located,
       plain records decoded at once */
    for (Py_ssize_t i = 0; i < n; i++) {
        ord[i].k = be64((const uint8_t *)PyBytes_AS_STRING(PyList_GET_ITEM(keys, i)));
        ord[i].i = i;
    }
    radix_sort(ord, tmp, n, 2);
    Py_ssize_t np_ = 0;
    WTxn t;
    int rc = wtxn_enter(r, &t);
    if (rc > 0) {
        for (Py_ssize_t q = 0; q < n; q++) {
            Py_ssize_t i = ord[q].i;
            double e = 0.0;
            int blob = 0;
            float *dst = base + at[start[i]] * r->dim;
            int s = wreader_find(r, t.txn, PyList_GET_ITEM(keys, i), dst, &e, &blob,
                                 &pend[np_].slot);
            if (s == WR_SLOT) {
                pend[np_++].i = i;
                continue;
            }
            if (s < 0) {
                rc = -1;
                break;
            }
            rows_settle(r, base, at, start, i, s, e, blob, now, st, ex);
        }
        if (rc > 0 && np_) {
            /* phase 2: the distinct segments, in id order (ord now orders pend). A read
               transaction's data stays where LMDB returned it until the transaction ends
               (py-lmdb's ``buffers`` contract), so each segment's memoryview is dropped at
               once and only the address of each slot's record is kept: holding a
               thousand views would wake the garbage collector. */
            for (Py_ssize_t q = 0; q < np_; q++) {
                ord[q].k = be64(pend[q].slot.sid);
                ord[q].i = q;
            }
            radix_sort(ord, tmp, np_, 8);
            const uint8_t *segp = NULL;
            Py_ssize_t segn = 0;
            for (Py_ssize_t q = 0; rc > 0 && q < np_; q++) {
                Pending *p = &pend[ord[q].i];
                if (q == 0 || ord[q].k != ord[q - 1].k) {
                    PyObject *seg = wreader_segment(r, t.txn, &p->slot);
                    if (!seg) {
                        rc = -1;
                        break;
                    }
                    segp = NULL; /* absent: its slots are corrupt */
                    if (seg != Py_None) {
                        Py_buffer v;
                        if (PyObject_GetBuffer(seg, &v, PyBUF_SIMPLE) < 0) {
                            Py_DECREF(seg);
                            rc = -1;
                            break;
                        }
                        segp = (const uint8_t *)v.buf;
                        segn = v.len;
                        PyBuffer_Release(&v);
                    }
                    Py_DECREF(seg);
                }
                recp[q] = slot_record(segp, segn, &p->slot, PyList_GET_ITEM(keys, p->i));
            }
            /* phase 3: decode, with the record PREFETCH_AHEAD slots ahead prefetched (cold
               pages: the loads of several records overlap) */
            for (Py_ssize_t q = 0; rc > 0 && q < np_; q++) {
                if (q + PREFETCH_AHEAD < np_ && recp[q + PREFETCH_AHEAD]) {
                    const char *pp = (const char *)recp[q + PREFETCH_AHEAD];
                    uint32_t ln = pend[ord[q + PREFETCH_AHEAD].i].slot.len;
                    for (uint32_t o = 0; o < ln; o += 64) __builtin_prefetch(pp + o);
                }
                Pending *p = &pend[ord[q].i];
                Py_ssize_t i = p->i;
                double e = 0.0;
                int blob = 0, s = WR_CORRUPT;
                float *dst = base + at[start[i]] * r->dim;
                if (recp[q]) {
                    int d = wreader_decode(r, recp[q], (Py_ssize_t)p->slot.len, dst, &e, &blob);
                    if (d < 0) {
                        rc = -1;
                        break;
                    }
                    s = d ? WR_HIT : WR_CORRUPT;
                }
                rows_settle(r, base, at, start, i, s, e, blob, now, st, ex);
            }
        }
    }
    PyMem_Free(ord);
    PyMem_Free(tmp);
    PyMem_Free(pend);
    PyMem_Free(recp);
    rc = wtxn_exit(r, &t, rc);
    if (rc < 0) goto out;
    if (rc == 0) {
        result = Py_None;
        Py_INCREF(result);
        goto out;
    }
    result = PyTuple_Pack(3, keys, status, expiries);
out:
    PyMem_Free(at);
    PyMem_Free(start);
    Py_XDECREF(keys);
    Py_XDECREF(status);
    Py_XDECREF(expiries);
    return result;
}

static PyObject *WReader_digest(WReader *r, PyObject *content) {
    if (!r->ready) {
        PyErr_SetString(PyExc_RuntimeError, "WarmReader is not initialised");
        return NULL;
    }
    uint8_t digest[16];
    int d = content_digest(&r->base, content, digest);
    if (d < 0) return NULL;
    if (d == 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)digest, 16);
}

static PyMethodDef WReader_methods[] = {
    {"close", reader_close, METH_NOARGS,
     "From now on every call goes to the fallback (the closed cache's Python embed)."},
    {"take_hits", reader_take_hits, METH_NOARGS,
     "Warm hits served since the last call (the counter restarts at 0)."},
    {"rows", (PyCFunction)WReader_rows, METH_VARARGS,
     "rows(contents, out, rows_of, now, digest) -> (keys, status, expiries) or None: the "
     "warm part of embed_many in one read transaction (see _core.c)."},
    {"digest", (PyCFunction)WReader_digest, METH_O,
     "digest(content) -> the 16-byte key KeyMaker.digest gives, or None where the reader "
     "leaves it to KeyMaker (another type, a str with lone surrogates)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *WReader_get_native_xxh3(WReader *r, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(r->xxh3_c != NULL);
}

static PyGetSetDef WReader_getset[] = {
    {"hits", reader_get_hits, NULL, "Hits served and not yet taken.", NULL},
    {"native_xxh3", (getter)WReader_get_native_xxh3, NULL,
     "True when records are checksummed by xxhash's own C function (no Python call).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef WReader_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(WReader, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject WReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.WarmReader",
    .tp_basicsize = sizeof(WReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TierCache.embed's warm hit in C, hot tier off (see _core.c); everything "
              "else falls back.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)WReader_init,
    .tp_dealloc = (destructor)WReader_dealloc,
    .tp_traverse = (traverseproc)WReader_traverse,
    .tp_clear = (inquiry)WReader_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(WReader, vectorcall),
    .tp_methods = WReader_methods,
    .tp_getset = WReader_getset,
    .tp_members = WReader_members,
};

/* ---- module functions --------------------------------------------------------------- */

static Core *as_core(PyObject *o) {
    if (!PyObject_TypeCheck(o, &CoreType)) {
        PyErr_SetString(PyExc_TypeError, "expected a WTinyLFUCore policy");
        return NULL;
    }
    Core *c = (Core *)o;
    if (not_ready(c)) return NULL;
    return c;
}

static PyObject *mod_drain(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *pol, *keys;
    if (!PyArg_ParseTuple(args, "OO", &pol, &keys)) return NULL;
    Core *c = as_core(pol);
    if (!c) return NULL;
    if (c->busy) return reentered();
    PyObject *seq = PySequence_Tuple(keys); /* a private copy: callbacks cannot change it */
    if (!seq) return NULL;
    SketchSync s;
    if (sync_load(c, &s) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    c->busy = 1;
    Py_ssize_t len = PyTuple_GET_SIZE(seq);
    int err = 0;
    for (Py_ssize_t i = 0; i < len && !err; i++) {
        PyObject *k = PyTuple_GET_ITEM(seq, i);
        uint64_t h;
        Py_ssize_t n;
        if (key_hash(c, k, &h) < 0 || (n = find(c, k)) == -2) {
            err = 1;
            break;
        }
        sk_increment(c, &s, h);
        if (touch(c, n, &s) < 0) err = 1;
    }
    c->busy = 0;
    Py_DECREF(seq);
    if (sync_store(c, &s) < 0 || err) return NULL;
    Py_RETURN_NONE;
}

/* one request of the simulator: 1 hit, 0 miss, -1 error; counts updated */
typedef struct {
    long long hits, admitted, rejected, evicted;
} Counts;

static inline int replay_one(Core *c, SketchSync *s, PyObject *k, Counts *out) {
    uint64_t h;
    if (key_hash(c, k, &h) < 0) return -1; /* first: the hasher may run Python code */
    Py_ssize_t n = find(c, k);
    if (n == -2) return -1;
    sk_increment(c, s, h);
    if (n >= 0) {
        out->hits++;
        if (touch(c, n, s) < 0) return -1;
        return 1;
    }
    int t = touch(c, -1, s);
    if (t < 0) return -1;
    if (t > 0) {
        /* the climber ran: an override may have admitted k, then the offer finds it */
        n = find(c, k);
        if (n == -2) return -1;
        if (n >= 0) {
            out->admitted++;
            return 0;
        }
    }
    Placed p;
    if (place(c, k, &p) < 0) return -1;
    if (p.admitted) out->admitted++; else out->rejected++;
    if (p.evicted) {
        out->evicted++;
        Py_DECREF(p.evicted);
    }
    mark_full(c);
    return 0;
}

static PyObject *mod_replay(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *pol, *trace, *mask_obj;
    if (!PyArg_ParseTuple(args, "OOO", &pol, &trace, &mask_obj)) return NULL;
    Core *c = as_core(pol);
    if (!c) return NULL;
    if (c->busy) return reentered();
    Py_buffer tb, mb;
    int have_mask = mask_obj != Py_None;
    int is_buffer = PyObject_CheckBuffer(trace) && !PyList_Check(trace) && !PyTuple_Check(trace);
    PyObject *seq = NULL;
    Py_ssize_t len;
    char fmt = 0;
    if (is_buffer) {
        if (PyObject_GetBuffer(trace, &tb, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return NULL;
        const char *f = tb.format ? tb.format : "B";
        if (*f == '<' || *f == '=' || *f == '@') f++;
        fmt = *f;
        if (tb.itemsize != 8 || (fmt != 'q' && fmt != 'l' && fmt != 'Q' && fmt != 'L') ||
            f[1] != '\0') {
            PyBuffer_Release(&tb);
            PyErr_SetString(PyExc_TypeError, "trace buffer must hold int64 or uint64 items");
            return NULL;
        }
        len = tb.len / 8;
    } else {
        seq = PySequence_Tuple(trace); /* a private copy: callbacks cannot change it */
        if (!seq) return NULL;
        len = PyTuple_GET_SIZE(seq);
    }
    uint8_t *mask = NULL;
    if (have_mask) {
        if (PyObject_GetBuffer(mask_obj, &mb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto fail_trace;
        if (mb.len != len) {
            PyBuffer_Release(&mb);
            PyErr_SetString(PyExc_ValueError, "misses_out must have one byte per request");
            goto fail_trace;
        }
        mask = (uint8_t *)mb.buf;
    }
    SketchSync s;
    Counts cnt = {0, 0, 0, 0};
    int loaded = sync_load(c, &s) == 0;
    int err = !loaded;
    c->busy = 1;
    for (Py_ssize_t i = 0; i < len && !err; i++) {
        int r;
        if (is_buffer) {
            PyObject *k = (fmt == 'q' || fmt == 'l')
                              ? PyLong_FromLongLong(((long long *)tb.buf)[i])
                              : PyLong_FromUnsignedLongLong(((unsigned long long *)tb.buf)[i]);
            if (!k) {
                err = 1;
                break;
            }
            r = replay_one(c, &s, k, &cnt);
            Py_DECREF(k);
        } else {
            r = replay_one(c, &s, PyTuple_GET_ITEM(seq, i), &cnt);
        }
        if (r < 0) err = 1;
        else if (mask) mask[i] = (uint8_t)(r == 0);
    }
    c->busy = 0;
    if (loaded && sync_store(c, &s) < 0) err = 1;
    if (have_mask) PyBuffer_Release(&mb);
    if (is_buffer) PyBuffer_Release(&tb);
    Py_XDECREF(seq);
    if (err) return NULL;
    return Py_BuildValue("(LLLLL)", (long long)len, cnt.hits, cnt.admitted, cnt.rejected,
                         cnt.evicted);
fail_trace:
    if (is_buffer) PyBuffer_Release(&tb);
    Py_XDECREF(seq);
    return NULL;
}

static PyObject *mod_bind(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *t, *a, *r;
    if (!PyArg_ParseTuple(args, "OOO", &t, &a, &r)) return NULL;
    Py_INCREF(t);
    Py_INCREF(a);
    Py_INCREF(r);
    Py_XSETREF(AdmissionType, t);
    Py_XSETREF(ADMITTED, a);
    Py_XSETREF(REJECTED, r);
    Py_RETURN_NONE;
}

/* f16_to_f32(buffer, portable=False) -> float32 array: the warm reader's float16
 * conversion (for tests; portable=True runs the portable loop even where F16C is used) */
static PyObject *mod_f16_to_f32(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *obj;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "O|p", &obj, &portable)) return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE) < 0) return NULL;
    npy_intp n = (npy_intp)(v.len / 2);
    PyObject *a = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (a) {
        float *dst = (float *)PyArray_DATA((PyArrayObject *)a);
        if (portable) {
            halfs_to_floats_portable((const uint8_t *)v.buf, dst, n);
        } else {
            halfs_to_floats((const uint8_t *)v.buf, dst, n);
        }
    }
    PyBuffer_Release(&v);
    return a;
}

static PyMethodDef module_methods[] = {
    {"f16_to_f32", mod_f16_to_f32, METH_VARARGS,
     "f16_to_f32(buffer, portable=False) -> float32 array: the warm reader's float16 "
     "conversion (portable=True: the portable loop even where F16C is used)."},
    {"drain", mod_drain, METH_VARARGS,
     "drain(policy, keys): for each key in order, count it in the policy's sketch, then "
     "policy.on_hit(key). The engine's buffered drain."},
    {"replay", mod_replay, METH_VARARGS,
     "replay(policy, trace, misses_out) -> (requests, hits, admitted, rejected, evicted): "
     "the simulator's loop over a list of keys or an int64/uint64 buffer; misses_out is "
     "None or a writable bool buffer (1 = the request missed)."},
    {"bind", mod_bind, METH_VARARGS,
     "bind(Admission, ADMITTED, REJECTED): the result type admit returns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "tiercache._core",
    "Compiled core of the default policy (W-TinyLFU), shared by the cache and the simulator.",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
#ifdef TC_HAVE_F16C
    __builtin_cpu_init();
    use_f16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#endif
    if (PyType_Ready(&CoreType) < 0) return NULL;
    if (PyType_Ready(&ReaderType) < 0) return NULL;
    if (PyType_Ready(&WReaderType) < 0) return NULL;
    S_handle = PyUnicode_InternFromString("_handle");
    S_resizing = PyUnicode_InternFromString("resizing");
    S_get = PyUnicode_InternFromString("get");
    S_abort = PyUnicode_InternFromString("abort");
    S_fork_generation = PyUnicode_InternFromString("_fork_generation");
    if (!S_handle || !S_resizing || !S_get || !S_abort || !S_fork_generation) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    const char *names[4] = {NULL, "window", "probation", "protected"};
    for (int i = 1; i <= 3; i++) {
        SEG_NAMES[i] = PyUnicode_InternFromString(names[i]);
        if (!SEG_NAMES[i]) return NULL;
    }
    if (PyModule_AddIntConstant(m, "F16C", use_f16c) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "WTinyLFUCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "HotReader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&WReaderType);
    if (PyModule_AddObject(m, "WarmReader", (PyObject *)&WReaderType) < 0) {
        Py_DECREF(&WReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
