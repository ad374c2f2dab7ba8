"""Builds optix's optional C++ kernels (optix/fused_kernels.cc: single-pass optimizer
steps called through the XLA FFI, see optix/fused.py) against jaxlib's FFI headers.

Everything else is in setup.cfg. The extension is optional: where it does not build (no
C++ compiler), optix installs without it and every step runs XLA's kernels instead. It is
compiled portably, for the architecture's baseline, and picks its AVX2 + FMA loops at run
time on x86-64 CPUs that have them (see the top of the .cc), so a wheel built on one
machine runs on another. After editing the .cc, rebuild with ``pip install -e .`` (or
``python setup.py build_ext --inplace``).
"""

import os

import setuptools


def _jaxlib_include() -> str:
  import jaxlib  # a build requirement (pyproject.toml): its XLA FFI headers
  return os.path.join(os.path.dirname(jaxlib.__file__), "include")


setuptools.setup(ext_modules=[setuptools.Extension(
    "optix._fused_kernels", ["optix/fused_kernels.cc"], include_dirs=[_jaxlib_include()],
    language="c++", optional=True,
    extra_compile_args=["-O3", "-std=c++17", "-w",
                        "-ffp-contract=off",  # only the Fma<true> calls contract, where XLA does
                        "-fno-math-errno", "-fopenmp-simd"])])
