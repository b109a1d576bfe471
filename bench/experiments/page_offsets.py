"""Where the page-offset penalty comes from (issue #12): experiments on a C stream probe.

    python bench/experiments/page_offsets.py distance [n]   # same page offset, chosen virtual distances
    python bench/experiments/page_offsets.py step [n]       # distance between the buffers' page offsets
    python bench/experiments/page_offsets.py streams [n]    # read-only vs read-write streams

Each builds probe.c (cc -O3 -mavx2) into a temporary directory, carves float32 buffers out
of one anonymous mapping at chosen virtual addresses, and times the probes one thread,
best of interleaved rounds (the machine is shared: only ratios within one run mean
anything).  See README.md in this directory for what the results say.
"""

import ctypes
import mmap
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096
FP = ctypes.POINTER(ctypes.c_float)


def build():
    out = os.path.join(tempfile.mkdtemp(), "probe.so")
    subprocess.run(["cc", "-O3", "-mavx2", "-shared", "-fPIC", "-o", out,
                    os.path.join(HERE, "probe.c")], check=True)
    lib = ctypes.CDLL(out)
    for fn in (lib.probe_plain, lib.probe_staged):
        fn.argtypes = [ctypes.POINTER(FP), ctypes.c_int, ctypes.POINTER(FP), ctypes.c_int,
                       ctypes.c_long, ctypes.c_float]
    return lib


_MAPS = []


def carve(n, count, distance, offsets):
    """`count` float32 arrays of n elements, array k at virtual address
    base + k * distance + offsets[k], base page-aligned; all in one private mapping."""
    size = (count - 1) * distance + max(offsets) + 4 * n + 2 * PAGE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _MAPS.append(m)
    whole = np.frombuffer(m, np.uint8)
    first = (-whole.ctypes.data) % PAGE
    out = []
    for k in range(count):
        start = first + k * distance + offsets[k]
        a = whole[start:start + 4 * n].view(np.float32)
        a[:] = 1e-3
        out.append(a)
    return out


def probe(lib, which, bufs, nro):
    ro = (FP * len(bufs))(*[b.ctypes.data_as(FP) for b in bufs[:nro]])
    rw = (FP * len(bufs))(*[b.ctypes.data_as(FP) for b in bufs[nro:]])
    fn = getattr(lib, "probe_" + which)
    n, nrw = len(bufs[0]), len(bufs) - nro
    return lambda: fn(ro, nro, rw, nrw, n, 1e-9)


def best_interleaved(fns, rounds):
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def rounds_for(n):
    return max(5, min(400, int(2e7 // n)))


def distance(lib, n):
    """Read 4 / write 3 (Adam's traffic).  All buffers at page offset 64 but at different
    virtual distances, against the same buffers 1,088 bytes apart."""
    d64 = (1 << 26) + (1 << 12)   # np.zeros(16_777_216, float32): 64 MiB + 4 KiB apart
    cases = {"same offset, 2^26+2^12 apart (NumPy, 16 Mi float32)": (d64, [64] * 4),
             "same offset, 2^25+2^12 apart (NumPy, 8 Mi float32)": ((1 << 25) + (1 << 12), [64] * 4),
             "same offset, 2^26 apart": (1 << 26, [64] * 4),
             "same offset, 2^27+2^12 apart": ((1 << 27) + (1 << 12), [64] * 4),
             "same offset, 2^20+2^13 apart": ((1 << 20) + (1 << 13), [64] * 4),
             "staggered 1,088 B, 2^26+2^12 apart": (d64, [64 + 1088 * k for k in range(4)])}
    fns = {}
    for name, (dist, offs) in cases.items():
        if dist < 4 * n + PAGE:
            continue
        bufs = carve(n, 4, dist, offs)
        fns[(name, "plain")] = probe(lib, "plain", bufs, 1)
        fns[(name, "staged")] = probe(lib, "staged", bufs, 1)
    best = best_interleaved(fns, rounds_for(n))
    ref = best[("staggered 1,088 B, 2^26+2^12 apart", "plain")]
    print(f"n={n:,} float32, read 4 / write 3, 1 thread; x = time / staggered plain")
    for (name, which), t in best.items():
        print(f"  {name:55s} {which:6s} {t * 1e6:10.1f} us  x{t / ref:.2f}")


def step(lib, n):
    """Read 4 / write 3, the buffers' page offsets `step` bytes apart (0: the same)."""
    dist = (1 << 26) + (1 << 12)
    fns = {}
    for st in (0, 64, 128, 256, 512, 1088, 2048):
        bufs = carve(n, 4, dist, [64 + st * k for k in range(4)])
        fns[st] = probe(lib, "plain", bufs, 1)
    best = best_interleaved(fns, rounds_for(n))
    print(f"n={n:,} float32, read 4 / write 3, plain loop, 1 thread, buffers 2^26+2^12 apart")
    for st, t in best.items():
        print(f"  page offsets {st:5d} B apart: {t * 1e6:10.1f} us  x{t / best[1088]:.2f} of 1,088 B")


def streams(lib, n):
    """Read-only streams vs read-write streams, same offset vs staggered."""
    dist = (1 << 26) + (1 << 12)
    fns = {}
    for nro, nrw in ((4, 0), (7, 0), (1, 1), (1, 2), (1, 3), (2, 2)):
        nb = nro + nrw
        for pl, offs in (("same", [64] * nb), ("stag", [64 + 1088 * k for k in range(nb)])):
            if nrw == 0:   # read-only: the staged probe with no stores is a plain sum
                fns[(nro, nrw, pl)] = probe(lib, "staged", carve(n, nb, dist, offs), nro)
            else:
                fns[(nro, nrw, pl)] = probe(lib, "plain", carve(n, nb, dist, offs), nro)
    best = best_interleaved(fns, rounds_for(n))
    print(f"n={n:,} float32, plain loop, 1 thread, buffers 2^26+2^12 apart")
    for nro, nrw in sorted({k[:2] for k in best}):
        s, g = best[(nro, nrw, "same")], best[(nro, nrw, "stag")]
        print(f"  read-only {nro} read-write {nrw}: same {s * 1e6:9.1f} us  staggered "
              f"{g * 1e6:9.1f} us  same/staggered {s / g:.2f}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "distance"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 65_536
    {"distance": distance, "step": step, "streams": streams}[what](build(), n)
