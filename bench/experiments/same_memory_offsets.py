"""adam_ float32 at 16 M elements on the SAME four allocations viewed at different page
offsets (all at NumPy's 16, then 64/128/256 B apart, then 1 KiB apart), taking turns.

    python bench/experiments/same_memory_offsets.py

Every layout within 512 B runs the kernels' staged loop; only the buffers' relative
offsets differ, and the physical memory is the same, so the ratios isolate placement.
On 2026-11-29 12:06 UTC (DRAM in its ~105 GB/s regime): same 1.23x the 1 KiB-apart
time, 64 B apart 1.09x, 128 B 1.05x, 256 B 1.04x: what is left of the penalty comes
from the four streams' lines sharing one L1 set at a time, not from DRAM.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import fastoptim  # noqa: E402
from fastoptim.bench import best_times_interleaved  # noqa: E402

N = 16_777_216
DTYPE = np.dtype("float32")
LAYOUTS = {"same (16)": [16] * 4, "64 B apart": [16 + 64 * k for k in range(4)],
           "128 B apart": [16 + 128 * k for k in range(4)],
           "256 B apart": [16 + 256 * k for k in range(4)],
           "1 KiB apart": [448 + 1024 * k for k in range(4)]}


def view(raw, offset):
    start = (offset - raw.ctypes.data) % 4096
    return raw[start:start + N * DTYPE.itemsize].view(DTYPE)


def main():
    raws = [np.zeros(N * DTYPE.itemsize + 8192, np.uint8) for _ in range(4)]
    sets = {name: [view(r, o) for r, o in zip(raws, offs)] for name, offs in LAYOUTS.items()}
    sets["same (16)"][1][...] = 1.0  # a grad; the views overlap, values only need be finite
    fns = [lambda b=b: fastoptim.adam_(b[0], b[1], b[2], b[3], lr=1e-7, step=2)
           for b in sets.values()]
    for fn in fns:
        fn()
    times = best_times_interleaved(fns, min_time=1.5)
    for name, t in zip(sets, times):
        print(f"{name:12s} {t * 1e3:7.2f} ms  {t / times[-1]:.2f}x  "
              f"{28 * N / t / 1e9:.0f} GB/s")


if __name__ == "__main__":
    main()
