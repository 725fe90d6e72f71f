/*
 * tiercache._core: the hot tier's read path.
 *
 * HotReader(fallback, lock, by_content, slab, expires, keys, buffer, access_buffer, drain,
 *           clock, record_latency): TierCache.embed's hot hit in one C call. Under the
 * cache's lock (taken without blocking), a str/bytes content found in the hot tier's
 * content map, unexpired, is copied out of the slab into a new float32 array, its digest
 * is appended to the engine's access buffer (draining it when full, as record_hot_hit
 * does) and counted; anything else (another type, a miss, an expired entry, the lock
 * busy) is handed to ``fallback(content)``, the Python implementation, unchanged. One
 * lookup in 16 is timed and passed to ``record_latency(seconds)``.
 *
 * tc_hot_serve: the same hit for TierCache.get (entry.c's EntryGetter).
 */
#include "core.h"

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

static PyObject *reader_fallback(Reader *r, PyObject *content) {
    if (!r->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(r->fallback, content);
}

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

/* 1: hit, *out (and *slot_out) set; 0: not served here; -1: error. Called with the lock
 * held. */
static int reader_hit(Reader *r, PyObject *content, PyObject **out, Py_ssize_t *slot_out) {
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
    *slot_out = slot;
    return 1;
}

/* the cache's lock without blocking: 1 taken, 0 busy, -1 error */
static int reader_trylock(Reader *r) {
    PyObject *got = PyObject_CallOneArg(r->acquire, Py_False);
    if (!got) return -1;
    int locked = PyObject_IsTrue(got);
    Py_DECREF(got);
    return locked;
}

/* release the lock, keeping an exception already set; -1 if the release failed (its
 * exception replaces the pending one) */
static int reader_unlock(Reader *r) {
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *rel = PyObject_CallNoArgs(r->release);
    if (!rel) {
        Py_XDECREF(exc_type);
        Py_XDECREF(exc_value);
        Py_XDECREF(exc_tb);
        return -1;
    }
    Py_DECREF(rel);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    return 0;
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
    if (r->closed || tc_gate_moved(r->gate) ||
        (!PyUnicode_CheckExact(content) && !PyBytes_CheckExact(content)))
        return reader_fallback(r, content);
    int timed = (++r->tick & 15) == 0;
    double t0 = timed ? mono_s() : 0.0;
    int locked = reader_trylock(r);
    if (locked < 0) return NULL;
    if (!locked) return reader_fallback(r, content); /* busy: the Python path waits */
    PyObject *vec = NULL;
    Py_ssize_t slot;
    int rc = reader_hit(r, content, &vec, &slot);
    if (reader_unlock(r) < 0) {
        Py_XDECREF(vec);
        return NULL;
    }
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
    Py_VISIT(r->gate);
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
    Py_CLEAR(r->gate);
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
static PyObject *Reader_gather(Reader *r, PyObject *args) {
    PyObject *contents, *outobj, *served = NULL;
    if (!PyArg_ParseTuple(args, "O!O|O!", &PyList_Type, &contents, &outobj, &PyList_Type,
                          &served))
        return NULL;
    if (!r->slab_data) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is not initialised");
        return NULL;
    }
    if (r->closed) {
        PyErr_SetString(PyExc_RuntimeError, "HotReader is closed");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(contents);
    if (!tc_out_rows_ok(outobj, r->dim) || PyArray_DIM((PyArrayObject *)outobj, 0) != n) {
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
        if (served && PyList_Append(served, so) < 0) goto fail; /* its slot, in order */
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
     "gather(contents, out[, served]) -> indices not served: copy hot rows into out (lock "
     "held by the caller; only when no hot entry has an expiry); served, a list, gets the "
     "slot of each served row, in order."},
    {"set_gate", tc_reader_set_gate, METH_O,
     "set_gate(gate or None): serve only while the SeqGate has not moved."},
    {"close", tc_reader_close, METH_NOARGS,
     "From now on every call goes to the fallback (the closed cache's Python embed)."},
    {"take_hits", tc_reader_take_hits, METH_NOARGS,
     "Hits served since the last call (the counter restarts at 0)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"hits", tc_reader_get_hits, NULL, "Hits served and not yet taken.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Reader_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Reader, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject tc_ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.HotReader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TierCache.embed's hot hit in C (see tiercache/_core_src/hot.c); everything "
              "else falls back.",
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


/* get's hot hit for the EntryGetter (entry.c): 1 *vec and *key set (new references), the
 * access recorded and counted as embed's; 0 not served (a miss, an expired entry, an entry
 * with metadata, whose blob Python decodes, the lock busy, a closed reader); -1 error */
int tc_hot_serve(PyObject *reader, PyObject *metas, PyObject *content, PyObject **vec_out,
                 PyObject **key_out) {
    Reader *r = (Reader *)reader;
    if (r->closed || tc_gate_moved(r->gate) || !r->slab_data || !PyList_Check(metas)) return 0;
    if (!PyUnicode_CheckExact(content) && !PyBytes_CheckExact(content)) return 0;
    int locked = reader_trylock(r);
    if (locked <= 0) return locked; /* busy: the Python path waits */
    PyObject *vec = NULL, *key = NULL;
    int rc = 0;
    Py_ssize_t slot = reader_slot(r, content);
    if (slot == -2) {
        rc = -1;
    } else if (slot >= 0 && slot < PyList_GET_SIZE(metas) &&
               PyList_GET_ITEM(metas, slot) == Py_None) { /* no metadata to decode */
        rc = reader_hit(r, content, &vec, &slot);
        if (rc > 0) {
            key = PyList_GET_ITEM(r->keys, slot);
            Py_INCREF(key);
        }
    }
    if (reader_unlock(r) < 0) {
        Py_XDECREF(vec);
        Py_XDECREF(key);
        return -1;
    }
    if (rc > 0) {
        *vec_out = vec;
        *key_out = key;
    }
    return rc;
}
