"""pytest plugin for tests/test_sklearn_own_mlp_tests.py: runs scikit-learn's own MLP test
module with fastoptim's MLPClassifier / MLPRegressor in place of scikit-learn's, and writes
each test's outcome to the JSON file named by FASTOPTIM_SKLEARN_OUTCOMES."""

import importlib
import json
import os

import pytest

_outcomes = {}


def pytest_configure(config):
    import fastoptim
    module = importlib.import_module("sklearn.neural_network.tests.test_mlp")
    module.MLPClassifier = fastoptim.MLPClassifier
    module.MLPRegressor = fastoptim.MLPRegressor


def pytest_collection_finish(session):
    import fastoptim
    module = importlib.import_module("sklearn.neural_network.tests.test_mlp")
    if module.MLPClassifier is not fastoptim.MLPClassifier:
        raise pytest.UsageError("the test module was imported again, unpatched")


def pytest_runtest_logreport(report):
    # a test's outcome: its call's, or its setup's when that failed or skipped
    if report.when == "call" or report.outcome != "passed":
        _outcomes.setdefault(report.nodeid.split("::")[-1], report.outcome)


def pytest_sessionfinish(session):
    with open(os.environ["FASTOPTIM_SKLEARN_OUTCOMES"], "w") as f:
        json.dump(_outcomes, f)
