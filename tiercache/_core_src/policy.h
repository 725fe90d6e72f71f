/*
 * The policy engine's shared definitions (policy.c: the engine, its modes and its loops;
 * policy_type.c: WTinyLFUCore, the Python type over it): segment and mode numbers, the
 * node, bucket and Core structs, and the inline helpers of the hot paths (static inline, so
 * that each file inlines them as before the split). Functions defined in one of the two
 * files and called from the other are declared here with the tc_ prefix (hidden, see
 * core.h).
 */
#ifndef TIERCACHE_POLICY_H
#define TIERCACHE_POLICY_H

#include "core.h"
#include "shadow.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define SEG_FREE 0
#define SEG_WINDOW 1
#define SEG_PROBATION 2
#define SEG_PROTECTED 3
#define SEG_SMALL 4 /* MODE_S3FIFO's small and main queues */
#define SEG_MAIN 5
#define N_SEGS 6
#define FIRST_NODE 6
#define MODE_WTINYLFU 0
#define MODE_TINYLFU 1
#define MODE_LRU 2
#define MODE_LFU 3
#define MODE_S3FIFO 4
#define MODE_ARC 5
#define GHOSTS 2 /* ghost lists: their sentinels are ghost nodes 0 and 1 */
#define MAX_COUNT 15
#define NO_GAP 0xFFFFFFFFu /* the reuse gate: a key the ghost did not remember */

extern PyObject *tc_AdmissionType; /* tiercache.policy.Admission */
extern PyObject *tc_ADMITTED;      /* Admission(True) */
extern PyObject *tc_REJECTED;      /* Admission(False, (), "rejected") */


static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    Py_ssize_t prev, next;
    PyObject *key; /* strong reference while resident */
    uint8_t seg;
    int32_t bucket; /* MODE_LFU: the node's count bucket (fits the struct's padding) */
    uint32_t last, gap; /* MODE_WTINYLFU's reuse gate: the clock at the key's last access,
                           and (window keys) its last gap between two accesses */
} Node;

/* MODE_LFU: one bucket per count held by some resident key, in a list by count; a bucket
   knows its last node in the key list (which is sorted by count, then by when the key
   reached that count) */
typedef struct {
    unsigned long long count;
    Py_ssize_t tail, prev, next;
} Bucket;

typedef struct {
    PyObject_HEAD
    /* configuration and sizes (window_capacity etc. are exposed as attributes) */
    Py_ssize_t cap;
    Py_ssize_t window_capacity, main_capacity, protected_capacity;
    double protected_fraction;
    /* hill climber sampling state (the decision itself is the Python _climb) */
    Py_ssize_t sample_hits, sample_requests, period;
    Py_ssize_t sample_recurring; /* misses of keys seen before (sketch frequency >= 2),
                                    counted when the key is offered: the shift detector
                                    tells a popularity shift from a scan by them */
    char climbing, full, ready, fast_hash;
    char mode; /* MODE_WTINYLFU; MODE_TINYLFU, MODE_LRU: no window, no protected segment
                  (probation is one LRU list), admission by TinyLFU or always */
    char busy; /* a mutating operation is running (it may call the hasher, the rng, a key's
                  __eq__/__hash__, or trigger a finalizer): re-entry is refused */
    Py_ssize_t jitter_threshold;
    /* segments: sentinels are nodes 1..3 (SEG_* ids); next[s] = LRU, prev[s] = MRU */
    Py_ssize_t len[N_SEGS];
    Py_ssize_t n_nodes, free_head;
    Node *nodes; /* one struct per node: a touch costs one cache line, not four */
    PyObject *index; /* dict: key -> int node */
    /* a direct-mapped cache of key object -> node, by the object's address: a hit (the
       node's key is that very object) skips the dict probe and the int it returns,
       ~3 cache misses of a drained access. A stale or colliding entry fails the identity
       check and the dict answers (and refills the entry). */
    Py_ssize_t *hint;
    Bucket *buckets; /* MODE_LFU: cap + 2 buckets, 0 the sentinel of the bucket list */
    Py_ssize_t bucket_free;
    /* MODE_S3FIFO, MODE_ARC: ghost lists of evicted keys (a node pool whose nodes 0 and
       1 are the sentinels of lists 0 and 1, and a dict from key to ghost node); S3-FIFO's
       queue sizes; ARC's target p for T1 */
    Py_ssize_t small_cap, s3_main_cap, ghost_cap, ghost_n, ghost_free;
    Py_ssize_t ghost_len[GHOSTS];
    int move_threshold;
    Node *ghost;
    PyObject *ghost_index;
    double p;
    /* MODE_WTINYLFU's reuse gate (reuse_cap > 0): the access clock; the ghost, a ring of
       the key hashes and last accesses of the last reuse_cap departures, and an open
       addressing table (linear probing, -1 empty) from hash to ring slot for those not
       back since */
    Py_ssize_t reuse_cap, reuse_pause; /* reuse_pause: accesses left with the gate open */
    uint32_t clock;
    uint64_t *rg_hash;
    uint32_t *rg_last;
    Py_ssize_t rg_head, rg_count;
    Py_ssize_t *rg_tab;
    uint64_t rg_mask;
    uint64_t adm_hash[2]; /* the last TinyLFU competition's candidate and victim hashes */
    int hint_shift;
    /* the frequency sketch (a Python FrequencySketch) and how to hash keys for it */
    PyObject *sketch, *counts, *hasher, *rng;
    uint8_t *table;
    uint64_t width, k0, mult[4];
    int shift;
    Mini *mini; /* sizing: mini's shadows (NULL: off) */
} Core;

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

static inline Py_ssize_t resident(Core *c) {
    return c->len[1] + c->len[2] + c->len[3] + c->len[SEG_SMALL] + c->len[SEG_MAIN];
}

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

static PyObject *reentered(void) {
    PyErr_SetString(PyExc_RuntimeError,
                    "tiercache policy re-entered from a callback (the hasher, the rng, a key's "
                    "__eq__ or __hash__, or a finalizer) in the middle of an operation");
    return NULL;
}

typedef struct {
    int admitted;
    PyObject *evicted; /* new reference or NULL */
    uint32_t evicted_last; /* MODE_WTINYLFU: the evicted key's last access */
    uint64_t departed;     /* and the hash of the key that left (evicted or rejected) */
    int has_departed;      /* a competition named it (departed is set) */
} Placed;

static inline void mark_full(Core *c) {
    if (!c->full && resident(c) >= c->cap) c->full = 1;
}

static inline int not_ready(Core *c) {
    if (!c->ready) {
        PyErr_SetString(PyExc_RuntimeError, "WTinyLFUCore used before _core_setup()");
        return 1;
    }
    return 0;
}

/* defined in policy.c, used by policy_type.c */
int tc_policy_touch(Core *c, Py_ssize_t n, SketchSync *s, PyObject *key); /* on_hit of node n
                                                                         (-1: miss) */
void tc_mini_free(Core *c);
int tc_policy_place(Core *c, PyObject *key, Placed *out);  /* offer a non-resident key */
int tc_count_offer(Core *c, PyObject *key);  /* the shift detector's count of a miss */
PyObject *tc_drop_resident(Core *c, Py_ssize_t n);
void tc_free_ghost(Core *c);
int tc_alloc_ghost(Core *c, Py_ssize_t n);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif /* TIERCACHE_POLICY_H */
