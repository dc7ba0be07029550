"""The builds' shared jobserver, with the real make: how many jobs run at once."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from support.sandboxes import SETTINGS, needs_sandbox

from rig.core import proc
from rig.kernel import sandbox
from rig.kernel.jobserver import Jobserver

# Each job writes when it started and ended (monotonic ns, the same clock as the test's).
MAKEFILE = """\
JOBS := $(addprefix job,1 2 3 4 5 6)
all: $(JOBS)
$(JOBS):
\t@python3 -c 'import time; print(time.monotonic_ns())' > $(OUT)/$@.start
\t@sleep 0.4
\t@python3 -c 'import time; print(time.monotonic_ns())' > $(OUT)/$@.end
"""

needs_make = pytest.mark.skipif(not shutil.which("make"), reason="no make here")


def _project(tmp_path: Path, name: str) -> Path:
    top = tmp_path / name
    (top / "out").mkdir(parents=True)
    (top / "Makefile").write_text(MAKEFILE)
    return top


def _make(top: Path, jobs, box=None) -> None:
    proc.run(["make", "-C", str(top), f"OUT={top / 'out'}"], "build",
             env={"MAKEFLAGS": jobs.makeflags}, pass_fds=jobs.fds, sandbox=box)


def _intervals(*tops: Path) -> list[tuple[int, int]]:
    return [(int((t / "out" / f"job{i}.start").read_text()),
             int((t / "out" / f"job{i}.end").read_text())) for t in tops for i in range(1, 7)]


def _most_at_once(intervals: list[tuple[int, int]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _sandbox(top: Path) -> sandbox.Box:
    return sandbox.Box(SETTINGS, (top,), ())


@needs_make
def test_a_lone_build_runs_every_token(tmp_path):
    top = _project(tmp_path, "lone")
    with Jobserver(3).slot() as jobs:
        _make(top, jobs)
    assert _most_at_once(_intervals(top)) == 3


@needs_make
@needs_sandbox
def test_two_builds_at_once_run_no_more_jobs_than_tokens_together(tmp_path):
    """One of them in a series' sandbox: the pipe reaches make there too."""
    cores = Jobserver(2)
    one, two = _project(tmp_path, "one"), _project(tmp_path, "two")

    def build(top: Path, box) -> None:
        with cores.slot() as jobs:
            _make(top, jobs, box)

    threads = [threading.Thread(target=build, args=(one, None)),
               threading.Thread(target=build, args=(two, _sandbox(two)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together, alone = _intervals(one, two), _intervals(two)
    assert _most_at_once(together) == 2
    # both ran: the sandboxed make took part, rather than waiting for the other to end
    assert min(s for s, _ in alone) < max(e for _, e in _intervals(one))


def test_a_build_waits_for_a_token_and_is_told_once(tmp_path):
    cores = Jobserver(1)
    said: list[str] = []
    started = threading.Event()

    def second() -> None:
        with cores.slot(lambda: said.append("waiting")):
            started.set()

    with cores.slot():
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not started.wait(1.5)
    waiter.join(5)
    assert started.is_set() and said == ["waiting"]


@needs_make
@needs_sandbox
@pytest.mark.parametrize("hostile", ["os.read(READ, 2)",              # keeps two tokens
                                     "os.write(WRITE, b'+' * 8)"],    # forges eight
                         ids=["keeps-tokens", "forges-tokens"])
def test_what_a_hostile_build_did_to_the_tokens_ends_with_it(tmp_path, hostile):
    cores = Jobserver(2)
    with cores.slot() as jobs:
        read, write = jobs.fds
        script = hostile.replace("READ", str(read)).replace("WRITE", str(write))
        proc.run(["python3", "-c", f"import os; {script}"], "build", pass_fds=jobs.fds,
                 sandbox=_sandbox(tmp_path))
    top = _project(tmp_path, "next")
    with cores.slot() as jobs:
        _make(top, jobs)
    assert _most_at_once(_intervals(top)) == 2


def test_a_builders_pipe_is_closed_with_it():
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        Jobserver(2)
    assert len(os.listdir("/proc/self/fd")) == before
