"""``python -m fastoptim``: a small end-to-end run, its outputs, and its error paths."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from fastoptim import cli, plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _have_estimator():
    try:
        from fastoptim.nn import MLPClassifier  # noqa: F401
    except ImportError:
        return False
    return True


needs_estimator = pytest.mark.skipif(not _have_estimator(),
                                     reason="fastoptim.nn.MLPClassifier not available")


def _run_module(*args, cwd):
    env = subprocess_env()
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run([sys.executable, "-m", "fastoptim", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _assert_one_line_error(rc, err, pattern):
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastoptim: error:")
    assert re.search(pattern, lines[0]), lines[0]


def _table_rows(out):
    return [l for l in out.splitlines()
            if re.match(r"^(Momentum|RMSProp|Adam)\s+[\d.e-]+\s+\d", l)]


# --------------------------------------------------------------------------- end to end
@needs_estimator
def test_quick_run_as_module(tmp_path):
    res = _run_module("--quick", "--seed", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"optimizer\s+lr\s+val loss \(mean ± std\)\s+val accuracy", out)
    rows = _table_rows(out)
    assert [r.split()[0] for r in rows] == ["Momentum", "RMSProp", "Adam"]
    assert sum("<- best" in r for r in rows) == 1
    for r in rows:  # mean ± std of loss and accuracy
        assert len(re.findall(r"\d+\.\d{4} ± \d+\.\d{4}", r)) == 2
    accs = re.findall(r"(refit on all training data|majority-vote ensemble):\s+([\d.]+)", out)
    assert len(accs) == 2 and all(0.0 <= float(a) <= 1.0 for _, a in accs)
    # one progress line per fit on stderr: 3 optimizers x 3 folds in --quick
    progress = [l for l in res.stderr.splitlines() if re.match(r"\s*\[\s*\d+/9\]", l)]
    assert len(progress) == 9
    out_dir = tmp_path / "fastoptim-output"
    if plotting.have_matplotlib():
        for name in ("learning_curves.png", "rosenbrock_paths.png"):
            data = (out_dir / name).read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    else:
        assert "fastoptim[plot]" in out


@needs_estimator
def test_quick_run_in_process_is_deterministic(tmp_path, capsys):
    args = ["train", "--quick", "--no-plots", "--n-jobs", "1", "--output-dir",
            str(tmp_path / "out")]
    assert cli.main(args) == 0
    first = capsys.readouterr()
    assert cli.main(args) == 0
    second = capsys.readouterr()
    strip = lambda s: re.sub(r"done in [\d.]+ s", "", s)  # noqa: E731
    assert strip(first.out) == strip(second.out)
    assert len(_table_rows(first.out)) == 3
    assert not (tmp_path / "out").exists()  # --no-plots writes nothing
    # drawing the pictures does not change the training
    assert cli.main([a for a in args if a != "--no-plots"]) == 0
    third = capsys.readouterr()
    results = lambda s: [l for l in s.splitlines() if "±" in l or "accuracy" in l]  # noqa
    assert results(third.out) == results(first.out)


@needs_estimator
def test_same_results_for_any_n_jobs(capsys):
    tables = []
    for n_jobs in ("1", "2"):
        assert cli.main(["--quick", "--no-plots", "-q", "--n-jobs", n_jobs]) == 0
        out = capsys.readouterr().out
        tables.append(_table_rows(out) + re.findall(r".*(?:refit|ensemble).*\d", out))
    assert tables[0] == tables[1]


@needs_estimator
def test_csv_with_string_labels_and_named_label_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = np.array(["setosa", "versicolor", "virginica"])
    y = np.arange(90) % 3
    X = rng.standard_normal((90, 3)) + 2.0 * np.eye(3)[y]
    path = tmp_path / "flowers.csv"
    with open(path, "w") as f:
        f.write("a,species,b,c\n")
        for row, label in zip(X, names[y]):
            f.write(f"{row[0]:.5f},{label},{row[1]:.5f},{row[2]:.5f}\n")
    rc = cli.main(["--csv", str(path), "--label-column", "species", "--quick",
                   "--no-plots", "--n-jobs", "1", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "72 training / 18 test samples, 3 features, 3 classes" in out
    assert len(_table_rows(out)) == 3


@needs_estimator
def test_without_matplotlib_prints_how_to_get_pictures(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plotting, "have_matplotlib", lambda: False)
    rc = cli.main(["--quick", "--n-jobs", "1", "-q", "--output-dir", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0
    assert 'pip install "fastoptim[plot]"' in out
    assert not (tmp_path / "o").exists()


def test_help_explains_the_options(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--csv", "--label-column", "--seed", "--folds", "--epochs", "--n-jobs",
                "--output-dir", "--quick", "--no-plots", "bench"):
        assert opt in out
    assert cli.main(["bench", "--help"]) == 0
    assert "--sizes" in capsys.readouterr().out


def test_bench_prints_a_table(capsys):
    assert cli.main(["bench", "--sizes", "100", "2000", "--kernels", "adam", "sgd_momentum",
                     "--dtypes", "float32", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert out.count("| kernel ") == 1  # one table
    rows = [l for l in out.splitlines() if re.match(r"^\| (adam|sgd_momentum) +\| float32", l)]
    assert len(rows) == 4
    # speed-up, GB/s, the probe's GB/s and % of it are filled in for every row
    assert all(re.search(r"\| [\d.]+x +\| [\d.]+ +\| [\d.]+ +\| \d+% +\|$", r) for r in rows)
    # rows grouped by kernel, sizes in order within each
    assert [r.split("|")[1].strip() for r in rows] == ["adam"] * 2 + ["sgd_momentum"] * 2
    assert [r.split("|")[3].strip() for r in rows] == ["100", "2,000"] * 2


def test_many_arrays_comparison_prints_three_rows(capsys):
    from fastoptim import bench
    times = bench.many_arrays_report([100, 2000, 30])
    out = capsys.readouterr().out
    assert "over 3 arrays (2,130 elements)" in out
    ratios = re.findall(r"\| ([\d.]+)x +\|$", out, re.M)
    assert len(ratios) == 3 and ratios[0] == "1.00"
    assert all(t > 0 for t in times)


# --------------------------------------------------------------------------- error paths
def test_missing_file_as_module(tmp_path):
    res = _run_module("--csv", str(tmp_path / "nope.csv"), "--no-plots", cwd=tmp_path)
    _assert_one_line_error(res.returncode, res.stderr, r"no such file: .*nope\.csv")
    assert res.stdout == ""


@pytest.mark.parametrize("content, pattern", [
    ("a,b,label\n1,2,x\n3,oops,y\n", r"line 3: column 'b' is not a number: 'oops'"),
    ("a,b,label\n1,2,x\n3,4\n", r"line 3: 2 fields, expected 3"),
    ("a,b,label\n", r"header only"),
    ("", r"is empty"),
    ("label\nx\ny\n", r"need at least one feature column"),
    ("a,label\nnan,x\n1,y\n", r"nan or inf"),
    ("a,label\n1,x\n2,x\n3,x\n", r"at least 2 classes"),
    ("a,label\n" + "".join(f"{i},{'x' if i < 20 else 'y'}\n" for i in range(22)),
     r"cannot split|fewer than --folds"),
])
def test_malformed_csv(tmp_path, capsys, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    rc = cli.main(["--csv", str(path), "--no-plots"])
    captured = capsys.readouterr()
    _assert_one_line_error(rc, captured.err, pattern)


def test_binary_garbage_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\xff\xfe\x00\x01\x80\x81garbage\n")
    rc = cli.main(["--csv", str(path)])
    _assert_one_line_error(rc, capsys.readouterr().err, r"cannot read|not a number|column")


def test_bad_label_column(tmp_path, capsys):
    path = tmp_path / "ok.csv"
    path.write_text("a,b,label\n1,2,x\n3,4,y\n")
    rc = cli.main(["--csv", str(path), "--label-column", "target"])
    _assert_one_line_error(rc, capsys.readouterr().err,
                           r"no column named 'target' \(columns: a, b, label\)")


def test_directory_and_option_errors(tmp_path, capsys):
    _assert_one_line_error(cli.main(["--csv", str(tmp_path)]), capsys.readouterr().err,
                           r"is a directory")
    _assert_one_line_error(cli.main(["--label-column", "y"]), capsys.readouterr().err,
                           r"--label-column needs --csv")
    _assert_one_line_error(cli.main(["--folds", "1"]), capsys.readouterr().err,
                           r"at least 2 folds")
    _assert_one_line_error(cli.main(["--epochs", "many"]), capsys.readouterr().err,
                           r"positive integer")
    _assert_one_line_error(cli.main(["--bogus"]), capsys.readouterr().err,
                           r"unrecognized arguments: --bogus")


def test_load_csv_reads_features_and_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeffx1, label ,x2\n1.5,cat,2\n-3,dog,4e1\n\n")
    X, y, features, label = cli.load_csv(str(path), " label ".strip())
    assert X.tolist() == [[1.5, 2.0], [-3.0, 40.0]]
    assert y.tolist() == ["cat", "dog"]
    assert features == ["x1", "x2"] and label == "label"


def test_rosenbrock_paths_use_fastoptims_functional_api():
    from fastoptim import reference

    paths = plotting.optimizer_paths(n_steps=300)
    assert set(paths) == {"Momentum", "RMSProp", "Adam"}
    for name, path in paths.items():
        assert path.shape == (301, 2)
        assert np.all(np.isfinite(path))
        f = plotting.rosenbrock(path[:, 0], path[:, 1])
        assert f[-1] < f[0]  # every optimizer makes progress from the same start
    # the same steps as the plain-NumPy reference rules
    p = np.array(plotting.ROSENBROCK_START, dtype=np.float64)
    m, v = np.zeros(2), np.zeros(2)
    for t in range(1, 301):
        reference.adam_(p, plotting.rosenbrock_grad(p), m, v, step=t,
                        **plotting.ROSENBROCK_SETTINGS["Adam"])
    assert np.allclose(paths["Adam"][-1], p, rtol=1e-9, atol=1e-12)
    assert np.allclose(plotting.rosenbrock_grad(np.array([1.0, 1.0])), 0.0)


@needs_estimator
def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    if not plotting.have_matplotlib():
        pytest.skip("pictures need matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc = cli.main(["--quick", "--n-jobs", "1", "-q", "--output-dir", str(blocker)])
    _assert_one_line_error(rc, capsys.readouterr().err, r"cannot (create|write)")


# ------------------------------------------------- the command driven with bad input
def _assert_clean_failure(res, pattern, status=2):
    """A failed run: the given status, one line on stderr naming the problem."""
    assert res.returncode == status, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("fastoptim") and ": error: " in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def _csv(rows):
    return "a,b,label\n" + "".join(f"{a},{b},{lab}\n" for a, b, lab in rows)


_ENOUGH = [(i % 7, i % 5, "xy"[i % 2]) for i in range(40)]  # 20 per class

BAD_FILES = [
    ("missing", None, [], r"no such file"),
    ("empty", "", [], r"is empty"),
    ("header only", "a,b,label\n", [], r"header only"),
    ("non-numeric", _csv([(1, 2, "x"), ("one", 2, "y")]), [], r"line 3: column 'a' is not a "
                                                              r"number: 'one'"),
    ("nan", _csv([(1, 2, "x"), ("nan", 2, "y")]), [], r"nan or inf"),
    ("inf", _csv([(1, "-inf", "x"), (1, 2, "y")]), [], r"nan or inf"),
    ("huge", _csv([(1.7e308, 1, "x"), (-1.7e308, 2, "y")] + _ENOUGH), [],
     r"too large to standardize .* 1\.7e\+308"),
    ("wrong label column", _csv(_ENOUGH), ["--label-column", "species"],
     r"no column named 'species'"),
    ("one class", _csv([(i, i, "x") for i in range(10)]), [], r"at least 2 classes"),
    ("ragged", "a,b,label\n1,2,x\n1,2\n", [], r"line 3: 2 fields, expected 3"),
    ("binary", b"\xff\xfe\x00garbage\x81\n", [], r"cannot read|not a number|column"),
]


@pytest.mark.parametrize("content, extra, pattern", [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_csv_files_from_the_command_line(tmp_path, content, extra, pattern):
    path = tmp_path / "data.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    res = _run_module("--csv", str(path), *extra, "--quick", "--no-plots", "-q",
                      "--n-jobs", "1", cwd=tmp_path)
    _assert_clean_failure(res, pattern)
    assert res.stdout == "" or "Traceback" not in res.stdout


BAD_FLAGS = [
    (["--folds", "1"], r"at least 2 folds"),
    (["--folds", "two"], r"positive integer"),
    (["--epochs", "0"], r"positive integer"),
    (["--epochs", "1e9999"], r"positive integer"),
    (["--n-jobs", "0"], r"must not be 0"),
    (["--n-jobs", "many"], r"expected an integer"),
    (["--test-size", "1.5"], r"--test-size must be between 0 and 1"),
    (["--test-size", "nan"], r"--test-size must be between 0 and 1"),
    (["--seed", "x"], r"invalid int value"),
    (["--seed", "-1"], r"--seed must be"),
    (["--bogus"], r"unrecognized arguments: --bogus"),
    (["--label-column", "y"], r"--label-column needs --csv"),
    (["--csv"], r"expected one argument"),
    (["bench", "--sizes", "0"], r"sizes must be between 1 and"),
    (["bench", "--sizes", "-1"], r"sizes must be between 1 and"),
    (["bench", "--sizes", str(10**12)], r"sizes must be between 1 and"),
    (["bench", "--sizes", "1e3x"], r"expected an array size"),
    (["bench", "--kernels", "lion"], r"invalid choice: 'lion'"),
]


@pytest.mark.parametrize("flags, pattern", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_from_the_command_line(tmp_path, flags, pattern):
    res = _run_module(*flags, "--no-plots" if flags[0] != "bench" else "--no-torch",
                      cwd=tmp_path)
    _assert_clean_failure(res, pattern)
    assert res.stdout == ""


def test_unwritable_output_dir_from_the_command_line(tmp_path):
    if not plotting.have_matplotlib():
        pytest.skip("pictures need matplotlib")
    if not _have_estimator():
        pytest.skip("fastoptim.nn.MLPClassifier not available")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = _run_module("--quick", "--folds", "2", "--epochs", "1", "--n-jobs", "1", "-q",
                      "--output-dir", str(blocker / "sub"), cwd=tmp_path)
    _assert_clean_failure(res, r"cannot (create|write).*file/sub")


def _popen(*args, cwd, **kwargs):
    env = subprocess_env()
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.Popen([sys.executable, "-m", "fastoptim", *args], cwd=cwd, env=env,
                            **kwargs)


@needs_estimator
def test_closed_pipe_exits_quietly(tmp_path):
    # as `fastoptim | head -1`: the reader takes one line and goes away
    proc = _popen("--quick", "--folds", "2", "--epochs", "1", "--n-jobs", "1", "-q",
                  "--no-plots", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert first.startswith(b"fastoptim: digits")
    assert proc.returncode == cli.EXIT_BROKEN_PIPE
    assert err == ""


@needs_estimator
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_on_stdout_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        proc = _popen("--quick", "--folds", "2", "--epochs", "1", "--n-jobs", "1", "-q",
                      "--no-plots", cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
                      text=True)
        err = proc.communicate(timeout=300)[1]
    _assert_clean_failure(subprocess.CompletedProcess([], proc.returncode, "", err),
                          r"cannot write the output: No space left on device", status=1)


@needs_estimator
def test_too_many_jobs_are_capped_with_a_note(tmp_path):
    import joblib

    res = _run_module("--quick", "--folds", "2", "--epochs", "1", "--n-jobs", str(2**70),
                      "-q", "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cores = joblib.cpu_count()
    assert res.stderr.strip().splitlines() == [
        f"fastoptim: note: --n-jobs: n_jobs={2**70} is more than the {cores} usable CPU "
        f"core(s); using {cores} workers"]
    assert f"on {cores} job(s)" in res.stdout
