"""What every runtime takes and gives: the test stage's request and result, the protocol the
local QEMU runtime (local.py) and a LAVA lab (lab.py) both implement, and the judging they
share: a kernel splat pinned on the test that was running, and the kernel log's own verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rig.core.model import BootEnvironment, BootRequest, ConsoleReport, Outcome, StageError
from rig.core.progress import Progress
from rig.guest import markers
from rig.guest.console import Patterns
from rig.results.schema import LabJob, SuiteInfo, TestResult, Verdict
from rig.runtime.suites.base import Limits, Staged, Suite

PASSING_OR_SKIPPED = frozenset({Verdict.PASSED, Verdict.XFAILED, Verdict.SKIPPED})
KERNEL_LOG = "kernel log"            # the id of a variant's kernel-log verdict


@dataclass(frozen=True)
class TestRequest:
    __test__ = False                 # not a pytest test class, whatever its name says

    boot: BootRequest
    suites: tuple[tuple[Suite, Staged], ...]    # in the order they run
    who: str                         # the variant, for progress and console log names
    console_dir: Path
    limits: Limits = field(default_factory=Limits)
    # reboots after crashes before the rig gives up; crash patterns (crashes.py) stop a kind
    # of test long before, so this only bounds crashes that show no pattern
    max_crashes: int = 12
    restore: bool = True             # a crash or hang restores the guest saved once ready


@dataclass
class TestStageResult:
    __test__ = False                 # not a pytest test class, whatever its name says

    outcome: Outcome
    tests: list[TestResult] = field(default_factory=list)
    suites: list[SuiteInfo] = field(default_factory=list)
    errors: list[StageError] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    boot: BootEnvironment | None = None          # what the (last) boot reported
    kernel_release: str = ""                     # uname -r in the guest
    console: str = ""                            # excerpts of what went wrong on the console
    lab: str = ""                                # the lab that ran it (rig/runtime/lab.py), if any
    test_times: dict[str, float] = field(default_factory=dict)  # console name: seconds
    lab_jobs: list[LabJob] = field(default_factory=list)


class Runtime(Protocol):
    """Where a variant's tests run: boot it, run every suite, give what came back; never
    raises for trouble with the guest or the lab (that is the result's outcome)."""

    def run_tests(self, req: TestRequest, progress: Progress) -> TestStageResult: ...


def suite_timing(name: str) -> str:
    """The timings key of one suite's time in the guest."""
    return f"tests:{name}"


def pin_splats(splats: list[ConsoleReport], console: str, token: str, suite: Suite,
               tests: list[TestResult]) -> list[str]:
    """Fail the test of TESTS each splat came in (the suite's markers with the boot's TOKEN
    in CONSOLE, the console of its run, say which test was running); the excerpts no test
    owns."""
    console = markers.trusted(console, token)
    timestamp = Patterns.load().timestamp
    by_id = {t.id: t for t in tests}
    unowned = []
    for splat in splats:
        first = splat.excerpt.splitlines()[0] if splat.excerpt else ""
        at = console.find(first) if first and splat.attributable else -1
        key = suite.running_test(console[:at]) if at >= 0 else None
        test = by_id.get(suite.test_id(key)) if key else None
        if test is None:
            unowned.append(splat.excerpt)
            continue
        said = timestamp.sub("", first)
        if not any(said in line for line in test.kmsg):
            test.kmsg += splat.excerpt.splitlines()
        if test.verdict in PASSING_OR_SKIPPED:
            test.message = f"kernel splat during the test: {first}"
            test.verdict = Verdict.FAILED
        test.details = "\n".join(filter(None, [test.details, splat.excerpt]))
    return unowned


def kernel_log_verdict(splats: list[str], suite: str) -> TestResult:
    """One result for the splats no test owns (between tests, or a watchdog's): the kernel
    under test printed them, so they compare like any test; it goes with SUITE."""
    found = len(splats)
    return TestResult(
        KERNEL_LOG, "kernel_log", "", "", Verdict.FAILED if found else Verdict.PASSED,
        f"{found} kernel splat(s) outside any test: {splats[0].splitlines()[0]}"
        if found else "", "\n\n".join(splats),
        "The kernel log shows no splat outside the tests (contract 5).",
        {"splats_outside_tests": found}, suite=suite)
