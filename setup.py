"""Builds optix's optional C++ kernels (optix/fused_kernels.cc: single-pass optimizer
steps called through the XLA FFI, see optix/fused.py) against jaxlib's FFI headers.

Everything else is in setup.cfg. The extension is optional: where it does not build (no
C++ compiler), optix installs without it and every step runs XLA's kernels instead. It is
compiled for this machine's CPU (-march=native): build it where it runs. After editing the
.cc, rebuild with ``pip install -e .`` (or ``python setup.py build_ext --inplace``).
"""

import os

import setuptools


def _jaxlib_include() -> str:
  import jaxlib  # a build requirement (pyproject.toml): its XLA FFI headers
  return os.path.join(os.path.dirname(jaxlib.__file__), "include")


setuptools.setup(ext_modules=[setuptools.Extension(
    "optix._fused_kernels", ["optix/fused_kernels.cc"], include_dirs=[_jaxlib_include()],
    language="c++", optional=True,
    extra_compile_args=["-O3", "-march=native", "-std=c++17", "-w",
                        "-ffp-contract=off",  # only the std::fma calls contract, where XLA does
                        "-fno-math-errno", "-fopenmp-simd"])])
