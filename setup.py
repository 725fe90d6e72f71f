"""Build hook for the compiled policy core (everything else is in pyproject.toml).

``tiercache._core`` is optional at build time: without a C compiler the install still
succeeds and tiercache falls back to the pure-Python policy (same decisions, slower).
``make test`` requires the compiled core (tests/test_core.py).
"""

from glob import glob

import numpy
from setuptools import Extension, setup

# the extension's sources: one file per component, core.h shared (see its header comment);
# paths relative to this file's folder, where pip and setup.py run
CORE_SRC = "tiercache/_core_src"

setup(
    ext_modules=[
        Extension(
            "tiercache._core",
            sources=sorted(glob(f"{CORE_SRC}/*.c")),
            depends=sorted(glob(f"{CORE_SRC}/*.h")),
            include_dirs=[numpy.get_include(), CORE_SRC],
            # -ftree-vectorize: gcc vectorises loops only from -O3 (or, from gcc 12, the very
            # cheapest at -O2); the float16/int8 decode loops need it (semantics unchanged:
            # no fast-math, float sums are never reordered)
            extra_compile_args=["-O2", "-ftree-vectorize", "-std=c11", "-Wall",
                                "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
