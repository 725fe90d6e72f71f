"""Build hook for the compiled policy core (everything else is in pyproject.toml).

``tiercache._core`` is optional at build time: without a C compiler the install still
succeeds and tiercache falls back to the pure-Python policy (same decisions, slower).
``make test`` requires the compiled core (tests/test_core.py).
"""

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tiercache._core",
            sources=["tiercache/_core.c"],
            include_dirs=[numpy.get_include()],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
