"""Build the compiled kernels.

One source (fastoptim/_kernels.pxi) is built twice: `_kernels_baseline` for any CPU
of the target architecture and, on x86-64, `_kernels_avx2` with AVX2+FMA code;
fastoptim._backend picks one at import time from the CPU's features, so the wheel
runs everywhere and is fast where it can be.  The flags below are the whole list on
purpose: no tuning for the build machine's own CPU (the wheel would crash on older
ones) and no unsafe floating-point math (approximate sqrt, no NaN handling, and
flush-to-zero switched on for the whole Python process).
"""

import os
import platform
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -O3: GCC 12 at -O2 does not vectorize these loops.  -fno-math-errno: otherwise
# sqrt keeps a branch to set errno and the loop is not vectorized.
# -ffp-contract=off: no a*b+c fused into FMA, so every operation rounds exactly as
# the NumPy reference (and torch's formulas) say: results bit for bit the same.
COMMON_FLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
# -mf16c: float16 conversions in hardware (every AVX2 CPU has F16C; _backend checks it)
AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c"]
OPENMP_FLAGS = ["-fopenmp"]
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
DEBUG = os.environ.get("FASTOPTIM_DEBUG_BUILD") == "1"


def _compiles(compiler, flags, code="int main(void) { return 0; }\n"):
    """True when the compiler builds and links a tiny program with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:  # any compiler or linker failure means "no"
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            common, avx2, openmp = ["/O2", "/fp:precise"], ["/arch:AVX2"], ["/openmp"]
            have_openmp = True
        else:
            common, avx2, openmp = COMMON_FLAGS, AVX2_FLAGS, OPENMP_FLAGS
            have_openmp = _compiles(self.compiler, openmp,
                                    "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        if os.environ.get("FASTOPTIM_NO_OPENMP") == "1":  # CI builds this path too
            have_openmp = False
            print("FASTOPTIM_NO_OPENMP=1: fastoptim is built single-threaded", file=sys.stderr)
        elif not have_openmp:
            print("WARNING: the compiler does not support OpenMP; fastoptim is built "
                  "single-threaded", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = list(common) + (openmp if have_openmp else [])
            ext.extra_link_args = openmp if have_openmp and self.compiler.compiler_type != "msvc" else []
            if ext.name.endswith("_avx2"):
                ext.extra_compile_args += avx2
        super().build_extensions()


# Kernel sources generated from Tempita templates (as scikit-learn's .pyx.tp): rendered
# here, before cythonize, on every build (sdists ship the templates, not the output).
TEMPLATES = ["fastoptim/_kernels_elementwise.pxi.tp"]


def render_templates():
    from Cython import Tempita

    for template in TEMPLATES:
        with open(template) as f:
            text = Tempita.sub(f.read())
        target = template[:-len(".tp")]
        if os.path.exists(target):
            with open(target) as f:
                if f.read() == text:
                    continue  # unchanged: keep its timestamp (no needless rebuild)
        with open(target, "w") as f:
            f.write(text)


def extensions():
    names = ["fastoptim._kernels_baseline"]
    if IS_X86_64:
        names.append("fastoptim._kernels_avx2")
    return [
        Extension(
            name,
            [name.replace(".", "/") + ".pyx"],
            include_dirs=[np.get_include(), "fastoptim"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
            depends=["fastoptim/_kernels.pxi", "fastoptim/_kernels_factored.pxi",
                     "fastoptim/_kernels_layers.pxi", "fastoptim/_layers.h",
                     "fastoptim/_kernels_gemm.pxi", "fastoptim/_kernels_plan.pxi",
                     "fastoptim/_kernels_compact.pxi",
                     "fastoptim/_compact.h", "fastoptim/_kernels_quant8.pxi",
                     "fastoptim/_quant8.h", "fastoptim/_platform.h",
                     *TEMPLATES, *(t[:-len(".tp")] for t in TEMPLATES)],
        )
        for name in names
    ]


render_templates()
setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "initializedcheck": DEBUG,
            "cdivision": not DEBUG,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
