/*
 * tiercache._core's hashing for the warm reader: BLAKE2b, the cache key's digest, and the
 * lookup of XXH3_64bits, xxhash's own C function, for the records' checksums.
 */
#include "core.h"
#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

/* ---- BLAKE2b (RFC 7693): the cache key's digest, in C for the warm reader --------------
 *
 * tiercache.keys.KeyMaker.digest is blake2b(digest_size=16, person=b"tiercache.key.1")
 * over a fingerprint prefix, then a type tag, the content's length (u64 LE) and its bytes.
 * The reader absorbs the prefix once and copies that state per key, as KeyMaker copies a
 * primed hashlib object. Tests compare every digest with hashlib's.
 */

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
void tc_b2_init(B2 *s, size_t outlen, const uint8_t *person, size_t person_len) {
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

void tc_b2_update(B2 *s, const uint8_t *in, size_t n) {
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
int tc_content_digest(const B2 *base, PyObject *content, uint8_t out[16]) {
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
    tc_b2_update(&s, head, 9);
    tc_b2_update(&s, (const uint8_t *)data, (size_t)len);
    b2_final(&s, out);
    Py_XDECREF(tmp);
    return 1;
}

/* ---- XXH3 --------------------------------------------------------------------------- */

/* XXH3_64bits, the C function behind the Python ``xxh3`` callable (xxhash's
 * xxh3_64_intdigest), looked up in the extension module that defines the callable, so a
 * record's checksum costs no Python call. Used only when that module exports it and it
 * agrees with the callable on inputs of every length class XXH3 treats apart (0-3, 4-8,
 * 9-16, 17-128, 129-240, longer, up to several 1 KB stripes blocks); else NULL and the
 * callable is called. Never raises. */
/* the C symbol ``name`` of the extension module that defines the Python callable pyfn
 * (already loaded, so dlopen only finds it), or NULL; never raises */
static void *module_symbol(PyObject *pyfn, const char *name) {
    void *sym = NULL;
#if defined(__unix__) || defined(__APPLE__)
    PyObject *mname = PyObject_GetAttrString(pyfn, "__module__");
    PyObject *mod = mname && PyUnicode_Check(mname) ? PyImport_GetModule(mname) : NULL;
    PyObject *file = mod ? PyObject_GetAttrString(mod, "__file__") : NULL;
    const char *path = file && PyUnicode_Check(file) ? PyUnicode_AsUTF8(file) : NULL;
    if (path) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* already loaded, or nothing */
        if (lib) {
            sym = dlsym(lib, name);
            dlclose(lib); /* the module keeps it loaded */
        }
    }
    Py_XDECREF(file);
    Py_XDECREF(mod);
    Py_XDECREF(mname);
    PyErr_Clear();
#else
    (void)pyfn;
    (void)name;
#endif
    return sym;
}

xxh3_fn tc_resolve_xxh3(PyObject *pyfn) {
    xxh3_fn fn = NULL;
#if defined(__unix__) || defined(__APPLE__)
    *(void **)(&fn) = module_symbol(pyfn, "XXH3_64bits");
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

/* ---- Digester: KeyMaker.digest in C ------------------------------------------------------
 *
 * Digester(person, prefix): the state of blake2b(digest_size=16, person=person) after
 * absorbing prefix (KeyMaker's primed hasher). digest(content) is the 16-byte key of a str
 * or bytes content (tc_content_digest), or None where this does not apply (another type,
 * a str with lone surrogates): the caller's Python path decides. digests(list) is the
 * same for each item, in order, in one call.
 */
typedef struct {
    PyObject_HEAD B2 base;
    int ready;
} Digester;

static int Digester_init(Digester *d, PyObject *args, PyObject *kwds) {
    Py_buffer person, prefix;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Digester takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "y*y*", &person, &prefix)) return -1;
    if (person.len > 16) {
        PyBuffer_Release(&person);
        PyBuffer_Release(&prefix);
        PyErr_SetString(PyExc_ValueError, "a blake2b personalisation is at most 16 bytes");
        return -1;
    }
    tc_b2_init(&d->base, 16, (const uint8_t *)person.buf, (size_t)person.len);
    tc_b2_update(&d->base, (const uint8_t *)prefix.buf, (size_t)prefix.len);
    PyBuffer_Release(&person);
    PyBuffer_Release(&prefix);
    d->ready = 1;
    return 0;
}

/* the key of content as a new bytes object, Py_None (a new reference) where not here,
 * NULL on error */
static PyObject *digester_one(Digester *d, PyObject *content) {
    uint8_t out[16];
    int rc = tc_content_digest(&d->base, content, out);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

static PyObject *Digester_digest(Digester *d, PyObject *content) {
    if (!d->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Digester is not initialised");
        return NULL;
    }
    return digester_one(d, content);
}

static PyObject *Digester_digests(Digester *d, PyObject *contents) {
    if (!d->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Digester is not initialised");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(contents, "digests() takes a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (!out) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = digester_one(d, items[i]);
        if (!key) {
            Py_DECREF(out);
            Py_DECREF(seq);
            return NULL;
        }
        PyList_SET_ITEM(out, i, key);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef Digester_methods[] = {
    {"digest", (PyCFunction)Digester_digest, METH_O,
     "digest(content) -> the 16-byte key of a str or bytes content, or None (not here)."},
    {"digests", (PyCFunction)Digester_digests, METH_O,
     "digests(contents) -> [digest(c) for c in contents], in one call."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject tc_DigesterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tiercache._core.Digester",
    .tp_basicsize = sizeof(Digester),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Digester(person, prefix): KeyMaker.digest in C (see hash.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Digester_init,
    .tp_methods = Digester_methods,
};

/* ---- SealOpener: RecordSeal.open (unkeyed) of a batch in C ------------------------------
 *
 * A shared-tier value is record || tag, tag = XXH3-128 (seeded, canonical big-endian bytes)
 * of len(rkey) (u32 LE) || rkey || record (tiers/redis.py, RecordSeal). SealOpener(xxh3_128,
 * seed) looks up xxhash's own XXH3_128bits_withSeed in the module that defines the Python
 * callable xxh3_128 (as tc_resolve_xxh3 does for XXH3_64bits) and checks it against the
 * callable; open_many(rkeys, values) -> [record or None] (None: absent, or a tag that does
 * not verify), or None when the C function could not be resolved (the caller opens them in
 * Python). */
typedef struct {
    uint64_t low64, high64;
} tc_xxh128;
typedef tc_xxh128 (*xxh3_128_fn)(const void *, size_t, uint64_t);

typedef struct {
    PyObject_HEAD xxh3_128_fn fn;
    uint64_t seed;
} SealOpener;

static void canonical128(tc_xxh128 h, uint8_t out[16]) {
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h.high64 >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(h.low64 >> (56 - 8 * i));
    }
}

static int SealOpener_init(SealOpener *s, PyObject *args, PyObject *kwds) {
    PyObject *pyfn;
    unsigned long long seed;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "SealOpener takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OK", &pyfn, &seed)) return -1;
    s->seed = (uint64_t)seed;
    s->fn = NULL;
#if defined(__unix__) || defined(__APPLE__)
    xxh3_128_fn fn = NULL;
    *(void **)(&fn) = module_symbol(pyfn, "XXH3_128bits_withSeed");
    static const Py_ssize_t lens[] = {0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023, 1024,
                                      1600, 3100};
    static uint8_t buf[3100];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 151u + (i >> 5));
    for (size_t k = 0; fn && k < sizeof lens / sizeof lens[0]; k++) {
        PyObject *mv = PyMemoryView_FromMemory((char *)buf, lens[k], PyBUF_READ);
        PyObject *sd = PyLong_FromUnsignedLongLong(seed);
        PyObject *d = mv && sd ? PyObject_CallFunctionObjArgs(pyfn, mv, sd, NULL) : NULL;
        uint8_t mine[16];
        canonical128(fn(buf, (size_t)lens[k], (uint64_t)seed), mine);
        if (!d || !PyBytes_Check(d) || PyBytes_GET_SIZE(d) != 16 ||
            memcmp(PyBytes_AS_STRING(d), mine, 16) != 0)
            fn = NULL;
        Py_XDECREF(mv);
        Py_XDECREF(sd);
        Py_XDECREF(d);
        PyErr_Clear();
    }
    s->fn = fn;
#endif
    return 0;
}

static PyObject *SealOpener_open_many(SealOpener *s, PyObject *args) {
    PyObject *rkeys, *values;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &rkeys, &PyList_Type, &values)) return NULL;
    if (!s->fn) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (PyList_GET_SIZE(rkeys) != n) {
        PyErr_SetString(PyExc_ValueError, "rkeys and values differ in length");
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    uint8_t *scratch = NULL;
    size_t cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i), *rk = PyList_GET_ITEM(rkeys, i);
        PyObject *rec = Py_None;
        if (v != Py_None) {
            if (!PyBytes_Check(v) || !PyBytes_Check(rk)) {
                PyErr_SetString(PyExc_TypeError, "rkeys and values are bytes (or None)");
                goto fail;
            }
            Py_ssize_t vn = PyBytes_GET_SIZE(v) - 16, kn = PyBytes_GET_SIZE(rk);
            if (vn >= 0) {
                size_t need = 4 + (size_t)kn + (size_t)vn;
                if (need > cap) {
                    uint8_t *grown = PyMem_Realloc(scratch, need);
                    if (!grown) {
                        PyErr_NoMemory();
                        goto fail;
                    }
                    scratch = grown;
                    cap = need;
                }
                uint32_t kl = (uint32_t)kn;
                for (int b = 0; b < 4; b++) scratch[b] = (uint8_t)(kl >> (8 * b));
                memcpy(scratch + 4, PyBytes_AS_STRING(rk), (size_t)kn);
                memcpy(scratch + 4 + kn, PyBytes_AS_STRING(v), (size_t)vn);
                uint8_t tag[16];
                canonical128(s->fn(scratch, need, s->seed), tag);
                if (memcmp(tag, PyBytes_AS_STRING(v) + vn, 16) == 0) {
                    rec = PyBytes_FromStringAndSize(PyBytes_AS_STRING(v), vn);
                    if (!rec) goto fail;
                    PyList_SET_ITEM(out, i, rec);
                    continue;
                }
            }
        }
        Py_INCREF(Py_None);
        PyList_SET_ITEM(out, i, Py_None);
    }
    PyMem_Free(scratch);
    return out;
fail:
    PyMem_Free(scratch);
    Py_DECREF(out);
    return NULL;
}

static PyObject *SealOpener_get_native(SealOpener *s, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(s->fn != NULL);
}

static PyMethodDef SealOpener_methods[] = {
    {"open_many", (PyCFunction)SealOpener_open_many, METH_VARARGS,
     "open_many(rkeys, values) -> [record or None], or None without the C function."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SealOpener_getset[] = {
    {"native", (getter)SealOpener_get_native, NULL,
     "True when xxhash's own XXH3_128bits_withSeed was found and agrees with Python.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject tc_SealOpenerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tiercache._core.SealOpener",
    .tp_basicsize = sizeof(SealOpener),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SealOpener(xxh3_128, seed): RecordSeal.open (unkeyed) of a batch in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SealOpener_init,
    .tp_methods = SealOpener_methods,
    .tp_getset = SealOpener_getset,
};
