"""A sandboxed step runs within sandbox.toml's limits: wall time, file size, free disk and
processes (issue 19, class 4).  Each hostile step here is a shell line in the real sandbox."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest
from support.sandboxes import SETTINGS, needs_sandbox

from rig.core import proc
from rig.core.cache import Cache
from rig.core.model import BuildSettings
from rig.core.progress import Progress
from rig.flows.config import project_root
from rig.kernel import sandbox
from rig.kernel.build import Builder, MakeStep, _Failed

pytestmark = needs_sandbox


def _box(tmp_path: Path, **limits) -> sandbox.Box:
    settings = dataclasses.replace(SETTINGS, limits=dataclasses.replace(
        SETTINGS.limits, check_every=0.2, **limits))
    return sandbox.Box(settings, writable=(tmp_path,))


def test_the_limits_are_data():
    assert SETTINGS.limits.seconds > 0 and SETTINGS.limits.processes > 0
    assert SETTINGS.limits.file_size >= 1024 * proc.MIB and SETTINGS.limits.disk_free > 0


def test_a_step_past_its_time_is_killed_with_everything_it_started(tmp_path):
    start = time.monotonic()
    with pytest.raises(proc.LimitExceeded) as err:     # the background sleep holds the pipe
        proc.run(["sh", "-c", "echo started; sleep 30 & sleep 30"], "build",
                 sandbox=_box(tmp_path, seconds=1))
    assert time.monotonic() - start < 10
    assert err.value.reason == "timed out after 1 s"
    assert str(err.value) == "build: timed out after 1 s" and err.value.excerpt == "started"


def test_a_build_past_its_time_is_a_failed_build_with_the_log_tail(tmp_path):
    driver = tmp_path / "driver"
    shutil.copytree(project_root() / "guest_tests" / "driver", driver)
    builder = Builder(BuildSettings(driver), Cache(tmp_path / "cache"), Progress(live=False))
    script = "for i in 1 2 3; do echo CC mm/gup$i.o; done; sleep 30"
    step = MakeStep("build", ("sh", "-c", script), (tmp_path,), (), ())
    box = _box(tmp_path, seconds=1)
    log = tmp_path / "build.log"
    with pytest.raises(_Failed) as err, builder.cores.slot() as jobs:
        builder._make(step, log, "v", box.settings, jobs)
    failure = err.value.failure
    assert isinstance(failure, proc.LimitExceeded) and failure.reason == "timed out after 1 s"
    assert failure.excerpt.splitlines()[-1] == "CC mm/gup3.o" and failure.log == log


def test_a_file_past_the_size_limit_is_not_written(tmp_path):
    with pytest.raises(proc.CommandFailed):
        proc.run(["sh", "-c", f"head -c 3M /dev/zero > {tmp_path}/big"], "build",
                 sandbox=_box(tmp_path, file_size=proc.MIB))
    assert (tmp_path / "big").stat().st_size <= proc.MIB


def test_a_step_is_not_started_on_a_disk_too_full(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(proc.LimitExceeded, match=rf"build: not started: \d+ MiB free on the "
                                                 rf"file system of {tmp_path}, \d+ MiB needed"):
        proc.run(["touch", str(tmp_path / "x")], "build",
                 sandbox=_box(tmp_path, disk_free=free + 1024 * proc.MIB))
    assert not (tmp_path / "x").exists()


def test_a_step_filling_the_disk_is_stopped_before_it_is_full(tmp_path):
    margin = 200 * proc.MIB                     # the step writes twice as much, then waits
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(proc.LimitExceeded, match=r"build: stopped before the disk is full: "
                                                 r"\d+ MiB free .* \d+ MiB needed"):
        proc.run(["sh", "-c", f"head -c 400M /dev/zero > {tmp_path}/fill; sleep 30"], "build",
                 sandbox=_box(tmp_path, disk_free=free - margin))


def test_a_fork_bomb_stops_at_the_process_limit(tmp_path):
    script = "for i in $(seq 200); do sleep 5 & echo $i; done"     # 200 sleepers, limit 50
    ran = proc.run(["sh", "-c", script], "build", sandbox=_box(tmp_path, processes=50),
                   check=False)
    assert ran.status != 0 and "fork" in ran.stderr.lower()
    assert int(ran.stdout.split()[-1]) < 50
