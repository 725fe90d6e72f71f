/*
 * tiercache._core: the compiled core of the default policy (W-TinyLFU), the loops that
 * drive it, and the hot and warm read paths. One extension module, built from:
 *
 *   - policy.c:  the policy engine (segments, the frequency sketch's updates, per-access
 *                operations of every mode) and the module functions that drive it:
 *                drain, replay, bind; policy_type.c: WTinyLFUCore, the Python type over
 *                it; policy.h: what the two share.
 *   - reader.c:  what both compiled readers share (READER_HEAD: close, take_hits, hits;
 *                the check of a caller's output array).
 *   - hot.c:     HotReader, the hot tier's read path.
 *   - warm.c:    WarmReader, the warm (LMDB) tier's read path.
 *   - hash.c:    BLAKE2b (the cache key's digest) and the lookup of xxhash's own XXH3.
 *   - float16.c: the float16 -> float32 conversion (portable, and F16C), f16_to_f32.
 *   - rows.c:    row_check, an explicit write's finite-and-nonzero check of one row.
 *   - wtxn.c:    set_one_txn, the common case of a single set's warm write transaction
 *                (LmdbTier.put_bounded) through py-lmdb's own Transaction methods.
 *   - module.c:  the module itself (PyInit__core, its method table, F16C).
 *
 * This header holds what more than one of them needs: the includes, the inline helpers
 * of the hot paths (static inline, so they stay inlined where they were), the shared
 * structs, and the declarations of the functions, objects and types defined in one file
 * and used in another (prefix tc_, hidden: the module still exports only PyInit__core).
 */
#ifndef TIERCACHE_CORE_H
#define TIERCACHE_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>

/* numpy's C API table: one for the whole module (its files share it), filled by
 * import_array() in module.c (which defines TC_IMPORT_ARRAY); hidden, as numpy >= 2 makes
 * it by default, so older numpy does not export it either */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL tc_ARRAY_API
#ifndef TC_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#if defined(__GNUC__)
extern __attribute__((visibility("hidden"))) void **tc_ARRAY_API;
#endif
#include <numpy/arrayobject.h>

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* ---- little helpers ----------------------------------------------------------------- */

static inline uint64_t load64le(const uint8_t *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
           ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
           ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = (v << 8) | p[k];
    return v;
}

static inline double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- policy.c, policy_type.c -------------------------------------------------------- */

extern PyTypeObject tc_CoreType;
extern PyObject *tc_SEG_NAMES[4]; /* "window", "probation", "protected" (module init) */
PyObject *tc_mod_drain(PyObject *m, PyObject *args);
PyObject *tc_mod_replay(PyObject *m, PyObject *args);
PyObject *tc_mod_bind(PyObject *m, PyObject *args);

/* ---- reader.c: what both compiled readers share ------------------------------------- */

/* the fields both compiled readers (HotReader, WarmReader) start with, so that their
 * close(), take_hits() and hits are one implementation */
#define READER_HEAD                                                                          \
    PyObject_HEAD                                                                            \
    unsigned long long hits; /* served and not yet taken by the cache's counters */          \
    char closed;             /* TierCache.close(): every call goes to the fallback */        \
    PyObject *gate;          /* a SeqGate (gate.c) or NULL: moved -> every call falls back */

typedef struct {
    READER_HEAD
} ReaderHead;

PyObject *tc_reader_close(PyObject *self, PyObject *ignored);
/* set_gate(gate or None): the SeqGate both readers consult before serving */
PyObject *tc_reader_set_gate(PyObject *self, PyObject *gate);

/* ---- gate.c: the invalidation sequence word ------------------------------------------ */

/* SeqGate(buffer): a 64-bit word in a (shared, memory-mapped) buffer, the invalidation
 * sequence number of a warm store, and ``seen``, the number this process has applied.
 * A reader serves nothing while they differ: the Python path catches up first. */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    uint64_t *word;
    uint64_t seen;
} SeqGate;

extern PyTypeObject tc_GateType;

/* 1 when the readers must not serve (the word moved past what was applied, or ``seen``
 * was forced); one acquire load, inlined into both readers' hit paths */
static inline int tc_gate_moved(PyObject *gate) {
    if (!gate) return 0;
    SeqGate *g = (SeqGate *)gate;
    return __atomic_load_n(g->word, __ATOMIC_ACQUIRE) != g->seen;
}
PyObject *tc_reader_take_hits(PyObject *self, PyObject *ignored);
PyObject *tc_reader_get_hits(PyObject *self, void *closure);
/* out is a writable C-contiguous float32 array of dim columns (gather's and rows') */
int tc_out_rows_ok(PyObject *out, npy_intp dim);

/* ---- hot.c -------------------------------------------------------------------------- */

extern PyTypeObject tc_ReaderType;

/* ---- warm.c ------------------------------------------------------------------------- */

extern PyTypeObject tc_WReaderType;

/* entry.c: TierCache.get's hit, served by hot.c's or warm.c's reader */
extern PyTypeObject tc_GetterType;
int tc_hot_serve(PyObject *reader, PyObject *metas, PyObject *content, PyObject **vec_out,
                 PyObject **key_out);
int tc_warm_serve(PyObject *reader, PyObject *content, PyObject **vec_out, PyObject **key_out);
extern PyObject *tc_S_handle, *tc_S_resizing, *tc_S_get, *tc_S_abort, *tc_S_fork_generation;

/* ---- hash.c: BLAKE2b and XXH3 ------------------------------------------------------- */

typedef struct {
    uint64_t h[8], t[2];
    uint8_t b[128];
    size_t c;
    size_t outlen;
} B2;

void tc_b2_init(B2 *s, size_t outlen, const uint8_t *person, size_t person_len);
void tc_b2_update(B2 *s, const uint8_t *in, size_t n);
int tc_content_digest(const B2 *base, PyObject *content, uint8_t out[16]);
extern PyTypeObject tc_DigesterType; /* KeyMaker.digest in C */
extern PyTypeObject tc_SealOpenerType; /* RecordSeal.open (unkeyed) of a batch */

typedef uint64_t (*xxh3_fn)(const void *, size_t);
xxh3_fn tc_resolve_xxh3(PyObject *pyfn);

/* ---- float16.c ---------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TC_HAVE_F16C 1
__attribute__((target("avx,f16c"))) void tc_halfs_to_floats_f16c(const uint8_t *src,
                                                                  float *dst, npy_intp n);
#endif
void tc_halfs_to_floats_portable(const uint8_t *src, float *dst, npy_intp n);
extern int tc_use_f16c; /* set by the module's init: the CPU and OS support F16C */
PyObject *tc_mod_f16_to_f32(PyObject *m, PyObject *args);
PyObject *tc_mod_row_check(PyObject *m, PyObject *arg);

/* ---- wtxn.c ------------------------------------------------------------------------- */

int tc_wtxn_init(void); /* its interned names and constants (module init) */
PyObject *tc_mod_set_one_txn(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

/* n little-endian float16 values to float32: F16C where the module's init found it, else
 * the portable loop (both exact, numpy's conversion) */
static inline void halfs_to_floats(const uint8_t *src, float *dst, npy_intp n) {
#ifdef TC_HAVE_F16C
    if (tc_use_f16c) {
        tc_halfs_to_floats_f16c(src, dst, n);
        return;
    }
#endif
    tc_halfs_to_floats_portable(src, dst, n);
}

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif /* TIERCACHE_CORE_H */
