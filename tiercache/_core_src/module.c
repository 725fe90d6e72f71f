/*
 * tiercache._core, the module: its functions (defined in policy.c, float16.c, rows.c and
 * wtxn.c), the types (WTinyLFUCore in policy.c, HotReader in hot.c, WarmReader in warm.c,
 * Digester and SealOpener in hash.c), the F16C flag, and the interned names the files
 * share. The layout of the sources: core.h.
 */
#define TC_IMPORT_ARRAY /* this file calls import_array(): it defines numpy's API table */
#include "core.h"

static PyMethodDef module_methods[] = {
    {"f16_to_f32", tc_mod_f16_to_f32, METH_VARARGS,
     "f16_to_f32(buffer, portable=False) -> float32 array: the warm reader's float16 "
     "conversion (portable=True: the portable loop even where F16C is used)."},
    {"drain", tc_mod_drain, METH_VARARGS,
     "drain(policy, keys): for each key in order, count it in the policy's sketch, then "
     "policy.on_hit(key). The engine's buffered drain."},
    {"replay", tc_mod_replay, METH_VARARGS,
     "replay(policy, trace, misses_out) -> (requests, hits, admitted, rejected, evicted): "
     "the simulator's loop over a list of keys or an int64/uint64 buffer; misses_out is "
     "None or a writable bool buffer (1 = the request missed)."},
    {"row_check", tc_mod_row_check, METH_O,
     "row_check(row) -> 0 finite with a nonzero value, 1 NaN or infinite, 2 all zero: an "
     "explicit write's check of a 1-d float32 array."},
    {"set_one_txn", (PyCFunction)(void (*)(void))tc_mod_set_one_txn, METH_FASTCALL,
     "set_one_txn(txn, records, index, meta, key, rec, log_entry, capacity, stage_key, "
     "stage_limit, log_entries) -> seq, or 0: the common case of LmdbTier.put_bounded's "
     "write transaction for a single set (wtxn.c); 0 when it does not apply (nothing "
     "written)."},
    {"bind", tc_mod_bind, METH_VARARGS,
     "bind(Admission, ADMITTED, REJECTED): the result type admit returns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "tiercache._core",
    "Compiled core of the default policy (W-TinyLFU), shared by the cache and the simulator.",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
#ifdef TC_HAVE_F16C
    __builtin_cpu_init();
    tc_use_f16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#endif
    if (PyType_Ready(&tc_CoreType) < 0) return NULL;
    if (PyType_Ready(&tc_ReaderType) < 0) return NULL;
    if (PyType_Ready(&tc_GetterType) < 0) return NULL;
    if (PyType_Ready(&tc_WReaderType) < 0) return NULL;
    if (PyType_Ready(&tc_GateType) < 0) return NULL;
    if (PyType_Ready(&tc_DigesterType) < 0) return NULL;
    if (PyType_Ready(&tc_SealOpenerType) < 0) return NULL;
    tc_S_handle = PyUnicode_InternFromString("_handle");
    tc_S_resizing = PyUnicode_InternFromString("resizing");
    tc_S_get = PyUnicode_InternFromString("get");
    tc_S_abort = PyUnicode_InternFromString("abort");
    tc_S_fork_generation = PyUnicode_InternFromString("_fork_generation");
    if (!tc_S_handle || !tc_S_resizing || !tc_S_get || !tc_S_abort || !tc_S_fork_generation)
        return NULL;
    if (tc_wtxn_init() < 0) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    const char *names[4] = {NULL, "window", "probation", "protected"};
    for (int i = 1; i <= 3; i++) {
        tc_SEG_NAMES[i] = PyUnicode_InternFromString(names[i]);
        if (!tc_SEG_NAMES[i]) return NULL;
    }
    if (PyModule_AddIntConstant(m, "F16C", tc_use_f16c) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_CoreType);
    if (PyModule_AddObject(m, "WTinyLFUCore", (PyObject *)&tc_CoreType) < 0) {
        Py_DECREF(&tc_CoreType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_ReaderType);
    if (PyModule_AddObject(m, "HotReader", (PyObject *)&tc_ReaderType) < 0) {
        Py_DECREF(&tc_ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_GetterType);
    if (PyModule_AddObject(m, "EntryGetter", (PyObject *)&tc_GetterType) < 0) {
        Py_DECREF(&tc_GetterType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_WReaderType);
    if (PyModule_AddObject(m, "WarmReader", (PyObject *)&tc_WReaderType) < 0) {
        Py_DECREF(&tc_WReaderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_GateType);
    if (PyModule_AddObject(m, "SeqGate", (PyObject *)&tc_GateType) < 0) {
        Py_DECREF(&tc_GateType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_DigesterType);
    if (PyModule_AddObject(m, "Digester", (PyObject *)&tc_DigesterType) < 0) {
        Py_DECREF(&tc_DigesterType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&tc_SealOpenerType);
    if (PyModule_AddObject(m, "SealOpener", (PyObject *)&tc_SealOpenerType) < 0) {
        Py_DECREF(&tc_SealOpenerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
