/*
 * tiercache._core: the common case of a single set's warm write transaction.
 *
 * set_one_txn(txn, records, index, meta, key, rec, log_entry, capacity, stage_key,
 *             stage_limit, log_entries) -> seq, or 0 "not handled"
 *
 * What LmdbTier.put_bounded's ``run`` does inside the write transaction ``txn`` for one
 * put of a packed-length record with a log entry and no ``since`` (tiers/lmdb.py), through
 * py-lmdb's own Transaction methods called with the same positional arguments, for the
 * case where, inside this transaction:
 *
 *   - the key is not in ``index`` (not packed: a packed key is overwritten in its slot),
 *   - the store stays within ``capacity`` after the put (no victims to choose), counted
 *     from the two ``stat`` entry counts as ``run`` counts them (a key stored already
 *     does not count as new),
 *   - the staging queue ``stage_key`` stays below ``stage_limit`` bytes (K digests: the
 *     write that queues the K-th packs the queue).
 *
 * Every read and check comes first; when the case does not apply, 0 is returned and
 * nothing was written, so the Python ``run`` carries on in the same transaction as
 * before. When it applies, it writes what lmdb_log._log_append and lmdb_packed.stage_one
 * write, in their order: ``iv#`` (the last sequence number, u64 BE) and ``iv:`` + seq ->
 * ``log_entry`` in ``meta``, the deletion of entry seq - ``log_entries`` when seq is above
 * it, the plain record in ``records``, the queue with ``key`` appended; and returns seq
 * (>= 1). Errors of py-lmdb (MapFullError, MapResizedError, ...) propagate: the caller
 * (_write_locked) aborts the transaction as it does for the Python path.
 */
#include "core.h"

static PyObject *S_put, *S_delete, *S_stat, *S_entries, *B_IV_SEQ, *B_EMPTY;

int tc_wtxn_init(void) {
    S_put = PyUnicode_InternFromString("put");
    S_delete = PyUnicode_InternFromString("delete");
    S_stat = PyUnicode_InternFromString("stat");
    S_entries = PyUnicode_InternFromString("entries");
    B_IV_SEQ = PyBytes_FromStringAndSize("iv#", 3);
    B_EMPTY = PyBytes_FromStringAndSize("", 0);
    return S_put && S_delete && S_stat && S_entries && B_IV_SEQ && B_EMPTY ? 0 : -1;
}

/* txn.get(key, None, db): a new reference, Py_None if absent, NULL on error */
static PyObject *wt_get(PyObject *txn, PyObject *key, PyObject *db) {
    PyObject *args[4] = {txn, key, Py_None, db};
    return PyObject_VectorcallMethod(tc_S_get, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* txn.put(key, value, True, True, False, db): 0, or -1 on error */
static int wt_put(PyObject *txn, PyObject *key, PyObject *value, PyObject *db) {
    PyObject *args[7] = {txn, key, value, Py_True, Py_True, Py_False, db};
    PyObject *r =
        PyObject_VectorcallMethod(S_put, args, 7 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* txn.stat(db)["entries"] into *out: 0, or -1 on error */
static int wt_entries(PyObject *txn, PyObject *db, long long *out) {
    PyObject *args[2] = {txn, db};
    PyObject *st =
        PyObject_VectorcallMethod(S_stat, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (!st) return -1;
    PyObject *n = PyObject_GetItem(st, S_entries);
    Py_DECREF(st);
    if (!n) return -1;
    *out = PyLong_AsLongLong(n);
    Py_DECREF(n);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* a buffer's length into *len (-1 with an error set if it has no buffer) */
static int wt_len(PyObject *o, Py_ssize_t *len) {
    Py_buffer v;
    if (PyObject_GetBuffer(o, &v, PyBUF_SIMPLE) < 0) return -1;
    *len = v.len;
    PyBuffer_Release(&v);
    return 0;
}

/* "iv:" + n as 8 bytes big-endian: a new bytes object, NULL on error */
static PyObject *wt_log_key(uint64_t n) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, 11);
    if (!b) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(b);
    memcpy(p, "iv:", 3);
    for (int i = 0; i < 8; i++) p[3 + i] = (uint8_t)(n >> (56 - 8 * i));
    return b;
}

/* an int argument into *out: 1, 0 when it does not fit a long long (not handled), -1 error */
static int wt_int(PyObject *o, long long *out) {
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return !overflow;
}

PyObject *tc_mod_set_one_txn(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError,
                        "set_one_txn(txn, records, index, meta, key, rec, log_entry, capacity, "
                        "stage_key, stage_limit, log_entries)");
        return NULL;
    }
    PyObject *txn = args[0], *records = args[1], *index = args[2], *meta = args[3],
             *key = args[4], *rec = args[5], *entry = args[6], *stage_key = args[8];
    long long capacity, stage_limit, log_entries;
    int ok;
    if ((ok = wt_int(args[7], &capacity)) <= 0 || (ok = wt_int(args[9], &stage_limit)) <= 0 ||
        (ok = wt_int(args[10], &log_entries)) <= 0)
        return ok < 0 ? NULL : PyLong_FromLong(0);
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 16 || log_entries < 1 || capacity < 0)
        return PyLong_FromLong(0); /* left to the Python path (which checks and raises) */

    PyObject *raw = NULL, *queued = NULL, *seq8 = NULL, *log_key = NULL, *old_key = NULL;
    PyObject *result = NULL;
    Py_buffer v;

    /* ---- reads and checks: nothing is written before the case is known to apply ---- */
    /* the log's last sequence number (_log_last: int.from_bytes(raw, "big") if raw else 0) */
    uint64_t last = 0;
    if (!(raw = wt_get(txn, B_IV_SEQ, meta))) goto done;
    if (raw != Py_None) {
        if (PyObject_GetBuffer(raw, &v, PyBUF_SIMPLE) < 0) goto done;
        int fits = v.len <= 8;
        for (Py_ssize_t i = 0; fits && i < v.len; i++)
            last = (last << 8) | ((const uint8_t *)v.buf)[i];
        PyBuffer_Release(&v);
        if (!fits || last == UINT64_MAX) goto unhandled; /* Python's arithmetic decides */
    }
    Py_CLEAR(raw);
    uint64_t seq = last + 1;

    long long n_plain, n_packed;
    if (wt_entries(txn, records, &n_plain) < 0 || wt_entries(txn, index, &n_packed) < 0)
        goto done;
    if (n_packed > 0) { /* packed already: overwritten in its slot by the packer */
        if (!(raw = wt_get(txn, key, index))) goto done;
        if (raw != Py_None) goto unhandled;
        Py_CLEAR(raw);
    }
    if (n_plain + n_packed + 1 - capacity > 0) { /* over capacity unless key is stored */
        if (!(raw = wt_get(txn, key, records))) goto done;
        if (raw == Py_None || n_plain + n_packed - capacity > 0) goto unhandled;
        Py_CLEAR(raw);
    }
    /* the staging queue with key appended (stage_one) must stay below K digests */
    Py_ssize_t qlen = 0;
    if (!(raw = wt_get(txn, stage_key, meta))) goto done;
    if (raw != Py_None && wt_len(raw, &qlen) < 0) goto done;
    if ((long long)qlen + 16 >= stage_limit) goto unhandled;
    if (!(queued = PyBytes_FromStringAndSize(NULL, qlen + 16))) goto done;
    if (qlen) {
        if (PyObject_GetBuffer(raw, &v, PyBUF_SIMPLE) < 0) goto done;
        memcpy(PyBytes_AS_STRING(queued), v.buf, (size_t)qlen);
        PyBuffer_Release(&v);
    }
    memcpy(PyBytes_AS_STRING(queued) + qlen, PyBytes_AS_STRING(key), 16);
    Py_CLEAR(raw);

    /* everything written is built before the first write */
    if (!(seq8 = PyBytes_FromStringAndSize(NULL, 8))) goto done;
    for (int i = 0; i < 8; i++)
        ((uint8_t *)PyBytes_AS_STRING(seq8))[i] = (uint8_t)(seq >> (56 - 8 * i));
    if (!(log_key = wt_log_key(seq))) goto done;
    if (seq > (uint64_t)log_entries && !(old_key = wt_log_key(seq - (uint64_t)log_entries)))
        goto done;

    /* ---- writes, in the Python path's order ---- */
    if (wt_put(txn, B_IV_SEQ, seq8, meta) < 0 || wt_put(txn, log_key, entry, meta) < 0)
        goto done;
    if (old_key) { /* txn.delete(key, db=meta): the value b"" deletes whatever is stored */
        PyObject *dargs[4] = {txn, old_key, B_EMPTY, meta};
        PyObject *d = PyObject_VectorcallMethod(S_delete, dargs,
                                                4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (!d) goto done;
        Py_DECREF(d);
    }
    if (wt_put(txn, key, rec, records) < 0 || wt_put(txn, stage_key, queued, meta) < 0)
        goto done;
    result = PyLong_FromUnsignedLongLong(seq);
    goto done;

unhandled:
    result = PyLong_FromLong(0);
done:
    Py_XDECREF(raw);
    Py_XDECREF(queued);
    Py_XDECREF(seq8);
    Py_XDECREF(log_key);
    Py_XDECREF(old_key);
    return result;
}
