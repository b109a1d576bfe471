"""Checks on the Cython kernel sources that no run can be relied on to catch.

Inside a Cython `with parallel` block only the variables the block assigns are private
to each OpenMP thread; a variable it only reads, or only passes by address (`&lo`), is
one variable shared by the whole team.  A helper that writes per-thread results through
such a pointer is a data race: both threads write the same `lo`, and one of them then
processes the other's chunk.  That race shows only when a thread is preempted at the
wrong instant, so a timing-dependent test cannot be trusted to catch it; this reads
the sources instead.
"""
import re
from pathlib import Path

import pytest

_SOURCE_DIR = Path(__file__).resolve().parents[1] / "fastoptim"
if not (_SOURCE_DIR / "_kernels.pxi").is_file():
    # The tests run against an installed wheel from a copy of tests/ (CI does): the
    # sources are checked in the run from the source tree.
    pytest.skip("no kernel sources next to tests/", allow_module_level=True)
SOURCES = sorted(p for p in _SOURCE_DIR.iterdir()
                 if p.name.endswith((".pxi", ".pyx", ".pxi.tp")))

_BLOCK_START = re.compile(r"^(\s*)with\s+(nogil\s*,\s*)?parallel\s*\(")
_ADDRESS_OF = re.compile(r"&\s*([A-Za-z_]\w*)\b(?!\s*[\[.])")


def _parallel_blocks(text):
    """Yield (first line number, body lines) of every `with parallel(...)` block."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _BLOCK_START.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        body = []
        for other in lines[i + 1:]:
            stripped = other.strip()
            if stripped and len(other) - len(other.lstrip()) <= indent:
                break
            body.append(other)
        yield i + 1, body


def _assigned_names(body):
    names = set()
    for line in body:
        code = line.split("#", 1)[0]
        for m in re.finditer(r"^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:[-+*/]?=)(?!=)",
                             code):
            names.update(n.strip() for n in m.group(1).split(","))
        for m in re.finditer(r"\bfor\s+([A-Za-z_]\w*)\s+in\b", code):
            names.add(m.group(1))
    return names


def test_sources_were_found():
    # The check below must not pass by reading nothing.
    assert any(p.name == "_kernels.pxi" for p in SOURCES)
    assert sum(1 for p in SOURCES for _ in _parallel_blocks(p.read_text())) >= 5


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_parallel_blocks_pass_no_shared_variable_by_address(path):
    offenders = []
    for start, body in _parallel_blocks(path.read_text()):
        private = _assigned_names(body)
        for offset, line in enumerate(body, start=start + 1):
            code = line.split("#", 1)[0]
            for m in _ADDRESS_OF.finditer(code):
                if m.group(1) not in private:
                    offenders.append(f"{path.name}:{offset}: &{m.group(1)}")
    assert not offenders, ("a `with parallel` block passes a variable it never assigns by "
                           "address (shared by all threads): " + ", ".join(offenders))


def test_the_check_catches_the_race_it_is_for():
    racy = (
        "    with parallel(num_threads=n):\n"
        "        tid = threadid()\n"
        "        _share(n, tid, &lo, &hi)\n"
        "        _apply(&slots[k], lo, hi)\n"
    )
    (start, body), = _parallel_blocks(racy)
    private = _assigned_names(body)
    found = {m.group(1) for line in body for m in _ADDRESS_OF.finditer(line)} - private
    assert found == {"lo", "hi"}
