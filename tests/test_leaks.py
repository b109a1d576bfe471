"""Resident memory stays flat over many calls, accepted and rejected (each in a child)."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import subprocess_env

CHILD = textwrap.dedent("""
    import gc, sys
    import numpy as np
    import fastoptim

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (__import__("os").sysconf("SC_PAGE_SIZE") // 1024)

    rng = np.random.default_rng(0)
    p = [rng.standard_normal(100).astype(np.float32) for _ in range(3)]
    g = [rng.standard_normal(100).astype(np.float32) for _ in range(3)]
    m = [np.zeros(100, np.float32) for _ in range(3)]
    v = [np.zeros(100, np.float32) for _ in range(3)]
    bad = [x.astype(np.float64) for x in g]
    opt = fastoptim.Adam([x.copy() for x in p])

    def accepted(i):
        fastoptim.adam_(p, g, m, v, step=i + 1)
        opt.step(g)

    def rejected(i):
        for call in (lambda: fastoptim.adam_(p, bad, m, v, step=1),
                     lambda: fastoptim.adam_(p, g, m, None, step=1),
                     lambda: opt.step(bad),
                     lambda: fastoptim.sgd_(p, g, step=0)):
            try:
                call()
            except (TypeError, ValueError):
                pass

    work = {"accepted": accepted, "rejected": rejected}[sys.argv[1]]
    n = int(sys.argv[2])
    for i in range(n // 5):          # warm up: caches, allocator pools
        work(i)
    gc.collect()
    before = rss_kib()
    for i in range(n):
        work(i)
    gc.collect()
    print(rss_kib() - before)
""")


@pytest.mark.parametrize("kind, n", [("accepted", 100_000), ("rejected", 30_000)])
def test_rss_flat(kind, n):
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(n)], capture_output=True,
                         text=True, env=subprocess_env(OMP_NUM_THREADS="1"), cwd="/",
                         timeout=600)
    assert out.returncode == 0, out.stderr
    growth_kib = int(out.stdout.strip().splitlines()[-1])
    # one leaked 64-byte object per call would add several MiB
    assert growth_kib < 2048, f"RSS grew by {growth_kib} KiB over {n} {kind} calls"
