"""Hostile input for every public entry point, each entry in child processes.

tests/_hostile.py generates the cases (see its docstring for the contract).  A child that
dies (segfault, abort) fails the test naming the case it was running; the harness then
starts a new child after that case, so one crash does not hide the next.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _hostile  # noqa: E402

ENTRIES = sorted(_hostile.discover())
MAX_RESTARTS = 20


def run_child(entry):
    """All cases of one entry: (results, crashes)."""
    results, crashes, start = [], [], 0
    env = subprocess_env(PYTHONPATH=HERE, OMP_NUM_THREADS="2", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], HERE])
    for _ in range(MAX_RESTARTS):
        proc = subprocess.run([sys.executable, os.path.join(HERE, "_hostile.py"), entry,
                               str(start)], capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(HERE) if False else "/", timeout=1800)
        started, n_cases = None, None
        for line in proc.stdout.splitlines():
            msg = json.loads(line)
            if "missing_recipe" in msg:
                return [{"status": "fail", "case": entry,
                         "detail": "no recipe: add one in tests/_hostile.py"}], []
            if "n_cases" in msg:
                n_cases = msg["n_cases"]
            elif "start" in msg:
                started = msg
            elif "end" in msg:
                results.append(msg)
                started = None
        if proc.returncode == 0:
            return results, crashes
        if started is None:
            crashes.append(f"child exited {proc.returncode} outside a case: "
                           f"{proc.stderr[-1500:]}")
            return results, crashes
        crashes.append(f"{started['case']}: the interpreter died (exit {proc.returncode}) "
                       f"{proc.stderr[-300:]}")
        start = started["start"] + 1
        if n_cases is not None and start >= n_cases:
            return results, crashes
    crashes.append(f"more than {MAX_RESTARTS} crashes; stopped")
    return results, crashes


@pytest.mark.parametrize("entry", ENTRIES)
def test_hostile_inputs(entry):
    results, crashes = run_child(entry)
    failures = crashes + [f"{r['case']}: {r['detail']}" for r in results
                          if r["status"] == "fail"]
    assert results or crashes, f"{entry}: no case ran"
    assert not failures, f"{len(failures)} of {len(results) + len(crashes)} cases failed:\n" + \
        "\n".join(failures[:40])


def test_every_public_entry_point_is_covered():
    """The list comes from the __all__s: a new public name must get a recipe."""
    names = {e.rsplit(".", 1)[-1] for e in ENTRIES}
    for expected in ("adam_", "step", "load_state_dict", "fit", "save", "load", "main"):
        assert expected in names
