/*
 * tiercache._core's policy engine: the compiled core of the default policy (W-TinyLFU)
 * and the loops that drive it.
 *
 * One implementation serves both the live cache and the simulator:
 *
 *   - WTinyLFUCore: the residency state of tiercache.policy.WTinyLFUPolicy (window LRU,
 *     probation and protected segments as intrusive doubly linked lists over node arrays,
 *     a dict from key to node) and its per-access operations (on_hit, on_hits, admit,
 *     remove, resize_window, keys, segment). The Python subclass keeps configuration and
 *     the hill climber's decision (_climb), which runs once per sample period.
 *     The same type serves ``tinylfu`` and ``lru`` (mode 1 and 2, set by _core_setup):
 *     no window and no protected segment, so probation is one LRU list (a hit moves a key
 *     to protected and straight back to probation's MRU end), and the offered key is the
 *     candidate against probation's LRU entry: TinyLFU decides (mode 1) or the candidate
 *     always wins (mode 2). Their Python specifications are TinyLFUPolicy and LRUPolicy.
 *     Mode 3 serves ``lfu`` (LFUPolicy): one key list sorted by count, then by when the
 *     key reached it, with count buckets that know their last key (see MODE_LFU below).
 *   - drain(policy, keys): the engine's buffered drain (sketch increment, then on_hit, per
 *     key, in order).
 *   - replay(policy, trace, misses_out): the simulator's loop (hit: record; miss: record
 *     and offer), the exact calls TierCache makes for its hot tier.
 *
 * The frequency sketch stays a Python object (tiercache.sketch.FrequencySketch); this code
 * reads and updates its counter buffer in place with the same indexing and aging, and keeps
 * its ``additions`` and ``resets`` attributes in step. The Python implementation in
 * tiercache/wtinylfu.py (WTinyLFUPolicy) is the specification; tests replay random traces
 * through both and require identical decisions.
 *
 * Not thread-safe on its own: the engine serialises calls (it holds the cache's lock), and
 * every call runs with the GIL held.
 */
#include "policy.h"

/* ---- sketch ------------------------------------------------------------------------- */

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

static void lfu_hit(Core *c, Py_ssize_t n); /* MODE_LFU's hit, below */

/* the reuse gate's tick (see WTinyLFUPolicy._tick): one per access, hit or miss */
static inline void reuse_tick(Core *c, Py_ssize_t n) {
    uint32_t t = ++c->clock;
    if (c->reuse_pause) c->reuse_pause--;
    if (n >= 0) {
        Node *x = &c->nodes[n];
        if (x->seg == SEG_WINDOW) x->gap = t - x->last;
        x->last = t;
    }
}

/* sizing: mini, once per period sampled accesses: the shadows' hits since the last
   decision go to the Python WTinyLFUPolicy._mini_decide (scores, the window's move) */
static int mini_decide(Core *c) {
    Mini *m = c->mini;
    PyObject *t = PyTuple_New(m->k);
    if (!t) return -1;
    for (int i = 0; i < m->k; i++) {
        PyObject *v = PyLong_FromLongLong(m->sh[i].hits);
        if (!v) {
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, i, v);
        m->sh[i].hits = 0;
    }
    char busy = c->busy;
    c->busy = 0; /* the decision calls resize_window */
    PyObject *r = PyObject_CallMethod((PyObject *)c, "_mini_decide", "(O)", t);
    c->busy = busy;
    Py_DECREF(t);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* sizing: mini: a sampled access (key hash h) runs through every shadow (see
   WTinyLFUPolicy._mini_access) */
static int mini_access(Core *c, uint64_t h) {
    Mini *m = c->mini;
    if (mini_sample(h, m->salt) >= m->threshold) return 0;
    uint64_t z = tc_shadow_z(&m->sh[0], h); /* the shadows share k0 (_mini_setup) */
    for (int i = 0; i < m->k; i++) tc_shadow_access(&m->sh[i], z, i == 0);
    if (++m->count < m->period) return 0;
    m->count = 0;
    return mini_decide(c);
}

/* on_hit for node n (-1: the key is not resident, a recorded miss) of the key hashing to
   h (read only with sizing: mini); 0, or 1 when the climber (Python) ran, or -1 on error */
static inline int touch(Core *c, Py_ssize_t n, SketchSync *s, uint64_t h) {
    int hit = 0;
    if (c->reuse_cap) reuse_tick(c, n);
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
        } else if (c->mode < MODE_LFU) {
            unlink_node(c, n);
            push_mru(c, SEG_WINDOW, n);
        } else if (c->mode == MODE_LFU) {
            lfu_hit(c, n);
        } else if (c->mode == MODE_ARC) {
            unlink_node(c, n); /* a hit in T1 or T2: T2's most recent end */
            push_mru(c, SEG_MAIN, n);
        } else if (c->nodes[n].bucket < 3) {
            c->nodes[n].bucket++; /* MODE_S3FIFO: a hit counts, up to 3 */
        }
    }
    if (c->mini && mini_access(c, h) < 0) return -1;
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
    c->adm_hash[0] = hc;
    c->adm_hash[1] = hv;
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

/* ---- MODE_LFU: in-cache LFU over the window list ------------------------------------
   The keys are one list (the window's, so touch's last branch serves them), sorted by
   count, then by when the key reached it: its least recent end is the victim (the lowest
   count, the one that reached it first), as tiercache.policy.LFUPolicy decides. */

static Py_ssize_t bucket_after(Core *c, Py_ssize_t at, unsigned long long count) {
    Py_ssize_t b = c->bucket_free; /* never exhausted: at most cap buckets are in use */
    c->bucket_free = c->buckets[b].next;
    Py_ssize_t x = c->buckets[at].next;
    c->buckets[b] = (Bucket){count, -1, at, x};
    c->buckets[at].next = b;
    c->buckets[x].prev = b;
    return b;
}

/* node n (still linked) leaves its bucket; frees the bucket if n was its last key */
static void lfu_leave(Core *c, Py_ssize_t n) {
    Py_ssize_t b = c->nodes[n].bucket, p = c->nodes[n].prev;
    if (c->buckets[b].tail != n) return;
    if (p >= FIRST_NODE && c->nodes[p].bucket == b) {
        c->buckets[b].tail = p;
        return;
    }
    Py_ssize_t bp = c->buckets[b].prev, bn = c->buckets[b].next;
    c->buckets[bp].next = bn;
    c->buckets[bn].prev = bp;
    c->buckets[b].next = c->bucket_free;
    c->bucket_free = b;
}

/* a hit: the key's count goes up by one; it becomes the last key of that count */
static void lfu_hit(Core *c, Py_ssize_t n) {
    Py_ssize_t b = c->nodes[n].bucket, p = c->nodes[n].prev;
    unsigned long long f = c->buckets[b].count;
    Py_ssize_t nb = c->buckets[b].next;
    Py_ssize_t at;
    if (nb != 0 && c->buckets[nb].count == f + 1) {
        at = c->buckets[nb].tail;
    } else {
        nb = bucket_after(c, b, f + 1);
        /* after the last key of count f (n itself when it is that key: then its
           predecessor, n being moved) */
        at = c->buckets[b].tail == n ? p : c->buckets[b].tail;
    }
    lfu_leave(c, n);
    if (at == n) at = p;
    unlink_node(c, n);
    insert_after(c, at, SEG_WINDOW, n);
    c->nodes[n].bucket = (int32_t)nb;
    c->buckets[nb].tail = n;
}

/* a new key (node n, not linked) with count 1 */
static void lfu_insert(Core *c, Py_ssize_t n) {
    Py_ssize_t fb = c->buckets[0].next, at;
    if (fb != 0 && c->buckets[fb].count == 1) {
        at = c->buckets[fb].tail;
    } else {
        fb = bucket_after(c, 0, 1);
        at = SEG_WINDOW; /* the list's least recent end */
    }
    insert_after(c, at, SEG_WINDOW, n);
    c->nodes[n].bucket = (int32_t)fb;
    c->buckets[fb].tail = n;
}

/* drop node n (resident), keeping the buckets; returns its key or NULL on error */
static PyObject *lfu_drop(Core *c, Py_ssize_t n) {
    PyObject *k = c->nodes[n].key;
    if (PyDict_DelItem(c->index, k) < 0) return NULL;
    lfu_leave(c, n);
    unlink_node(c, n);
    c->nodes[n].seg = SEG_FREE;
    c->nodes[n].key = NULL;
    c->nodes[n].next = c->free_head;
    c->free_head = n;
    return k;
}

static int lfu_place(Core *c, PyObject *key, Placed *out) {
    PyObject *vk = NULL;
    if (c->len[SEG_WINDOW] >= c->cap) {
        vk = lfu_drop(c, lru_of(c, SEG_WINDOW));
        if (!vk) return -1;
    }
    Py_ssize_t n = new_node(c, key);
    if (n < 0) {
        Py_XDECREF(vk); /* the victim is gone either way (as a failed Python insert) */
        return -1;
    }
    lfu_insert(c, n);
    out->admitted = 1;
    out->evicted = vk;
    return 0;
}

/* ---- MODE_S3FIFO: the small queue (SEG_SMALL), main (SEG_MAIN), the ghost FIFO -------
   A node's bucket field holds its counter (0..3). As tiercache.policy.S3FIFOPolicy. */

static int ghost_unlink(Core *c, Py_ssize_t g) {
    PyObject *k = c->ghost[g].key;
    if (PyDict_DelItem(c->ghost_index, k) < 0) return -1;
    Py_ssize_t p = c->ghost[g].prev, x = c->ghost[g].next;
    c->ghost[p].next = x;
    c->ghost[x].prev = p;
    c->ghost_len[c->ghost[g].seg]--;
    c->ghost[g].key = NULL;
    c->ghost[g].next = c->ghost_free;
    c->ghost_free = g;
    Py_DECREF(k);
    return 0;
}

/* remember key as ghost list L's newest; 0 or -1 (the pool never runs out: S3-FIFO
   trims first, ARC keeps its four lists within 2 * capacity) */
static int ghost_add(Core *c, int L, PyObject *key) {
    Py_ssize_t g = c->ghost_free;
    if (g < 0) {
        PyErr_SetString(PyExc_RuntimeError, "tiercache._core: ghost pool exhausted");
        return -1;
    }
    PyObject *v = PyLong_FromSsize_t(g);
    int rc = v ? PyDict_SetItem(c->ghost_index, key, v) : -1;
    Py_XDECREF(v);
    if (rc < 0) return -1;
    c->ghost_free = c->ghost[g].next;
    Py_INCREF(key);
    c->ghost[g].key = key;
    c->ghost[g].seg = (uint8_t)L;
    Py_ssize_t last = c->ghost[L].prev;
    c->ghost[last].next = g;
    c->ghost[g].prev = last;
    c->ghost[g].next = L;
    c->ghost[L].prev = g;
    c->ghost_len[L]++;
    return 0;
}

/* S3-FIFO's ghost: list 0, dropping its oldest when full */
static int s3_ghost_add(Core *c, PyObject *key) {
    if (c->ghost_cap <= 0) return 0;
    if (c->ghost_len[0] >= c->ghost_cap && ghost_unlink(c, c->ghost[0].next) < 0) return -1;
    return ghost_add(c, 0, key);
}

/* forget key in the ghosts: 1 + its list if it was there, 0 not, -1 error */
static int ghost_take(Core *c, PyObject *key) {
    if (!c->ghost_index) return 0;
    PyObject *v = PyDict_GetItemWithError(c->ghost_index, key);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t g = PyLong_AsSsize_t(v);
    if (g == -1 && PyErr_Occurred()) return -1;
    int L = c->ghost[g].seg;
    return ghost_unlink(c, g) < 0 ? -1 : 1 + L;
}

/* the small queue's oldest keys move to main while their counter reaches the threshold;
   the first that does not leaves the cache into the ghost (*evicted, a new reference) */
static int s3_evict_small(Core *c, PyObject **evicted) {
    while (c->len[SEG_SMALL] > 0) {
        Py_ssize_t k = lru_of(c, SEG_SMALL);
        if (c->nodes[k].bucket >= c->move_threshold) {
            unlink_node(c, k);
            push_mru(c, SEG_MAIN, k);
            c->nodes[k].bucket = 0;
            continue;
        }
        if (s3_ghost_add(c, c->nodes[k].key) < 0) return -1;
        PyObject *vk = drop_node(c, k);
        if (!vk) return -1;
        *evicted = vk;
        return 0;
    }
    return 0;
}

/* main's oldest keys with a counter get another round (counter min(c, 3) - 1); the first
   with 0 leaves the cache (*evicted) */
static int s3_evict_main(Core *c, PyObject **evicted) {
    while (c->len[SEG_MAIN] > 0) {
        Py_ssize_t k = lru_of(c, SEG_MAIN);
        int32_t f = c->nodes[k].bucket;
        if (f > 0) {
            unlink_node(c, k);
            push_mru(c, SEG_MAIN, k);
            c->nodes[k].bucket = (f < 3 ? f : 3) - 1;
            continue;
        }
        PyObject *vk = drop_node(c, k);
        if (!vk) return -1;
        *evicted = vk;
        return 0;
    }
    return 0;
}

static int s3_place(Core *c, PyObject *key, Placed *out) {
    int to_main = ghost_take(c, key);
    if (to_main < 0) return -1;
    PyObject *ev = NULL;
    while (resident(c) >= c->cap) {
        PyObject *one = NULL;
        int r = c->len[SEG_MAIN] > c->s3_main_cap || c->len[SEG_SMALL] == 0
                    ? s3_evict_main(c, &one)
                    : s3_evict_small(c, &one);
        if (r < 0) {
            Py_XDECREF(ev);
            return -1;
        }
        if (one) {
            Py_XDECREF(ev); /* never more than one: the cache is at most full */
            ev = one;
        }
    }
    Py_ssize_t n = new_node(c, key);
    if (n < 0) {
        Py_XDECREF(ev);
        return -1;
    }
    push_mru(c, to_main ? SEG_MAIN : SEG_SMALL, n);
    c->nodes[n].bucket = 0;
    out->admitted = 1;
    out->evicted = ev;
    return 0;
}

/* ---- MODE_ARC: T1 (SEG_SMALL), T2 (SEG_MAIN), ghosts B1 (list 0) and B2 (list 1) ------
   As tiercache.policy.ARCPolicy (libCacheSim's ARC). */

/* replace: T1's or T2's least recent key leaves the cache into B1 or B2 (*evicted) */
static int arc_replace(Core *c, int ghost, PyObject **evicted) {
    Py_ssize_t n1 = c->len[SEG_SMALL];
    int from_t1 = (n1 > 0 && ((double)n1 > c->p || ((double)n1 == c->p && ghost == 2))) ||
                  c->len[SEG_MAIN] == 0;
    Py_ssize_t k = lru_of(c, from_t1 ? SEG_SMALL : SEG_MAIN);
    if (ghost_add(c, from_t1 ? 0 : 1, c->nodes[k].key) < 0) return -1;
    PyObject *vk = drop_node(c, k);
    if (!vk) return -1;
    *evicted = vk;
    return 0;
}

static int arc_make_room(Core *c, int ghost, PyObject **evicted) {
    Py_ssize_t t1 = c->len[SEG_SMALL], t2 = c->len[SEG_MAIN];
    Py_ssize_t b1 = c->ghost_len[0], b2 = c->ghost_len[1];
    if (ghost) return arc_replace(c, ghost, evicted);
    if (t1 + b1 + 1 > c->cap) {
        if (b1 > 0) {
            if (ghost_unlink(c, c->ghost[0].next) < 0) return -1;
            return arc_replace(c, ghost, evicted);
        }
        PyObject *vk = drop_node(c, lru_of(c, SEG_SMALL)); /* no ghost */
        if (!vk) return -1;
        *evicted = vk;
        return 0;
    }
    if (t1 + b1 + t2 + b2 >= 2 * c->cap && b2 > 0 && ghost_unlink(c, c->ghost[1].next) < 0)
        return -1;
    return arc_replace(c, ghost, evicted);
}

static int arc_place(Core *c, PyObject *key, Placed *out) {
    if (c->ghost_index) {
        PyObject *v = PyDict_GetItemWithError(c->ghost_index, key);
        if (!v && PyErr_Occurred()) return -1;
        if (v) { /* adapt p from the lists' sizes before the key leaves its ghost list */
            double b1 = (double)c->ghost_len[0], b2 = (double)c->ghost_len[1];
            Py_ssize_t g = PyLong_AsSsize_t(v);
            if (g == -1 && PyErr_Occurred()) return -1;
            if (c->ghost[g].seg == 0) {
                double d = b2 / b1 > 1.0 ? b2 / b1 : 1.0;
                c->p = c->p + d < (double)c->cap ? c->p + d : (double)c->cap;
            } else {
                double d = b1 / b2 > 1.0 ? b1 / b2 : 1.0;
                c->p = c->p - d > 0.0 ? c->p - d : 0.0;
            }
        }
    }
    int ghost = ghost_take(c, key);
    if (ghost < 0) return -1;
    PyObject *ev = NULL;
    while (resident(c) >= c->cap) {
        PyObject *one = NULL;
        if (arc_make_room(c, ghost, &one) < 0) {
            Py_XDECREF(ev);
            return -1;
        }
        if (one) {
            Py_XDECREF(ev); /* never more than one: the cache is at most full */
            ev = one;
        }
    }
    Py_ssize_t n = new_node(c, key);
    if (n < 0) {
        Py_XDECREF(ev);
        return -1;
    }
    push_mru(c, ghost ? SEG_MAIN : SEG_SMALL, n);
    out->admitted = 1;
    out->evicted = ev;
    return 0;
}

void tc_free_ghost(Core *c) {
    if (c->ghost) {
        for (Py_ssize_t i = 0; i < c->ghost_n; i++) Py_CLEAR(c->ghost[i].key);
        PyMem_Free(c->ghost);
        c->ghost = NULL;
    }
    c->ghost_n = 0;
    for (int L = 0; L < GHOSTS; L++) c->ghost_len[L] = 0;
    Py_CLEAR(c->ghost_index);
}

/* a ghost pool of n nodes (2 of them sentinels) and its dict; 0 or -1 */
int tc_alloc_ghost(Core *c, Py_ssize_t n) {
    tc_free_ghost(c);
    c->ghost_index = PyDict_New();
    c->ghost = c->ghost_index ? PyMem_Calloc((size_t)n, sizeof(Node)) : NULL;
    if (!c->ghost_index || !c->ghost) {
        tc_free_ghost(c);
        PyErr_NoMemory();
        return -1;
    }
    c->ghost_n = n;
    for (int L = 0; L < GHOSTS; L++) c->ghost[L].prev = c->ghost[L].next = L;
    c->ghost_free = n > GHOSTS ? GHOSTS : -1;
    for (Py_ssize_t i = GHOSTS; i < n; i++) c->ghost[i].next = i + 1 < n ? i + 1 : -1;
    return 0;
}

PyObject *tc_drop_resident(Core *c, Py_ssize_t n) {
    return c->mode == MODE_LFU ? lfu_drop(c, n) : drop_node(c, n);
}

/* ---- MODE_WTINYLFU's reuse gate (reuse_cap > 0; see WTinyLFUPolicy._place, _admit) ----
   The ghost remembers the key hashes and last accesses of the last departures (a ring,
   and a table from hash to ring slot). A candidate replaces main's victim only when
   TinyLFU admits it and its last gap is shorter than the victim's idle time. */

static inline uint64_t rg_home(Core *c, uint64_t h) { return splitmix64(h) & c->rg_mask; }

/* the table position holding hash h, or -1 */
static inline Py_ssize_t rg_find(Core *c, uint64_t h) {
    for (uint64_t i = rg_home(c, h);; i = (i + 1) & c->rg_mask) {
        Py_ssize_t s = c->rg_tab[i];
        if (s < 0) return -1;
        if (c->rg_hash[s] == h) return (Py_ssize_t)i;
    }
}

/* empty table position i (backward-shift deletion: no tombstones) */
static void rg_delete(Core *c, uint64_t i) {
    uint64_t m = c->rg_mask, j = i;
    for (;;) {
        j = (j + 1) & m;
        Py_ssize_t s = c->rg_tab[j];
        if (s < 0) break;
        uint64_t k = rg_home(c, c->rg_hash[s]);
        /* the entry at j may move to i unless its home lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        c->rg_tab[i] = s;
        i = j;
    }
    c->rg_tab[i] = -1;
}

/* a departure (hash h, last access ``last``) joins the ghost; the oldest of the last
   reuse_cap departures is forgotten (see WTinyLFUPolicy._ghost_add) */
static void reuse_forget(Core *c, uint64_t h, uint32_t last) {
    Py_ssize_t cap = c->reuse_cap;
    if (c->rg_count == cap) {
        Py_ssize_t old = c->rg_head;
        Py_ssize_t i = rg_find(c, c->rg_hash[old]);
        if (i >= 0 && c->rg_tab[i] == old) rg_delete(c, (uint64_t)i);
        c->rg_head = old + 1 == cap ? 0 : old + 1;
        c->rg_count--;
    }
    Py_ssize_t slot = c->rg_head + c->rg_count;
    if (slot >= cap) slot -= cap;
    Py_ssize_t i = rg_find(c, h); /* before the slot is written: it may be old's */
    c->rg_hash[slot] = h;
    c->rg_last[slot] = last;
    c->rg_count++;
    if (i >= 0) {
        c->rg_tab[i] = slot;
        return;
    }
    uint64_t k = rg_home(c, h);
    while (c->rg_tab[k] >= 0) k = (k + 1) & c->rg_mask;
    c->rg_tab[k] = slot;
}

/* does a candidate with this gap pass the gate against victim node v? */
static inline int reuse_pass(Core *c, uint32_t gap, Py_ssize_t v) {
    return c->reuse_pause > 0 || gap < (uint32_t)(c->clock - c->nodes[v].last);
}

/* modes 0-2 (see the Python _place_new): the offered key, whose gap is gap (the reuse
   gate's; NO_GAP when it is off), enters the window, or competes itself when there is
   none. 0 ok, -1 error */
static int place_segments(Core *c, PyObject *key, Placed *out, uint32_t gap) {
    if (c->window_capacity == 0) {
        /* capacity 1: no window; the offered key itself is the candidate */
        if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] < c->main_capacity) {
            Py_ssize_t n = new_node(c, key);
            if (n < 0) return -1;
            c->nodes[n].last = c->clock;
            c->nodes[n].gap = gap;
            push_mru(c, SEG_PROBATION, n);
            out->admitted = 1;
            return 0;
        }
        if (c->len[SEG_PROBATION] + c->len[SEG_PROTECTED] == 0) return 0; /* no victim */
        Py_ssize_t v = c->len[SEG_PROBATION] ? lru_of(c, SEG_PROBATION) : lru_of(c, SEG_PROTECTED);
        int ok = c->mode == MODE_LRU ? 1 : tinylfu_admit(c, key, c->nodes[v].key);
        if (ok < 0) return -1;
        if (ok && c->reuse_cap) ok = reuse_pass(c, gap, v);
        out->departed = c->adm_hash[ok ? 1 : 0];
        out->has_departed = 1;
        if (!ok) return 0;
        Py_ssize_t n = new_node(c, key); /* first: a failure leaves everything as it was */
        if (n < 0) return -1;
        c->nodes[n].last = c->clock;
        c->nodes[n].gap = gap;
        out->evicted_last = c->nodes[v].last;
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
    c->nodes[n].last = c->clock;
    c->nodes[n].gap = gap;
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
    if (ok && c->reuse_cap) ok = reuse_pass(c, c->nodes[cand].gap, v);
    out->departed = c->adm_hash[ok ? 1 : 0];
    out->has_departed = 1;
    if (!ok) {
        out->evicted_last = c->nodes[cand].last;
        PyObject *ck = drop_node(c, cand); /* the window's loser leaves the cache */
        if (!ck) return -1;
        out->evicted = ck;
        return 0;
    }
    out->evicted_last = c->nodes[v].last;
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

/* _place: offer a non-resident key (see the Python _place). 0 ok, -1 error */
int tc_policy_place(Core *c, PyObject *key, Placed *out) {
    out->admitted = 0;
    out->evicted = NULL;
    if (c->cap == 0) return 0;
    if (c->mode == MODE_LFU) return lfu_place(c, key, out);
    if (c->mode == MODE_S3FIFO) return s3_place(c, key, out);
    if (c->mode == MODE_ARC) return arc_place(c, key, out);
    out->has_departed = 0;
    if (!c->reuse_cap) return place_segments(c, key, out, NO_GAP);
    /* the reuse gate: the offered key's gap since the access the ghost remembers for it;
       once placed, the ghost forgets it. A hasher error here leaves the key without a gap
       (only a competition needs its hash, and raises it), except a RuntimeError (the
       policy refusing a re-entry from the hasher) */
    uint64_t h;
    Py_ssize_t i = -1;
    if (key_hash(c, key, &h) == 0)
        i = rg_find(c, h);
    else if (PyErr_ExceptionMatches(PyExc_Exception) &&
             !PyErr_ExceptionMatches(PyExc_RuntimeError))
        PyErr_Clear();
    else
        return -1;
    uint32_t gap = i < 0 ? NO_GAP : c->clock - c->rg_last[c->rg_tab[i]];
    if (place_segments(c, key, out, gap) < 0) return -1;
    if (i >= 0) rg_delete(c, (uint64_t)i);
    /* what left the cache joins the ghost (the evicted key, or the offered one, rejected),
       by the hash its competition computed */
    if (out->has_departed) {
        if (out->evicted)
            reuse_forget(c, out->departed, out->evicted_last);
        else if (!out->admitted)
            reuse_forget(c, out->departed, c->clock);
    }
    return 0;
}

/* a missed key (hash h) is being offered: count it for the shift detector when it is a
   recurring key, sketch frequency (this access included) >= RECURRING. Miss path only. */
#define RECURRING 2
static inline int count_offer(Core *c, PyObject *key) {
    /* the key is hashed here, as the Python admit hashes it (same hasher calls) */
    if (!(c->climbing && c->full)) return 0;
    uint64_t h;
    if (key_hash(c, key, &h) < 0) return -1;
    if (sk_frequency(c, h) >= RECURRING) c->sample_recurring++;
    return 0;
}

/* ---- module functions: the policy's loops (drain, replay) and bind ----------------- */

static Core *as_core(PyObject *o) {
    if (!PyObject_TypeCheck(o, &tc_CoreType)) {
        PyErr_SetString(PyExc_TypeError, "expected a WTinyLFUCore policy");
        return NULL;
    }
    Core *c = (Core *)o;
    if (not_ready(c)) return NULL;
    return c;
}

PyObject *tc_mod_drain(PyObject *Py_UNUSED(m), PyObject *args) {
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
        if (touch(c, n, &s, h) < 0) err = 1;
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
        if (touch(c, n, s, h) < 0) return -1;
        return 1;
    }
    int t = touch(c, -1, s, h);
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
    if (count_offer(c, k) < 0) return -1;
    Placed p;
    if (tc_policy_place(c, k, &p) < 0) return -1;
    if (p.admitted) out->admitted++; else out->rejected++;
    if (p.evicted) {
        out->evicted++;
        Py_DECREF(p.evicted);
    }
    mark_full(c);
    return 0;
}

PyObject *tc_mod_replay(PyObject *Py_UNUSED(m), PyObject *args) {
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

/* policy_type.c's entry points into the inline hot paths above */
int tc_policy_touch(Core *c, Py_ssize_t n, SketchSync *s, PyObject *key) {
    uint64_t h = 0;
    if (c->mini && key_hash(c, key, &h) < 0) return -1;
    return touch(c, n, s, h);
}

void tc_mini_free(Core *c) {
    Mini *m = c->mini;
    if (!m) return;
    c->mini = NULL;
    for (int i = m->k - 1; i >= 0; i--) tc_shadow_free(&m->sh[i]); /* shadow 0 owns the sketch */
    PyMem_Free(m);
}
int tc_count_offer(Core *c, PyObject *key) { return count_offer(c, key); }

PyObject *tc_AdmissionType = NULL;
PyObject *tc_ADMITTED = NULL;
PyObject *tc_REJECTED = NULL;

PyObject *tc_mod_bind(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *t, *a, *r;
    if (!PyArg_ParseTuple(args, "OOO", &t, &a, &r)) return NULL;
    Py_INCREF(t);
    Py_INCREF(a);
    Py_INCREF(r);
    Py_XSETREF(tc_AdmissionType, t);
    Py_XSETREF(tc_ADMITTED, a);
    Py_XSETREF(tc_REJECTED, r);
    Py_RETURN_NONE;
}
