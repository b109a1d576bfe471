"""fastoptim.torch's state at the param's page offset (torch.zeros_like) against staggered
(fastoptim.torch._zeros_state_like), one process, interleaved steps.

    python bench/experiments/torch_state_offsets_ab.py [CLASS] [ROUNDS] [ELEMENTS]
    e.g. python bench/experiments/torch_state_offsets_ab.py Adam 100 16777216

Two optimizers of CLASS over the same float32 param and grad: A's state made by
torch.zeros_like, B's as fastoptim.torch makes it.  Prints each one's page offsets, the
median and best step times, the median of the paired ratios A/B and the load.
"""

import os
import statistics
import sys
import time

import torch

import fastoptim.torch as ft

name = sys.argv[1] if len(sys.argv) > 1 else "Adam"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 100
n = int(sys.argv[3]) if len(sys.argv) > 3 else 16_777_216
torch.manual_seed(0)
p = torch.randn(n, requires_grad=True)
p.grad = torch.randn(n) * 1e-3
cls = getattr(ft, name)
staggered = ft._zeros_state_like
ft._zeros_state_like = lambda q, dtype, index: torch.zeros_like(q, dtype=dtype)
A = cls([p], lr=1e-6)
A.step()  # its state, at the param's offset
ft._zeros_state_like = staggered
B = cls([p], lr=1e-6)
B.step()
for label, opt in (("A zeros_like", A), ("B staggered", B)):
    offsets = {k: v.data_ptr() % 4096 for k, v in opt.state[p].items() if v.dim()}
    print(label, offsets, "param", p.data_ptr() % 4096, "grad", p.grad.data_ptr() % 4096)
times = {A: [], B: []}
for r in range(rounds):
    for opt in ((A, B) if r % 2 else (B, A)):
        t0 = time.perf_counter()
        opt.step()
        times[opt].append(time.perf_counter() - t0)
ta, tb = times[A], times[B]
pairs = sorted(a / b for a, b in zip(ta, tb))
print(f"{name} {n:,}: median {statistics.median(ta) * 1e3:.2f} / {statistics.median(tb) * 1e3:.2f}"
      f" ms, best {min(ta) * 1e3:.2f} / {min(tb) * 1e3:.2f} ms, zeros_like/staggered paired"
      f" median {statistics.median(pairs):.3f}x (quartiles {pairs[len(pairs) // 4]:.3f}-"
      f"{pairs[3 * len(pairs) // 4]:.3f}); load {os.getloadavg()[0]:.1f}")
