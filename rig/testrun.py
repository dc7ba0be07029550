"""The guest test stage: upload the suite and the driver, run pytest in the guest, collect.

A test that panics, hangs or kills the guest loses the JUnit file with it, so the rig marks
each test's start and end in the kernel log (guest_plugin/rig_markers.py); the serial console
carries those lines out.  The test that was running is recorded as crashed with the console
excerpt, and the guest is booted again to run the suite without it, up to a crash limit.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import junit
from .guest import BootError, GuestCrashed, boot
from .model import BootRequest, Outcome, StageError
from .progress import Progress
from .results import TestResult, Verdict
from .status import RigError

GUEST_DIR = "/root/guest_tests"
GUEST_KO = f"{GUEST_DIR}/driver/umem_test.ko"   # where the suite looks for it by default
GUEST_XML = "/tmp/rig-results.xml"
PYTEST_NO_TESTS = 5                  # pytest's exit status when nothing was collected
HANG_MARGIN = 30.0                   # seconds of console silence beyond a test's own limit
PLUGIN = Path(__file__).parent / "guest_plugin" / "rig_markers.py"
_MARK = re.compile(r"umem-rig: test (start|end) (\S+)")
_SKIP_UPLOAD = shutil.ignore_patterns("__pycache__", "*.o", "*.ko", "*.mod*", "*.cmd",
                                      "Module.symvers", "modules.order", ".pytest_cache")


@dataclass(frozen=True)
class SuiteRequest:
    suite: Path                      # guest_tests/
    module: Path | None              # the variant's umem_test.ko
    test_timeout: float = 60
    suite_timeout: float = 1200
    select: str = ""                 # a pytest -k expression; "": every test
    max_crashes: int = 4


@dataclass
class SuiteResult:
    outcome: Outcome
    tests: list[TestResult] = field(default_factory=list)
    errors: list[StageError] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    console: str = ""                # excerpts of what went wrong on the console


class SelectError(RigError):
    """A test selection that matches nothing: the user's input, not the kernel's fault."""


def running_test(console_text: str) -> str | None:
    """The node id of the test that started and never ended, per the console markers."""
    open_test = None
    for kind, node in _MARK.findall(console_text):
        open_test = node if kind == "start" else (None if node == open_test else open_test)
    return open_test


def stage_suite(suite: Path, into: Path) -> Path:
    staged = into / "guest_tests"
    shutil.copytree(suite, staged, ignore=_SKIP_UPLOAD)
    shutil.copy2(PLUGIN, staged / PLUGIN.name)
    return staged


def pytest_command(req: SuiteRequest, deselect: list[str]) -> str:
    args = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-p", "rig_markers",
            f"--junitxml={GUEST_XML}", "-o", "junit_family=xunit1", "-q", "-rN"]
    args += [a for node in deselect for a in ("--deselect", node)]
    args += ["-k", req.select] if req.select else []
    env = f"PYTHONPATH={GUEST_DIR} UMEM_TEST_KO={GUEST_KO} UMEM_TEST_TIMEOUT={req.test_timeout:g}"
    # The outer `timeout` ends a suite stuck in userspace; a stuck kernel is caught by the
    # host's own deadline on the command.
    return (f"cd {GUEST_DIR} && {env} timeout -s KILL {req.suite_timeout:g} "
            + " ".join(shlex.quote(a) for a in args))


def run_suite(boot_req: BootRequest, req: SuiteRequest, progress: Progress, who: str,
              console_dir: Path, scratch: Path) -> SuiteResult:
    """Boot, run the suite, and reboot past crashing tests; never raises for guest trouble.
    SCRATCH is a private directory for the files staged for upload."""
    result = SuiteResult(Outcome.OK)
    crashed: dict[str, tuple[str, str]] = {}     # node id -> (message, console excerpt)
    staged = stage_suite(req.suite, scratch)
    for attempt in range(req.max_crashes + 1):
        log = console_dir / (f"{who}.console.log" if attempt == 0
                             else f"{who}.console.{attempt}.log")
        boot_req.console_log = log
        outcome = _one_boot(boot_req, req, staged, sorted(crashed), result, crashed,
                            progress, who, scratch, first=attempt == 0)
        if outcome is not None:
            result.outcome = outcome
            break
    else:
        result.errors.append(StageError("tests", f"gave up after {req.max_crashes} crashes"))
        result.outcome = Outcome.TESTS_RAN
    result.tests += [junit.host_result(node.split("::")[-1], Verdict.CRASHED, message, excerpt,
                                       known=result.tests)
                     for node, (message, excerpt) in crashed.items()]
    if crashed and result.outcome is Outcome.OK:
        result.outcome = Outcome.TESTS_RAN
    return result


def _one_boot(boot_req, req, staged, deselect, result, crashed, progress, who, tmp,
              first) -> Outcome | None:
    """One boot and suite run.  Returns the final outcome, or None to boot again."""
    start = time.monotonic()
    try:
        with progress.stage(who, "boot"), boot(boot_req, say=progress.log) as guest:
            _add(result.timings, "boot", guest.boot_seconds)
            result.environment.update(guest.environment)
            boot_req.accel = guest.accel        # a reboot need not probe KVM again
            with progress.stage(who, "tests") as timing:
                guest.put(staged, GUEST_DIR)
                if req.module is not None:
                    guest.put(req.module, GUEST_KO)
                uname = guest.run("uname -r", timeout=30)
                result.environment["kernel_release"] = uname.stdout.strip()
                progress.detail(who, "pytest")
                # Each test logs its start and end on the console, so a console quiet for
                # longer than a test may take means a test is stuck in the kernel.
                run = guest.run(pytest_command(req, deselect), timeout=req.suite_timeout + 60,
                                silence=req.test_timeout + HANG_MARGIN)
                if run.timed_out or run.status == 137:
                    node = running_test(guest.console_log.read_text(errors="replace"))
                    return _crash(node, f"hung: {run.stderr or 'the suite did not finish'}",
                                  guest.console.tail(), result, crashed)
                local = tmp / "results.xml"
                try:
                    guest.get(GUEST_XML, local)
                except Exception as exc:  # noqa: BLE001 - any transfer failure is the same
                    result.errors.append(StageError(
                        "tests", f"pytest exited {run.status} and wrote no JUnit file: {exc}",
                        (run.stdout + run.stderr)[-3000:]))
                    return Outcome.TESTS_RAN
            _add(result.timings, "tests", timing.get("seconds", 0.0))
            if run.status == PYTEST_NO_TESTS and req.select and first:
                raise SelectError(f"--select {req.select!r} matches no test of the guest suite")
            result.tests = junit.parse(local)
            for splat in guest.console.splats():
                result.console += splat.excerpt + "\n"
            if run.status not in (0, 1):
                result.errors.append(StageError("tests", f"pytest exited {run.status}",
                                                (run.stdout + run.stderr)[-3000:]))
                return Outcome.TESTS_RAN
            return Outcome.OK if not crashed else Outcome.TESTS_RAN
    except GuestCrashed as exc:
        node = running_test(boot_req.console_log.read_text(errors="replace"))
        return _crash(node, f"the guest died: {exc.report.event.value}", exc.report.excerpt,
                      result, crashed)
    except BootError as exc:
        _add(result.timings, "boot", time.monotonic() - start)
        result.errors.append(exc.stage_error())
        result.console += exc.report.excerpt if exc.report else ""
        # A kernel that never came up has no verdict; one that crashed in a test and then
        # would not come back still has the verdicts it gave.
        return exc.outcome if first else Outcome.TESTS_RAN


def _crash(node: str | None, message: str, excerpt: str, result: SuiteResult,
           crashed: dict[str, tuple[str, str]]) -> Outcome | None:
    result.console += excerpt + "\n"
    if node is None or node in crashed:
        result.errors.append(StageError("tests", f"{message}, outside any test", excerpt))
        return Outcome.TESTS_RAN
    crashed[node] = (message, excerpt)
    return None


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
