/*
 * tiercache._core: TierCache.get's hit in one C call.
 *
 * EntryGetter(reader, fallback, metas, entry_type, tier): ``get(content)`` served by a
 * compiled reader's hit (a HotReader's: the same lookup, copy, access record and counter as
 * embed's, hot.c tc_hot_serve; or, for a cache without a hot tier, a WarmReader's: warm.c
 * tc_warm_serve) and returned as an ``entry_type`` (tiercache.entry.Entry, a frozen slots
 * dataclass) built here: the key's 32 hex digits, the vector, metadata None, ``tier``.
 * Entries with metadata (a msgpack blob, decoded in Python), keyword arguments (``model=``)
 * and everything the reader does not serve go to ``fallback`` (the Python get) unchanged.
 * ``metas`` is the hot tier's list of blobs (None for a WarmReader).
 */
#include "core.h"

typedef struct {
    PyObject_HEAD
    PyObject *reader, *fallback, *metas, *tier;
    PyTypeObject *entry_type;
    int warm;
    Py_ssize_t off_key, off_vector, off_metadata, off_tier;
    vectorcallfunc vectorcall;
} Getter;

/* the byte offset of slot ``name`` of a __slots__ class (its member descriptor's) */
static Py_ssize_t slot_offset(PyTypeObject *type, const char *name) {
    PyObject *d = PyDict_GetItemString(type->tp_dict, name);
    if (!d || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || m->offset <= 0 ||
        m->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return m->offset;
}

/* 32 lowercase hex digits of a 16-byte key (keys.key_to_str) */
static PyObject *hex16(PyObject *key) {
    static const char digits[] = "0123456789abcdef";
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != 16) {
        PyErr_SetString(PyExc_RuntimeError, "a stored key is not a 16-byte digest");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(key);
    PyObject *s = PyUnicode_New(32, 127);
    if (!s) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    for (int i = 0; i < 16; i++) {
        d[2 * i] = (Py_UCS1)digits[b[i] >> 4];
        d[2 * i + 1] = (Py_UCS1)digits[b[i] & 15];
    }
    return s;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* the Entry of a served hit in ``tier`` (steals vec) */
static PyObject *getter_entry(Getter *g, PyObject *key, PyObject *vec, PyObject *tier) {
    PyObject *hex = hex16(key);
    if (!hex) {
        Py_DECREF(vec);
        return NULL;
    }
    PyObject *e = g->entry_type->tp_alloc(g->entry_type, 0);
    if (!e) {
        Py_DECREF(hex);
        Py_DECREF(vec);
        return NULL;
    }
    SLOT(e, g->off_key) = hex;
    SLOT(e, g->off_vector) = vec;
    SLOT(e, g->off_metadata) = Py_NewRef(Py_None);
    SLOT(e, g->off_tier) = Py_NewRef(tier);
    /* no cycle can pass through it (a frozen instance holding two str, a float32 array and
       None): the garbage collector need not traverse it (a batch makes a thousand) */
    if (PyObject_GC_IsTracked(e)) PyObject_GC_UnTrack(e);
    return e;
}

static PyObject *Getter_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Getter *g = (Getter *)self;
    if (!g->fallback || !g->reader) {
        PyErr_SetString(PyExc_RuntimeError, "EntryGetter is not initialised");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames && PyTuple_GET_SIZE(kwnames)))
        return PyObject_Vectorcall(g->fallback, args, nargsf, kwnames);
    PyObject *content = args[0], *vec = NULL, *key = NULL;
    int rc = g->warm ? tc_warm_serve(g->reader, content, &vec, &key)
                     : tc_hot_serve(g->reader, g->metas, content, &vec, &key);
    if (rc < 0) return NULL;
    if (rc == 0) return PyObject_CallOneArg(g->fallback, content);
    PyObject *e = getter_entry(g, key, vec, g->tier);
    Py_DECREF(key);
    return e;
}

/* fill(found, out, positions, keys, blobs, tier) -> positions left: found[i] = the Entry
 * (in ``tier``) of row i of out (a view of that row: out is the caller's own array) for
 * each position whose blob is None; the positions with a blob (metadata to decode) are
 * returned for Python. */
static PyObject *Getter_fill(Getter *g, PyObject *args) {
    PyObject *found, *outobj, *positions, *keys, *blobs, *tier;
    if (!PyArg_ParseTuple(args, "O!OOO!O!U", &PyList_Type, &found, &outobj, &positions,
                          &PyList_Type, &keys, &PyList_Type, &blobs, &tier))
        return NULL;
    if (!g->entry_type) {
        PyErr_SetString(PyExc_RuntimeError, "EntryGetter is not initialised");
        return NULL;
    }
    if (!PyArray_Check(outobj) || PyArray_NDIM((PyArrayObject *)outobj) != 2) {
        PyErr_SetString(PyExc_TypeError, "out must be a 2-d array");
        return NULL;
    }
    PyArrayObject *out = (PyArrayObject *)outobj;
    npy_intp nrows = PyArray_DIM(out, 0), dim = PyArray_DIM(out, 1);
    PyObject *pos = PySequence_Fast(positions, "positions must be a sequence");
    if (!pos) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(pos);
    PyObject *left = PyList_New(0);
    if (!left) goto fail;
    if (PyList_GET_SIZE(keys) != n || PyList_GET_SIZE(blobs) != n) {
        PyErr_SetString(PyExc_ValueError, "positions, keys and blobs differ in length");
        goto fail;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *po = PySequence_Fast_GET_ITEM(pos, j);
        Py_ssize_t i = PyLong_AsSsize_t(po);
        if (i == -1 && PyErr_Occurred()) goto fail;
        if (i < 0 || i >= nrows || i >= PyList_GET_SIZE(found)) {
            PyErr_SetString(PyExc_IndexError, "position out of range");
            goto fail;
        }
        if (PyList_GET_ITEM(blobs, j) != Py_None) {
            if (PyList_Append(left, po) < 0) goto fail;
            continue;
        }
        PyArray_Descr *descr = PyArray_DESCR(out);
        Py_INCREF(descr);
        npy_intp stride = PyArray_STRIDE(out, 1);
        PyObject *row = PyArray_NewFromDescr(&PyArray_Type, descr, 1, &dim, &stride,
                                             PyArray_BYTES(out) + i * PyArray_STRIDE(out, 0),
                                             PyArray_FLAGS(out) & NPY_ARRAY_WRITEABLE, NULL);
        if (!row) goto fail;
        Py_INCREF(outobj);
        if (PyArray_SetBaseObject((PyArrayObject *)row, outobj) < 0) {
            Py_DECREF(row);
            goto fail;
        }
        PyObject *e = getter_entry(g, PyList_GET_ITEM(keys, j), row, tier);
        if (!e) goto fail;
        PyObject *old = PyList_GET_ITEM(found, i);
        PyList_SET_ITEM(found, i, e);
        Py_XDECREF(old);
    }
    Py_DECREF(pos);
    return left;
fail:
    Py_DECREF(pos);
    Py_XDECREF(left);
    return NULL;
}

static PyMethodDef Getter_methods[] = {
    {"fill", (PyCFunction)Getter_fill, METH_VARARGS,
     "fill(found, out, positions, keys, blobs, tier) -> positions left (those with a "
     "blob): found[i] = Entry(hex key, out[i] (a view), None, tier)."},
    {NULL, NULL, 0, NULL},
};

static int Getter_init(Getter *g, PyObject *args, PyObject *kwds) {
    PyObject *reader, *fallback, *metas, *tier;
    PyTypeObject *entry_type;
    if (!PyArg_ParseTuple(args, "OOOO!U", &reader, &fallback, &metas, &PyType_Type,
                          &entry_type, &tier))
        return -1;
    int warm = Py_IS_TYPE(reader, &tc_WReaderType);
    if (!warm && !Py_IS_TYPE(reader, &tc_ReaderType)) {
        PyErr_SetString(PyExc_TypeError, "reader must be a HotReader or a WarmReader");
        return -1;
    }
    if (!warm && !PyList_Check(metas)) {
        PyErr_SetString(PyExc_TypeError, "metas must be the hot tier's list of blobs");
        return -1;
    }
    Py_ssize_t ok = slot_offset(entry_type, "key"), ov = slot_offset(entry_type, "vector"),
               om = slot_offset(entry_type, "metadata"), ot = slot_offset(entry_type, "tier");
    if (ok < 0 || ov < 0 || om < 0 || ot < 0) return -1;
    g->off_key = ok;
    g->off_vector = ov;
    g->off_metadata = om;
    g->off_tier = ot;
    g->warm = warm;
    Py_XSETREF(g->reader, Py_NewRef(reader));
    Py_XSETREF(g->fallback, Py_NewRef(fallback));
    Py_XSETREF(g->metas, Py_NewRef(metas));
    Py_XSETREF(g->entry_type, (PyTypeObject *)Py_NewRef(entry_type));
    Py_XSETREF(g->tier, Py_NewRef(tier));
    g->vectorcall = Getter_vectorcall;
    return 0;
}

static int Getter_traverse(Getter *g, visitproc visit, void *arg) {
    Py_VISIT(g->reader);
    Py_VISIT(g->fallback);
    Py_VISIT(g->metas);
    Py_VISIT(g->entry_type);
    Py_VISIT(g->tier);
    return 0;
}

static int Getter_clear(Getter *g) {
    Py_CLEAR(g->reader);
    Py_CLEAR(g->fallback);
    Py_CLEAR(g->metas);
    Py_CLEAR(g->entry_type);
    Py_CLEAR(g->tier);
    return 0;
}

static void Getter_dealloc(Getter *g) {
    PyObject_GC_UnTrack(g);
    Getter_clear(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyMemberDef Getter_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Getter, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject tc_GetterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.EntryGetter",
    .tp_basicsize = sizeof(Getter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "TierCache.get's hit in C (see tiercache/_core_src/entry.c); everything else "
              "falls back.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Getter_init,
    .tp_dealloc = (destructor)Getter_dealloc,
    .tp_traverse = (traverseproc)Getter_traverse,
    .tp_clear = (inquiry)Getter_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Getter, vectorcall),
    .tp_members = Getter_members,
    .tp_methods = Getter_methods,
};
