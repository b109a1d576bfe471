import os

import numpy as np
import pytest
from hypothesis import settings

# Property tests are repeatable: the same examples on every run and machine.
settings.register_profile("fastoptim", derandomize=True, deadline=None, max_examples=60)
settings.load_profile("fastoptim")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def kernels_variants():
    """The compiled variants importable here: both are tested against the reference."""
    from fastoptim import _kernels_baseline
    variants = [_kernels_baseline]
    if _kernels_baseline.cpu_has_avx2_fma():
        try:
            from fastoptim import _kernels_avx2
            variants.append(_kernels_avx2)
        except ImportError:
            pass
    return variants


def subprocess_env(**extra):
    """Environment for a child Python that imports the same fastoptim as this process
    (the installed one in CI, the in-place build in a dev tree), never a source tree
    without its compiled modules.  Run children with cwd outside the repository."""
    import fastoptim
    env = dict(os.environ, **extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastoptim.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
