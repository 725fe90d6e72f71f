/*
 * tiercache._core: SeqGate, the invalidation sequence word (tiercache/invalidation.py).
 *
 * SeqGate(buffer) holds a writable buffer of at least 8 bytes (the warm store's
 * memory-mapped ``inval.seq`` file, shared by every process that opens the store, or a
 * private bytearray) and reads its first 8 bytes as one native-endian 64-bit word.
 * ``seen`` is the number this process has caught up to. HotReader and WarmReader check
 * ``word != seen`` (core.h tc_gate_moved: one load and one compare) before serving, and
 * fall back to the Python path, which applies the log and moves ``seen``, when it moved.
 * publish(n) raises the word to n atomically (a compare-and-swap loop: it never moves
 * back), so a reader never sees a torn or a regressed word.
 */
#include "core.h"

static int Gate_init(SeqGate *g, PyObject *args, PyObject *kwds) {
    PyObject *buf;
    if (!PyArg_ParseTuple(args, "O", &buf)) return -1;
    if (g->word) {
        PyErr_SetString(PyExc_RuntimeError, "SeqGate is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buf, &g->view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) return -1;
    if (g->view.len < 8 || ((uintptr_t)g->view.buf & 7)) {
        PyBuffer_Release(&g->view);
        PyErr_SetString(PyExc_ValueError, "SeqGate needs an 8-byte aligned writable buffer");
        return -1;
    }
    g->word = (uint64_t *)g->view.buf;
    g->seen = __atomic_load_n(g->word, __ATOMIC_ACQUIRE);
    return 0;
}

static void Gate_dealloc(SeqGate *g) {
    if (g->word) PyBuffer_Release(&g->view);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static int gate_ready(SeqGate *g) {
    if (g->word) return 1;
    PyErr_SetString(PyExc_RuntimeError, "SeqGate is not initialised or released");
    return 0;
}

static PyObject *Gate_moved(SeqGate *g, PyObject *Py_UNUSED(ignored)) {
    if (!gate_ready(g)) return NULL;
    return PyBool_FromLong(tc_gate_moved((PyObject *)g));
}

static PyObject *Gate_publish(SeqGate *g, PyObject *arg) {
    if (!gate_ready(g)) return NULL;
    unsigned long long v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    /* monotone: a writer that committed earlier but publishes later never moves the
       word back */
    uint64_t cur = __atomic_load_n(g->word, __ATOMIC_ACQUIRE);
    while (cur < (uint64_t)v &&
           !__atomic_compare_exchange_n(g->word, &cur, (uint64_t)v, 1, __ATOMIC_RELEASE,
                                        __ATOMIC_ACQUIRE)) {
    }
    Py_RETURN_NONE;
}

static PyObject *Gate_release(SeqGate *g, PyObject *Py_UNUSED(ignored)) {
    /* readers holding this gate must have dropped it first (set_gate(None)) */
    if (g->word) {
        g->word = NULL;
        PyBuffer_Release(&g->view);
    }
    Py_RETURN_NONE;
}

static PyObject *Gate_get_word(SeqGate *g, void *Py_UNUSED(closure)) {
    if (!gate_ready(g)) return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(g->word, __ATOMIC_ACQUIRE));
}

static PyObject *Gate_get_seen(SeqGate *g, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(g->seen);
}

static int Gate_set_seen(SeqGate *g, PyObject *value, void *Py_UNUSED(closure)) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "seen cannot be deleted");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    g->seen = (uint64_t)v;
    return 0;
}

static PyMethodDef Gate_methods[] = {
    {"moved", (PyCFunction)Gate_moved, METH_NOARGS,
     "moved() -> bool: the word differs from seen (the readers fall back)."},
    {"publish", (PyCFunction)Gate_publish, METH_O,
     "publish(n): raise the word to n if it is lower (atomic compare-and-swap)."},
    {"release", (PyCFunction)Gate_release, METH_NOARGS,
     "Let go of the buffer (after every reader dropped this gate)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Gate_getset[] = {
    {"word", (getter)Gate_get_word, NULL, "The word in the buffer now (acquire load).", NULL},
    {"seen", (getter)Gate_get_seen, (setter)Gate_set_seen,
     "What this process has applied; the readers serve while it equals the word.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject tc_GateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tiercache._core.SeqGate",
    .tp_basicsize = sizeof(SeqGate),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The invalidation sequence word of a warm store, and what this process has "
              "applied (see tiercache/_core_src/gate.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gate_init,
    .tp_dealloc = (destructor)Gate_dealloc,
    .tp_methods = Gate_methods,
    .tp_getset = Gate_getset,
};
