/*
 * What both compiled readers (HotReader in hot.c, WarmReader in warm.c) share: their
 * first fields (READER_HEAD, core.h) with one close(), take_hits() and hits, and the check
 * of a caller's output array (HotReader.gather, WarmReader.rows).
 */
#include "core.h"

PyObject *tc_reader_close(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    ((ReaderHead *)self)->closed = 1;
    Py_RETURN_NONE;
}

PyObject *tc_reader_take_hits(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    ReaderHead *r = (ReaderHead *)self;
    unsigned long long n = r->hits;
    r->hits = 0;
    return PyLong_FromUnsignedLongLong(n);
}

PyObject *tc_reader_get_hits(PyObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(((ReaderHead *)self)->hits);
}

/* out is a writable C-contiguous float32 array of dim columns (gather's and rows') */
int tc_out_rows_ok(PyObject *out, npy_intp dim) {
    if (!PyArray_Check(out)) return 0;
    PyArrayObject *a = (PyArrayObject *)out;
    return PyArray_TYPE(a) == NPY_FLOAT32 && PyArray_NDIM(a) == 2 &&
           PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISWRITEABLE(a) && PyArray_DIM(a, 1) == dim;
}

/* set_gate(gate or None): from now on the reader serves only while the gate has not
 * moved (core.h tc_gate_moved) */
PyObject *tc_reader_set_gate(PyObject *self, PyObject *gate) {
    ReaderHead *r = (ReaderHead *)self;
    if (gate != Py_None && !PyObject_TypeCheck(gate, &tc_GateType)) {
        PyErr_SetString(PyExc_TypeError, "set_gate takes a SeqGate or None");
        return NULL;
    }
    PyObject *old = r->gate;
    r->gate = gate == Py_None ? NULL : Py_NewRef(gate);
    Py_XDECREF(old);
    Py_RETURN_NONE;
}
