"""Run-time dispatch, thread-count contract, show_config and the reduction kernels."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim import _backend
from conftest import kernels_variants, subprocess_env


def test_force_baseline_environment_variable(tmp_path):
    code = "import fastoptim._backend as b; print(b.kernels.__name__, b.isa)"
    env = subprocess_env(FASTOPTIM_FORCE_BASELINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    assert out.startswith("fastoptim._kernels_baseline ")
    assert "avx2" not in out


def test_avx2_build_chosen_on_avx2_cpu():
    if os.environ.get("FASTOPTIM_FORCE_BASELINE", "") not in ("", "0"):
        pytest.skip("baseline forced for this run")
    baseline = kernels_variants()[0]
    if baseline.cpu_has_avx2_fma() and len(kernels_variants()) == 2:
        assert _backend.kernels.ISA == "avx2+fma"
    else:
        assert _backend.kernels is baseline


def test_show_config_reports_isa_openmp_threads():
    out = io.StringIO()
    fastoptim.show_config(file=out)
    text = out.getvalue()
    assert f"fastoptim {fastoptim.__version__}" in text
    assert f"instruction set: {_backend.kernels.ISA}" in text
    assert ("OpenMP: on" in text) == _backend.kernels.HAVE_OPENMP
    assert f"threads per kernel call: {fastoptim.get_num_threads()}" in text
    assert ("FMA reciprocal (exact)" in text) == _backend.kernels.HAVE_FMA


def test_n_threads_contract(monkeypatch):
    monkeypatch.setattr(_backend, "_cores_cache", 4)
    monkeypatch.setattr(_backend, "_max_threads", lambda: 6)
    monkeypatch.setattr(_backend, "_default_n_threads", None)
    assert _backend.resolve_n_threads(None) == 4
    assert _backend.resolve_n_threads(-1) == 4
    assert _backend.resolve_n_threads(-2) == 3
    assert _backend.resolve_n_threads(-10) == 1
    assert _backend.resolve_n_threads(-10 ** 400) == 1
    assert _backend.resolve_n_threads(3) == 3
    assert _backend.resolve_n_threads(np.int64(2)) == 2
    # above the processors: capped (a huge count made the OpenMP runtime abort)
    assert _backend.resolve_n_threads(7) == 6
    assert _backend.resolve_n_threads(2 ** 31) == 6
    assert _backend.resolve_n_threads(10 ** 400) == 6
    with pytest.raises(ValueError, match="n_threads must be a non-zero int"):
        _backend.resolve_n_threads(0)
    with pytest.raises(TypeError, match="n_threads must be None or an int"):
        _backend.resolve_n_threads(True)


def test_set_num_threads_changes_default():
    before = fastoptim.get_num_threads()
    try:
        fastoptim.set_num_threads(1)
        assert fastoptim.get_num_threads() == 1
        with pytest.raises(ValueError):
            fastoptim.set_num_threads(0)
        assert fastoptim.get_num_threads() == 1
    finally:
        fastoptim.set_num_threads(None)
    assert fastoptim.get_num_threads() == before


def test_set_num_threads_caps_huge_counts():
    try:
        for n in (10 ** 9, 2 ** 31, 2 ** 64, 10 ** 400):
            fastoptim.set_num_threads(n)
            assert fastoptim.get_num_threads() == _backend.kernels.max_threads()
        with pytest.raises(TypeError, match="n_threads must be None or an int"):
            fastoptim.set_num_threads(2.0)
    finally:
        fastoptim.set_num_threads(None)


@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__)
def test_compiled_layer_checks_thread_counts_itself(variant):
    # Called directly, past every Python check: no crash, no OverflowError.
    p, g = np.zeros(40_000), np.ones(40_000)
    for n in (1, 3, 10 ** 9, 2 ** 31, 2 ** 63, 10 ** 400):
        variant.sgd(p, g, None, 0.5, 0.0, 0.0, False, 0.0, False, True, n)
        assert variant.norm_pow_sum([g], 2.0, n) == 40_000.0
    np.testing.assert_array_equal(p, -0.5 * 6)
    for bad, exc in ((0, ValueError), (-1, ValueError), (-10 ** 400, ValueError),
                     (1.0, TypeError), (True, TypeError), (None, TypeError)):
        with pytest.raises(exc, match="n_threads must be an int >= 1"):
            variant.sgd(p, g, None, 0.5, 0.0, 0.0, False, 0.0, False, True, bad)
        with pytest.raises(exc, match="n_threads must be an int >= 1"):
            variant.norm_pow_sum([g], 2.0, bad)
    np.testing.assert_array_equal(p, -0.5 * 6)
    assert 1 <= variant.max_threads() <= (os.cpu_count() or 1)


def test_huge_thread_count_under_a_process_limit_does_not_crash(tmp_path):
    # The audit's 100,000 threads under a thread limit segfaulted: a subprocess, so a
    # crash is a failure here and not a dead test run.
    code = ("import resource, numpy as np, fastoptim\n"
            "resource.setrlimit(resource.RLIMIT_NPROC, (200, 200))\n"
            "p = np.zeros(100_000); g = np.ones(100_000)\n"
            "fastoptim.sgd_(p, g, step=1, lr=1.0, n_threads=100_000)\n"
            "fastoptim.set_num_threads(10 ** 9)\n"
            "fastoptim.sgd_(p, g, step=1, lr=1.0)\n"
            "assert (p == -2).all()\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], env=subprocess_env(),
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_thread_cap_follows_the_affinity_mask_after_set_num_threads(tmp_path):
    code = ("import os, fastoptim\n"
            "from fastoptim import _backend\n"
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "fastoptim.set_num_threads(64)\n"
            "print(_backend.kernels.max_threads(), fastoptim.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(),
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.split() == ["1", "1"]


def test_omp_num_threads_respected(tmp_path):
    code = "import fastoptim; print(fastoptim.get_num_threads())"
    env = subprocess_env(OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__)
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_pow_sum_matches_numpy_and_is_thread_independent(variant, norm_type, dtype):
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(n).astype(dtype) for n in (0, 5, 4097, 100_000, 70_001)]
    a64 = np.concatenate([a.astype(np.float64) for a in arrays])
    if norm_type == float("inf"):
        expected = np.abs(a64).max()
    else:
        expected = np.sum(np.abs(a64) ** norm_type)
    results = {nt: variant.norm_pow_sum(arrays, norm_type, nt) for nt in (1, 2, 3)}
    assert results[1] == results[2] == results[3]  # bit for bit, any thread count
    np.testing.assert_allclose(results[1], expected, rtol=1e-12)


def test_norm_and_finite_accept_read_only_and_single_arrays():
    a = np.arange(10.0)
    a.flags.writeable = False
    assert _backend.kernels.norm_pow_sum(a, 2.0, 1) == float(np.sum(a * a))
    assert _backend.kernels.all_finite([a, a])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite(bad):
    arrays = [np.zeros(10, np.float32), np.ones(50_000, np.float32)]
    assert _backend.kernels.all_finite(arrays)
    arrays[1][49_999] = bad
    assert not _backend.kernels.all_finite(arrays)


def test_zeros_state_like_avoids_page_offset_of_param():
    p = np.ones((512, 256), np.float32)
    states = [fastoptim.zeros_state_like(p, k) for k in (1, 2, 3)]
    offsets = {(s.ctypes.data - p.ctypes.data) % 4096 for s in states}
    assert len(offsets) == 3 and 0 not in offsets
    for s in states:
        assert s.shape == p.shape and s.dtype == p.dtype and s.flags.c_contiguous
        assert not s.any()
    f = np.asfortranarray(p)
    assert fastoptim.zeros_state_like(f).flags.f_contiguous


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_stream_axpy_bandwidth_probe(variant, dtype, n_threads):
    rng = np.random.default_rng(3)
    for n in (0, 5, 40_000):  # below and above the parallel threshold
        a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        want = a + dtype(0.25) * b
        variant.stream_axpy(a, b, 0.25, n_threads)
        np.testing.assert_array_equal(a, want, strict=True)
    a = np.ones(10, dtype)
    with pytest.raises(ValueError, match="share memory|overlap"):
        variant.stream_axpy(a, a, 1.0, n_threads)
    with pytest.raises(TypeError, match="dtype"):
        variant.stream_axpy(a, np.ones(10, np.float16), 1.0, n_threads)
    assert np.array_equal(a, np.ones(10, dtype))
