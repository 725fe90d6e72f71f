/*
 * The lean shadow W-TinyLFU cache of sizing: mini (see shadow.h). Mirrors
 * WTinyLFUPolicy's decisions (capacity >= 3, fixed window, no climber, no shift detector)
 * over 64-bit key hashes: an access counts in the shadow's sketch, ticks the reuse gate's
 * clock, then is a hit (segment moves) or an offer (window, TinyLFU competition with
 * jitter, reuse gate, ghost). No Python objects: it cannot fail after tc_shadow_init.
 */
#include <Python.h>
#include <string.h>

#include "shadow.h"

#define S_WIN 1
#define S_PROB 2
#define S_PROT 3
#define S_FIRST 4
#define S_NO_GAP 0xFFFFFFFFu
#define S_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ---- lists ---- */
static inline void s_unlink(Shadow *s, int32_t n) {
    SNode *x = &s->nodes[n];
    s->nodes[x->prev].next = x->next;
    s->nodes[x->next].prev = x->prev;
    s->len[x->seg]--;
}

static inline void s_push(Shadow *s, int seg, int32_t n) {
    int32_t last = s->nodes[seg].prev;
    s->nodes[last].next = n;
    s->nodes[n].prev = last;
    s->nodes[n].next = seg;
    s->nodes[seg].prev = n;
    s->nodes[n].seg = (uint8_t)seg;
    s->len[seg]++;
}

static inline int32_t s_lru(Shadow *s, int seg) { return s->nodes[seg].next; }

/* ---- the resident table (z -> node) ----
   Keys are held as z = mix64(h ^ k0), a bijection of the key hash h computed once per
   access for every shadow (tc_shadow_z): it indexes the sketch, homes the tables and
   identifies the key, so no table operation hashes again. */
static inline int32_t s_find(Shadow *s, uint64_t z) {
    for (uint64_t i = z & s->tmask;; i = (i + 1) & s->tmask) {
        int32_t n = s->tab[i];
        if (n < 0) return -1;
        if (s->nodes[n].h == z) return n;
    }
}

static inline void s_tab_insert(Shadow *s, int32_t n, uint64_t z) {
    uint64_t i = z & s->tmask;
    while (s->tab[i] >= 0) i = (i + 1) & s->tmask;
    s->tab[i] = n;
}

static void s_tab_delete(Shadow *s, int32_t n) {
    uint64_t m = s->tmask, i = s->nodes[n].h & m;
    while (s->tab[i] != n) i = (i + 1) & m;
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & m;
        int32_t x = s->tab[j];
        if (x < 0) break;
        uint64_t k = s->nodes[x].h & m;
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        s->tab[i] = x;
        i = j;
    }
    s->tab[i] = -1;
}

static void s_remove(Shadow *s, int32_t n) {
    s_tab_delete(s, n);
    s_unlink(s, n);
    s->nodes[n].seg = 0;
    s->nodes[n].next = s->free_head;
    s->free_head = n;
}

/* ---- the sketch ---- */
static inline uint8_t s_freq(Shadow *s, uint64_t z) {
    uint8_t m = 15;
    for (int r = 0; r < 4; r++) {
        uint8_t v = s->sk[(uint64_t)r * s->width + ((z * s->mult[r]) >> s->shift)];
        if (v < m) m = v;
    }
    return m;
}

static inline void s_increment(Shadow *s, uint64_t z) {
    for (int r = 0; r < 4; r++) {
        uint8_t *p = s->sk + (uint64_t)r * s->width + ((z * s->mult[r]) >> s->shift);
        if (*p < 15) (*p)++;
    }
    if (++s->additions >= s->sample_size) {
        uint64_t n = 4 * s->width;
        for (uint64_t i = 0; i < n; i++) s->sk[i] >>= 1;
        s->additions >>= 1;
    }
}

/* ---- the reuse gate's ghost (as policy.c's rg_*) ---- */
static inline uint64_t rg_home(Shadow *s, uint64_t z) { return z & s->rg_mask; }

static inline int64_t rg_find(Shadow *s, uint64_t h) {
    for (uint64_t i = rg_home(s, h);; i = (i + 1) & s->rg_mask) {
        int32_t x = s->rg_tab[i];
        if (x < 0) return -1;
        if (s->rg_hash[x] == h) return (int64_t)i;
    }
}

static void rg_delete(Shadow *s, uint64_t i) {
    uint64_t m = s->rg_mask, j = i;
    for (;;) {
        j = (j + 1) & m;
        int32_t x = s->rg_tab[j];
        if (x < 0) break;
        uint64_t k = rg_home(s, s->rg_hash[x]);
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
        s->rg_tab[i] = x;
        i = j;
    }
    s->rg_tab[i] = -1;
}

static void rg_forget(Shadow *s, uint64_t h, uint32_t last) {
    int32_t cap = s->rcap;
    if (s->rg_count == cap) {
        int32_t old = s->rg_head;
        int64_t i = rg_find(s, s->rg_hash[old]);
        if (i >= 0 && s->rg_tab[i] == old) rg_delete(s, (uint64_t)i);
        s->rg_head = old + 1 == cap ? 0 : old + 1;
        s->rg_count--;
    }
    int32_t slot = s->rg_head + s->rg_count;
    if (slot >= cap) slot -= cap;
    int64_t i = rg_find(s, h);
    s->rg_hash[slot] = h;
    s->rg_last[slot] = last;
    s->rg_count++;
    if (i >= 0) {
        s->rg_tab[i] = slot;
        return;
    }
    uint64_t k = rg_home(s, h);
    while (s->rg_tab[k] >= 0) k = (k + 1) & s->rg_mask;
    s->rg_tab[k] = slot;
}

/* ---- the policy ---- */
static inline int s_admit(Shadow *s, uint64_t zc, uint64_t zv) {
    uint8_t fc = s_freq(s, zc), fv = s_freq(s, zv);
    if (fc > fv) return 1;
    if (fc >= s->jitter) {
        s->rng += S_GOLDEN;
        return (mix64(s->rng) >> 57) == 0;
    }
    return 0;
}

static void s_place(Shadow *s, uint64_t z) {
    uint32_t gap = S_NO_GAP;
    int64_t gi = -1;
    if (s->rcap) {
        gi = rg_find(s, z);
        if (gi >= 0) gap = s->clock - s->rg_last[s->rg_tab[gi]];
    }
    int32_t n = s->free_head;
    s->free_head = s->nodes[n].next;
    s->nodes[n].h = z;
    s->nodes[n].last = s->clock;
    s->nodes[n].gap = gap;
    s_tab_insert(s, n, z);
    s_push(s, S_WIN, n);
    int departed = 0;
    uint64_t dh = 0;
    uint32_t dlast = 0;
    if (s->len[S_WIN] > s->wcap) {
        int32_t cand = s_lru(s, S_WIN);
        if (s->len[S_PROB] + s->len[S_PROT] < s->mcap) {
            s_unlink(s, cand);
            s_push(s, S_PROB, cand);
        } else {
            int32_t v = s->len[S_PROB] ? s_lru(s, S_PROB) : s_lru(s, S_PROT);
            int ok = s_admit(s, s->nodes[cand].h, s->nodes[v].h);
            if (ok && s->rcap) ok = s->nodes[cand].gap < (uint32_t)(s->clock - s->nodes[v].last);
            departed = 1;
            if (ok) {
                dh = s->nodes[v].h;
                dlast = s->nodes[v].last;
                s_remove(s, v);
                s_unlink(s, cand);
                s_push(s, S_PROB, cand);
            } else {
                dh = s->nodes[cand].h;
                dlast = s->nodes[cand].last;
                s_remove(s, cand);
            }
        }
    }
    if (s->rcap) {
        if (gi >= 0) rg_delete(s, (uint64_t)gi);
        if (departed) rg_forget(s, dh, dlast);
    }
}

/* one access of the key whose z is tc_shadow_z(s, h); count: this shadow counts it in the
   (shared) sketch, the first one only */
void tc_shadow_access(Shadow *s, uint64_t z, int count) {
    if (count) s_increment(s, z);
    int32_t n = s_find(s, z);
    if (s->rcap) {
        uint32_t t = ++s->clock;
        if (n >= 0) {
            if (s->nodes[n].seg == S_WIN) s->nodes[n].gap = t - s->nodes[n].last;
            s->nodes[n].last = t;
        }
    }
    if (n < 0) {
        s_place(s, z);
        return;
    }
    s->hits++;
    int sg = s->nodes[n].seg;
    s_unlink(s, n);
    if (sg == S_WIN) {
        s_push(s, S_WIN, n);
    } else {
        s_push(s, S_PROT, n);
        if (sg == S_PROB && s->len[S_PROT] > s->pcap) {
            int32_t d = s_lru(s, S_PROT);
            s_unlink(s, d);
            s_push(s, S_PROB, d);
        }
    }
}

void tc_shadow_free(Shadow *s) {
    PyMem_Free(s->nodes);
    PyMem_Free(s->tab);
    if (s->own_sk) PyMem_Free(s->sk);
    PyMem_Free(s->rg_hash);
    PyMem_Free(s->rg_last);
    PyMem_Free(s->rg_tab);
    memset(s, 0, sizeof(*s));
}

int tc_shadow_init(Shadow *s, int32_t cap, int32_t wcap, int32_t pcap, int jitter,
                   int32_t rcap, uint64_t width, int shift, uint64_t k0, const uint64_t *mult,
                   long long sample_size, uint64_t rng_seed, uint8_t *shared_sk) {
    memset(s, 0, sizeof(*s));
    s->cap = cap;
    s->wcap = wcap;
    s->mcap = cap - wcap;
    s->pcap = pcap;
    s->jitter = jitter;
    s->width = width;
    s->shift = shift;
    s->k0 = k0;
    memcpy(s->mult, mult, sizeof(s->mult));
    s->sample_size = sample_size;
    s->rng = rng_seed;
    uint64_t size = 2;
    while (size < 2 * ((uint64_t)cap + 1)) size <<= 1;
    s->nodes = PyMem_Calloc((size_t)cap + 1 + S_FIRST, sizeof(SNode)); /* + 1: an offer's moment over */
    s->tab = PyMem_Malloc((size_t)size * sizeof(int32_t));
    s->own_sk = shared_sk == NULL;
    s->sk = shared_sk ? shared_sk : PyMem_Calloc((size_t)(4 * width), 1);
    if (!s->nodes || !s->tab || !s->sk) goto nomem;
    s->tmask = size - 1;
    for (uint64_t i = 0; i < size; i++) s->tab[i] = -1;
    for (int g = 1; g < S_FIRST; g++) s->nodes[g].prev = s->nodes[g].next = g;
    s->free_head = -1;
    for (int32_t i = cap + S_FIRST; i >= S_FIRST; i--) {
        s->nodes[i].next = s->free_head;
        s->free_head = i;
    }
    if (rcap > 0) {
        uint64_t gsize = 2;
        while (gsize < 2 * (uint64_t)rcap) gsize <<= 1;
        s->rg_hash = PyMem_Calloc((size_t)rcap, sizeof(uint64_t));
        s->rg_last = PyMem_Calloc((size_t)rcap, sizeof(uint32_t));
        s->rg_tab = PyMem_Malloc((size_t)gsize * sizeof(int32_t));
        if (!s->rg_hash || !s->rg_last || !s->rg_tab) goto nomem;
        for (uint64_t i = 0; i < gsize; i++) s->rg_tab[i] = -1;
        s->rg_mask = gsize - 1;
        s->rcap = rcap;
    }
    return 0;
nomem:
    tc_shadow_free(s);
    PyErr_NoMemory();
    return -1;
}

size_t tc_shadow_bytes(const Shadow *s) {
    size_t b = ((size_t)s->cap + 1 + S_FIRST) * sizeof(SNode) + (size_t)(s->tmask + 1) * 4 +
               (s->own_sk ? (size_t)(4 * s->width) : 0);
    if (s->rcap)
        b += (size_t)s->rcap * (sizeof(uint64_t) + sizeof(uint32_t)) +
             (size_t)(s->rg_mask + 1) * 4;
    return b;
}
