/*
 * tiercache._core: the warm tier's read path.
 *
 * WarmReader(fallback, lock, tier, generations, prefix, person, dim, buffer, access_buffer,
 *            drain, clock, record_latency, xxh3): TierCache.embed for a cache whose hot
 * tier is off, in one C call: the key's digest (BLAKE2b, hash.c), one read transaction on
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
#include "core.h"

typedef struct {
    READER_HEAD
    PyObject *fallback, *acquire, *release, *tier, *generations, *buffer, *drain, *clock,
        *record_latency, *xxh3;
    xxh3_fn xxh3_c; /* xxh3's own C function, when resolved (see tc_resolve_xxh3, hash.c) */
    /* the environment handle bound last (from tier._fast_bind()) */
    PyObject *h, *begin, *index, *records, *segs, *active, *wake;
    long generation;
    int packed_first;
    /* the blob of the record wreader_decode verified last (valid inside its transaction) */
    const uint8_t *blob_at;
    Py_ssize_t blob_len;
    B2 base;
    npy_intp dim;
    Py_ssize_t access_buffer;
    unsigned long long tick;
    char ready;
    vectorcallfunc vectorcall;
} WReader;

PyObject *tc_S_handle, *tc_S_resizing, *tc_S_get, *tc_S_abort, *tc_S_fork_generation;

static PyObject *wreader_fallback(WReader *r, PyObject *content) {
    if (!r->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "WarmReader is not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(r->fallback, content);
}

/* bind to tier._handle if it changed: 1 bound and current, 0 not usable now, -1 error */
static int wreader_bind(WReader *r) {
    PyObject *h = PyObject_GetAttr(r->tier, tc_S_handle);
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
    PyObject *g = PyDict_GetItemWithError(r->generations, tc_S_fork_generation);
    if (!g) return PyErr_Occurred() ? -1 : 0;
    long gen = PyLong_AsLong(g);
    if (gen == -1 && PyErr_Occurred()) return -1;
    return gen == r->generation; /* a forked child reopens through the Python path */
}

#define REC_HEADER 24
#define REC_VERSION 2        /* the checksum is XORed with the key's first 4 bytes */
#define REC_LEGACY_VERSION 1 /* the checksum alone: still read (codec.LEGACY_VERSION) */
#define REC_FLAG_BLOB 1

/* statuses of one key (rows() returns one byte per key) */
#define WR_ABSENT 0
#define WR_HIT 1
#define WR_BLOB 2    /* valid, with a blob (metadata, text): left to the Python path */
#define WR_CORRUPT 3 /* stored but not valid: never served */
#define WR_EXPIRED 4

/* verify and decode the record of key (a 16-byte digest) at p into dst, by
 * codec.decode_at's rules (a version-2 checksum is bound to the key): 1 decoded (*expires,
 * *blob set), 0 not valid (corrupt, another key, dim or version), -1 error */
static int wreader_decode(WReader *r, const uint8_t *p, Py_ssize_t n, PyObject *key,
                          float *dst, double *expires, int *blob) {
    if (n < REC_HEADER) return 0;
    uint32_t crc = le32(p), rdim = le32(p + 8);
    uint8_t version = p[4], codec_id = p[5], flags = p[6];
    if ((npy_intp)rdim != r->dim) return 0;
    if (version == REC_VERSION)
        crc ^= le32((const uint8_t *)PyBytes_AS_STRING(key)); /* codec.key_mask */
    else if (version != REC_LEGACY_VERSION)
        return 0;
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
    r->blob_at = p + body_end;
    r->blob_len = n - body_end;
    return 1;
}

/* txn.get(key, None, db): a new reference, Py_None if absent, NULL on error */
static PyObject *txn_get(PyObject *txn, PyObject *key, PyObject *db) {
    PyObject *args[4] = {txn, key, Py_None, db};
    return PyObject_VectorcallMethod(tc_S_get, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
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
        d = wreader_decode(r, (const uint8_t *)v.buf, v.len, key, dst, expires, blob);
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
    int d = wreader_decode(r, rec, (Py_ssize_t)slot->len, key, dst, expires, blob);
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
    PyObject *res = PyObject_GetAttr(t->h, tc_S_resizing);
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
        PyObject *ab = PyObject_VectorcallMethod(tc_S_abort, args,
                                                 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_XDECREF(ab);
        Py_CLEAR(t->txn);
    }
    if (t->active) {
        Py_ssize_t na = PyList_GET_SIZE(t->active);
        if (na > 0) PyList_SetSlice(t->active, na - 1, na, NULL);
        PyObject *res = PyObject_GetAttr(t->h, tc_S_resizing);
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

/* embed's read: 1 *vec (a new array), *expires and *blob set, 0 not served here, -1 error */
static int wreader_read(WReader *r, PyObject *key, PyObject **vec, double *expires,
                        int *blob) {
    /* the array first: its allocation may run the garbage collector (finalizers are
       Python code), better before the transaction than inside it */
    PyObject *a = PyArray_SimpleNew(1, &r->dim, NPY_FLOAT32);
    if (!a) return -1;
    WTxn t;
    int rc = wtxn_enter(r, &t);
    *blob = 0;
    if (rc > 0) {
        rc = wreader_lookup(r, t.txn, key, (float *)PyArray_DATA((PyArrayObject *)a), expires,
                            blob);
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

/* record(key, absent, unserved) -> (vector, expires_at, blob) | None | absent | unserved:
 * LmdbTier.get_at(key, codec.decode_at, dim, absent) in C, for a 16-byte digest: the
 * record found and verified as a read finds and verifies it, decoded into a new float32
 * array; ``blob`` the record's metadata/text bytes or None; None when the record is stored
 * but corrupt. Nothing is counted or recorded. ``unserved``: the store cannot be read here
 * now (closed, a forked child, a resize, an LMDB error): the caller reads it in Python. */
static PyObject *WReader_record(WReader *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record(key, absent, unserved)");
        return NULL;
    }
    PyObject *key = args[0], *absent = args[1], *unserved = args[2];
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != 16) {
        PyErr_SetString(PyExc_ValueError, "warm keys are 16-byte digests");
        return NULL;
    }
    if (!r->ready || r->closed) return Py_NewRef(unserved);
    PyObject *a = PyArray_SimpleNew(1, &r->dim, NPY_FLOAT32);
    if (!a) return NULL;
    WTxn t;
    double expires = 0.0;
    int blob = 0;
    PyObject *blob_bytes = NULL;
    int rc = wtxn_enter(r, &t);
    if (rc > 0) {
        rc = wreader_lookup(r, t.txn, key, (float *)PyArray_DATA((PyArrayObject *)a),
                            &expires, &blob);
        if (rc == WR_HIT && blob) { /* copied before the transaction ends */
            blob_bytes = PyBytes_FromStringAndSize((const char *)r->blob_at, r->blob_len);
            if (!blob_bytes) rc = -1;
        }
        if (rc >= 0) rc += 1; /* WR_* + 1: 0 stays "not served" for wtxn_exit */
    }
    rc = wtxn_exit(r, &t, rc);
    if (rc <= 0) {
        Py_DECREF(a);
        Py_XDECREF(blob_bytes);
        return rc < 0 ? NULL : Py_NewRef(unserved);
    }
    if (rc - 1 != WR_HIT) {
        Py_DECREF(a);
        Py_XDECREF(blob_bytes);
        return Py_NewRef(rc - 1 == WR_ABSENT ? absent : Py_None);
    }
    PyObject *e = PyFloat_FromDouble(expires);
    if (!e) {
        Py_DECREF(a);
        Py_XDECREF(blob_bytes);
        return NULL;
    }
    PyObject *out = PyTuple_New(3);
    if (!out) {
        Py_DECREF(a);
        Py_DECREF(e);
        Py_XDECREF(blob_bytes);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, a);
    PyTuple_SET_ITEM(out, 1, e);
    PyTuple_SET_ITEM(out, 2, blob_bytes ? blob_bytes : Py_NewRef(Py_None));
    return out;
}

/* A clean warm hit of content served here: 1 with *vec (a new array) and *key (its digest,
 * new references), the access recorded under the cache's lock and counted in r->hits, as
 * TierCache's warm_get_one records it; 0 not served here (a miss, a corrupt or expired
 * record, ``no_blob`` and a record with a blob, an unreadable store: the fallback's job,
 * nothing counted); -1 error. */
static int wreader_serve(WReader *r, PyObject *content, int no_blob, PyObject **vec_out,
                         PyObject **key_out) {
    uint8_t digest[16];
    int d = tc_content_digest(&r->base, content, digest);
    if (d <= 0) return d;
    PyObject *key = PyBytes_FromStringAndSize((const char *)digest, 16);
    if (!key) return -1;
    PyObject *vec = NULL;
    double expires = 0.0;
    int blob = 0;
    int rc = wreader_read(r, key, &vec, &expires, &blob);
    if (rc <= 0) {
        Py_DECREF(key);
        return rc;
    }
    if (no_blob && blob) goto unserved;
    if (expires != 0.0) { /* the caller's clock decides; expired: the Python path deletes */
        PyObject *now = PyObject_CallNoArgs(r->clock);
        if (!now) goto fail;
        PyObject *e = PyFloat_FromDouble(expires);
        int fresh = e ? PyObject_RichCompareBool(e, now, Py_GT) : -1;
        Py_XDECREF(e);
        Py_DECREF(now);
        if (fresh < 0) goto fail;
        if (!fresh) goto unserved;
    }
    if (r->closed) goto unserved; /* closed by the clock (the caller's code) */
    /* warm_get_one's locked section for a hit: record the access (and drain a full
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
    *vec_out = vec;
    *key_out = key;
    return 1;
unserved:
    Py_DECREF(vec);
    Py_DECREF(key);
    return 0;
fail:
    Py_DECREF(vec);
    Py_DECREF(key);
    return -1;
}

/* get's warm hit for the EntryGetter (entry.c), for a cache without a hot tier: a clean
 * hit of a record without a blob, as embed's (wreader_serve); 0 not served */
int tc_warm_serve(PyObject *reader, PyObject *content, PyObject **vec_out,
                  PyObject **key_out) {
    WReader *r = (WReader *)reader;
    if (!r->ready || r->closed || tc_gate_moved(r->gate)) return 0;
    return wreader_serve(r, content, 1, vec_out, key_out);
}

/* live(content, now) -> True | False | None: whether warm holds a valid record of content
 * unexpired at ``now`` (a record verified as a read verifies it; a corrupt one is not
 * live); None when the store cannot be read here now (the caller reads it in Python).
 * Nothing is counted or recorded; the vector is decoded into scratch memory. */
static PyObject *WReader_live(WReader *r, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "live(content, now)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    if (!r->ready || r->closed) Py_RETURN_NONE;
    uint8_t digest[16];
    int d = tc_content_digest(&r->base, args[0], digest);
    if (d < 0) return NULL;
    if (d == 0) Py_RETURN_NONE;
    PyObject *key = PyBytes_FromStringAndSize((const char *)digest, 16);
    if (!key) return NULL;
    float *scratch = PyMem_Malloc((size_t)r->dim * sizeof(float));
    if (!scratch) {
        Py_DECREF(key);
        return PyErr_NoMemory();
    }
    WTxn t;
    double expires = 0.0;
    int blob = 0;
    int rc = wtxn_enter(r, &t);
    if (rc > 0) {
        rc = wreader_lookup(r, t.txn, key, scratch, &expires, &blob);
        if (rc >= 0) rc += 1; /* WR_* + 1: 0 stays "not served" for wtxn_exit */
    }
    rc = wtxn_exit(r, &t, rc);
    PyMem_Free(scratch);
    Py_DECREF(key);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    return PyBool_FromLong(rc - 1 == WR_HIT && (expires == 0.0 || expires > now));
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
    if (r->closed || tc_gate_moved(r->gate)) return wreader_fallback(r, content);
    int timed = (++r->tick & 15) == 0;
    double t0 = timed ? mono_s() : 0.0;
    PyObject *vec = NULL, *key = NULL;
    int rc = wreader_serve(r, content, 0, &vec, &key);
    if (rc <= 0) return rc < 0 ? NULL : wreader_fallback(r, content);
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
        tc_b2_init(&r->base, 16, (const uint8_t *)person.buf, (size_t)person.len);
        tc_b2_update(&r->base, (const uint8_t *)prefix.buf, (size_t)prefix.len);
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
    r->xxh3_c = tc_resolve_xxh3(xxh3);
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
    Py_VISIT(r->gate);
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
    Py_CLEAR(r->gate);
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
    if (!tc_out_rows_ok(outobj, r->dim)) {
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
        int d = tc_content_digest(&r->base, c, digest);
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
                    int d = wreader_decode(r, recp[q], (Py_ssize_t)p->slot.len,
                                           PyList_GET_ITEM(keys, p->i), dst, &e, &blob);
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
    int d = tc_content_digest(&r->base, content, digest);
    if (d < 0) return NULL;
    if (d == 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)digest, 16);
}

static PyMethodDef WReader_methods[] = {
    {"live", (PyCFunction)(void (*)(void))WReader_live, METH_FASTCALL,
     "live(content, now) -> whether warm holds a valid record of content unexpired at now; "
     "None: read it in Python. Nothing counted."},
    {"record", (PyCFunction)(void (*)(void))WReader_record, METH_FASTCALL,
     "record(key, absent, unserved) -> (vector, expires_at, blob), None (corrupt), absent "
     "or unserved: LmdbTier.get_at with codec.decode_at, in C; nothing counted."},
    {"set_gate", tc_reader_set_gate, METH_O,
     "set_gate(gate or None): serve only while the SeqGate has not moved."},
    {"close", tc_reader_close, METH_NOARGS,
     "From now on every call goes to the fallback (the closed cache's Python embed)."},
    {"take_hits", tc_reader_take_hits, METH_NOARGS,
     "Warm hits served since the last call (the counter restarts at 0)."},
    {"rows", (PyCFunction)WReader_rows, METH_VARARGS,
     "rows(contents, out, rows_of, now, digest) -> (keys, status, expiries) or None: the "
     "warm part of embed_many in one read transaction (see tiercache/_core_src/warm.c)."},
    {"digest", (PyCFunction)WReader_digest, METH_O,
     "digest(content) -> the 16-byte key KeyMaker.digest gives, or None where the reader "
     "leaves it to KeyMaker (another type, a str with lone surrogates)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *WReader_get_native_xxh3(WReader *r, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(r->xxh3_c != NULL);
}

static PyGetSetDef WReader_getset[] = {
    {"hits", tc_reader_get_hits, NULL, "Hits served and not yet taken.", NULL},
    {"native_xxh3", (getter)WReader_get_native_xxh3, NULL,
     "True when records are checksummed by xxhash's own C function (no Python call).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef WReader_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(WReader, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject tc_WReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.WarmReader",
    .tp_basicsize = sizeof(WReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TierCache.embed's warm hit in C, hot tier off (see "
              "tiercache/_core_src/warm.c); everything else falls back.",
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
