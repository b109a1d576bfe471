"""The kernels of a git revision against the working tree's, one process, interleaved.

    python bench/experiments/kernels_ab.py REV KERNELS SIZES DTYPES ROUNDS [THREADS]
    e.g. python bench/experiments/kernels_ab.py e6a0bfd adam,sgd_momentum 1000,65536 float32 300 1

Builds fastoptim/_kernels.pxi of REV and of the working tree as two modules (AVX2 build,
setup.py's flags) in a temporary directory, then times each kernel on three placements:
  np       param, grad and state from plain np.zeros (what users have; large arrays all at
           page offset 16, each NumPy allocation apart),
  collide  page offset 16, buffers 2^26 + 2^12 bytes apart (NumPy's 16 Mi-element float32
           placement; larger arrays: NumPy's spacing for them) at any size: the L1
           way-predictor conflicts in cache,
  stag     bench.staggered_copies (every buffer at its own page offset).
Prints best-of-interleaved times, new/old per placement, and same/staggered per version.
"""

import math
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from fastoptim.bench import staggered_copies  # noqa: E402

SETUP = '''
import sys
import numpy as np
from setuptools import setup, Extension
from Cython.Build import cythonize
flags = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fopenmp", "-mavx2", "-mfma", "-mf16c"]
m = sys.argv[1]
exts = [Extension(m, [m + ".pyx"], include_dirs=[np.get_include(), "."], extra_compile_args=flags,
                  extra_link_args=["-fopenmp"],
                  define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")])]
setup(ext_modules=cythonize(exts, compiler_directives={"language_level": 3, "boundscheck": False,
      "wraparound": False, "initializedcheck": False, "cdivision": True}),
      script_args=["build_ext", "--inplace"])
'''
NBUF = {"sgd_momentum": 3, "rmsprop": 3, "adam": 4, "adamw": 4, "amsgrad": 5}
_MAPS = []


def _kernel_sources(dst, rev):
    # Every kernel source of `rev` (None: the working tree) in dst: _kernels.pxi
    # includes its sibling .pxi and .h files, which differ between revisions too.
    os.makedirs(dst)
    if rev is None:
        for name in os.listdir(os.path.join(ROOT, "fastoptim")):
            if name.endswith((".pxi", ".h", ".tp")):
                shutil.copy(os.path.join(ROOT, "fastoptim", name), dst)
        return
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "fastoptim"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "--strip-components=1", "-C", dst], input=archive, check=True)
    generated = os.path.join(ROOT, "fastoptim", "_kernels_elementwise.pxi")
    if os.path.exists(generated) and not os.path.exists(os.path.join(dst, os.path.basename(
            generated))):
        shutil.copy(generated, dst)  # rendered by setup.py from the .tp, not in git


def build(rev):
    tmp = tempfile.mkdtemp()
    for mod, which in (("k_old", rev), ("k_new", None)):
        d = os.path.join(tmp, mod)
        _kernel_sources(d, which)
        with open(os.path.join(d, mod + ".pyx"), "w") as f:
            f.write('include "_kernels.pxi"\n')
        with open(os.path.join(d, "setup_ab.py"), "w") as f:
            f.write(SETUP)
        subprocess.run([sys.executable, "setup_ab.py", mod], cwd=d, check=True,
                       capture_output=True)
        sys.path.insert(0, d)
    import k_new
    import k_old
    return k_old, k_new


def carve(n, dt, count):
    # NumPy's spacing of 16 Mi float32 arrays, or of these arrays if they are larger
    delta = max((1 << 26) + (1 << 12), -(-n * dt.itemsize // 4096) * 4096 + 4096)
    m = mmap.mmap(-1, count * delta + n * dt.itemsize + 8192,
                  flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _MAPS.append(m)
    whole = np.frombuffer(m, np.uint8)
    first = (-whole.ctypes.data) % 4096
    return [whole[first + k * delta + 16:][:n * dt.itemsize].view(dt) for k in range(count)]


def step_fn(mod, kernel, b, threads):
    if kernel == "sgd_momentum":
        return lambda: mod.sgd(b[0], b[1], b[2], 1e-9, 0.9, 0.0, False, 0.0, False, False, threads)
    if kernel == "rmsprop":
        return lambda: mod.rmsprop(b[0], b[1], b[2], None, None, 1e-9, 0.99, 1e-8, 0.0, 0.0,
                                   False, False, threads)
    decay = 1 - 1e-11 if kernel == "adamw" else 1.0
    ams = kernel == "amsgrad"
    return lambda: mod.adam(b[0], b[1], b[2], b[3], b[4] if ams else None, ams, 0.9, 0.999,
                            1e-8, 0.0, False, decay, 1e-9 / (1 - 0.9 ** 5),
                            math.sqrt(1 - 0.999 ** 5), False, threads)


def main(rev, kernels, sizes, dtypes, rounds, threads=2):
    k_old, k_new = build(rev)
    print(f"{rev} -> working tree, {threads} thread(s), best of {rounds} interleaved rounds")
    for kernel in kernels.split(","):
        for dn in dtypes.split(","):
            dt = np.dtype(dn)
            for n in (int(s) for s in sizes.split(",")):
                nb = NBUF[kernel]
                bufs = {"np": [np.zeros(n, dt) for _ in range(nb)], "collide": carve(n, dt, nb),
                        "stag": staggered_copies([np.zeros(n, dt) for _ in range(nb)])}
                for v in bufs.values():
                    for a in v:
                        a[:] = 1e-3
                fns = {(pl, ver): step_fn(mod, kernel, b, threads)
                       for pl, b in bufs.items() for ver, mod in (("old", k_old), ("new", k_new))}
                best = {k: float("inf") for k in fns}
                for _ in range(rounds):
                    for k, f in fns.items():
                        t = time.perf_counter()
                        f()
                        best[k] = min(best[k], time.perf_counter() - t)
                cells = [f"{pl} {best[(pl, 'old')] * 1e6:.1f} -> {best[(pl, 'new')] * 1e6:.1f} us "
                         f"({best[(pl, 'new')] / best[(pl, 'old')]:.2f})" for pl in bufs]
                worst = {ver: max(best[("np", ver)], best[("collide", ver)]) / best[("stag", ver)]
                         for ver in ("old", "new")}
                print(f"{kernel:12s} {dn:7s} {n:>10,d} | " + " | ".join(cells) +
                      f" | worst same/stag old {worst['old']:.2f} new {worst['new']:.2f}", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]) if len(a) > 5 else 2)
