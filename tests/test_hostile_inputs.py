"""Hostile input for every public entry point, each entry in child processes.

tests/_hostile.py generates the cases (see its docstring for the contract).  A child that
dies (segfault, abort) fails the test naming the case it was running; the harness then
starts a new child after that case, so one crash does not hide the next.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _hostile  # noqa: E402

ENTRIES = sorted(_hostile.discover())
MAX_RESTARTS = 20


def _child_env():
    env = subprocess_env(PYTHONPATH=HERE, OMP_NUM_THREADS="2", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], HERE])
    return env


class ForkServer:
    """One `_hostile.py --serve` process for the whole module: each entry runs in a child
    it forks, so torch (with torch._dynamo) and fastoptim are imported once, not once
    per entry (~5 s each for the ~200 fastoptim.torch entries).  run() returns what a
    child process would: (stdout lines, exit code, stderr tail)."""

    def __init__(self):
        self.log = tempfile.TemporaryFile()  # bytes: a tail may cut a UTF-8 character
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_hostile.py"),
                                      "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=_child_env(), cwd="/")
        ready = self.proc.stdout.readline()
        if not ready.startswith('{"ready"'):
            self.close()
            raise RuntimeError(f"the fork server did not start: {ready!r} "
                               f"{self._stderr_tail()}")

    def _stderr_tail(self):
        # read between entries only, while the server waits: the file's offset is shared
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 1500))
        return self.log.read().decode("utf-8", "replace")

    def run(self, entry, start):
        self.proc.stdin.write(json.dumps({"entry": entry, "start": start}) + "\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "exit" in msg:
                return lines, msg["exit"], self._stderr_tail()
            lines.append(line)
        raise RuntimeError(f"the fork server died: {self._stderr_tail()}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def server():
    if not hasattr(os, "fork"):
        yield None
        return
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


def _run_process(entry, start):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "_hostile.py"), entry,
                           str(start)], capture_output=True, text=True, env=_child_env(),
                          cwd="/", timeout=1800)
    return proc.stdout.splitlines(), proc.returncode, proc.stderr


def run_child(entry, server=None):
    """All cases of one entry, in forked children of `server` or in new processes:
    (results, crashes)."""
    results, crashes, start = [], [], 0
    for _ in range(MAX_RESTARTS):
        lines, returncode, stderr = (server.run(entry, start) if server is not None
                                     else _run_process(entry, start))
        started, n_cases = None, None
        for line in lines:
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
        if returncode == 0:
            return results, crashes
        if started is None:
            crashes.append(f"child exited {returncode} outside a case: {stderr[-1500:]}")
            return results, crashes
        crashes.append(f"{started['case']}: the interpreter died (exit {returncode}) "
                       f"{stderr[-300:]}")
        start = started["start"] + 1
        if n_cases is not None and start >= n_cases:
            return results, crashes
    crashes.append(f"more than {MAX_RESTARTS} crashes; stopped")
    return results, crashes


@pytest.mark.parametrize("entry", ENTRIES)
def test_hostile_inputs(entry, server):
    results, crashes = run_child(entry, server)
    failures = crashes + [f"{r['case']}: {r['detail']}" for r in results
                          if r["status"] == "fail"]
    assert results or crashes, f"{entry}: no case ran"
    assert not failures, f"{len(failures)} of {len(results) + len(crashes)} cases failed:\n" + \
        "\n".join(failures[:40])


@pytest.mark.parametrize("forked", [True, False], ids=["fork-server", "new-process"])
def test_a_crash_is_reported_naming_its_case(forked, server):
    if forked and server is None:
        pytest.skip("no os.fork here")
    results, crashes = run_child(_hostile.CRASH_ENTRY, server if forked else None)
    assert results == []
    assert len(crashes) == 1 and crashes[0].startswith(
        f"{_hostile.CRASH_ENTRY}: the interpreter died (exit -{int(signal.SIGSEGV)})")
    if forked:  # and the server still serves
        assert run_child(ENTRIES[0], server)[0]


def test_every_public_entry_point_is_covered():
    """The list comes from the __all__s: a new public name must get a recipe."""
    names = {e.rsplit(".", 1)[-1] for e in ENTRIES}
    for expected in ("adam_", "step", "load_state_dict", "fit", "save", "load", "main"):
        assert expected in names
