"""scikit-learn's own MLP tests (sklearn/neural_network/tests/test_mlp.py, shipped in its
wheel) run against fastoptim's MLPClassifier / MLPRegressor: a drop-in passes them.  The
tests that do not pass would be listed in KNOWN with the reason (none today); every other
one must pass."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import subprocess_env

pytest.importorskip("sklearn")

# test name (parametrization stripped) -> why it does not pass against fastoptim
KNOWN = {}


def _base(name):
    return name.split("[")[0]


@pytest.mark.skipif(importlib.util.find_spec("sklearn.neural_network.tests") is None,
                    reason="this scikit-learn install does not ship its tests")
def test_sklearn_mlp_test_module_passes(tmp_path):
    outcomes_file = tmp_path / "outcomes.json"
    here = os.path.dirname(os.path.abspath(__file__))
    env = subprocess_env(FASTOPTIM_SKLEARN_OUTCOMES=str(outcomes_file))
    env["PYTHONPATH"] = os.pathsep.join([here, env["PYTHONPATH"]])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "_sklearn_mlp_plugin", "--pyargs", "sklearn.neural_network.tests.test_mlp"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert outcomes_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = json.loads(outcomes_file.read_text())
    assert sum(o == "passed" for o in outcomes.values()) >= 50, outcomes
    unexpected = sorted(n for n, o in outcomes.items()
                        if o != "passed" and _base(n) not in KNOWN)
    assert not unexpected, (unexpected, proc.stdout[-6000:])
    # a listed test that now passes leaves the list
    stale = sorted(k for k in KNOWN if all(o == "passed" for n, o in outcomes.items()
                                           if _base(n) == k))
    assert not stale, stale
