/*
 * tiercache._core's float16 -> float32 conversion (the warm reader's decode of float16
 * records; halfs_to_floats in core.h picks one of the two loops) and f16_to_f32, which
 * exposes it to the tests.
 */
#include "core.h"

/* n little-endian float16 values to float32, exactly (numpy's conversion), portable and
 * without a branch per element, so the compiler vectorises it (setup.py passes
 * -ftree-vectorize). Normal and subnormal halves: the exponent and mantissa bits shifted
 * into a float's place read as 2^-112 times the value (a subnormal half lands on a
 * subnormal float with the same scale), so one multiply by 2^112 gives it exactly. Inf and
 * NaN (exponent all ones) keep their mantissa bits. */
void tc_halfs_to_floats_portable(const uint8_t *src, float *dst, npy_intp n) {
    const float scale = 0x1p112f;
    for (npy_intp i = 0; i < n; i++) {
        uint32_t h = (uint32_t)src[2 * i] | ((uint32_t)src[2 * i + 1] << 8);
        uint32_t em = h & 0x7FFFu, sign = (h & 0x8000u) << 16;
        uint32_t bits = em << 13, out;
        float f;
        memcpy(&f, &bits, 4);
        f *= scale;
        memcpy(&out, &f, 4);
        uint32_t special = 0x7F800000u | ((em & 0x3FFu) << 13);
        uint32_t mask = 0u - (uint32_t)(em >= 0x7C00u); /* all ones for Inf and NaN */
        out = (out & ~mask) | (special & mask) | sign;
        memcpy(&dst[i], &out, 4);
    }
}

#ifdef TC_HAVE_F16C
#include <immintrin.h>
/* the same conversion with the F16C instruction (vcvtph2ps: exact for every half, NaNs
 * stay NaN), 8 halves at a time: ~35 ns for 384 against ~650 ns for the scalar loop on
 * this project's 2-core AMD EPYC VMs. Chosen at import when the CPU and OS support it. */
__attribute__((target("avx,f16c"))) void tc_halfs_to_floats_f16c(const uint8_t *src,
                                                                  float *dst, npy_intp n) {
    npy_intp i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    tc_halfs_to_floats_portable(src + 2 * i, dst + i, n - i);
}
#endif

int tc_use_f16c = 0; /* set by the module's init: the CPU and OS support F16C */

/* f16_to_f32(buffer, portable=False) -> float32 array: the warm reader's float16
 * conversion (for tests; portable=True runs the portable loop even where F16C is used) */
PyObject *tc_mod_f16_to_f32(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *obj;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "O|p", &obj, &portable)) return NULL;
    Py_buffer v;
    if (PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE) < 0) return NULL;
    npy_intp n = (npy_intp)(v.len / 2);
    PyObject *a = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (a) {
        float *dst = (float *)PyArray_DATA((PyArrayObject *)a);
        if (portable) {
            tc_halfs_to_floats_portable((const uint8_t *)v.buf, dst, n);
        } else {
            halfs_to_floats((const uint8_t *)v.buf, dst, n);
        }
    }
    PyBuffer_Release(&v);
    return a;
}
