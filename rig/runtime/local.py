"""The guest test stage: boot the variant, run the chosen suites in it one by one, collect.

A test that panics, hangs or kills the guest loses what its suite would have reported with it,
so every suite marks each test's start and end in the kernel log (rig/runtime/suites/), and the
serial console carries those lines out.  The test that was running is recorded as crashed
with the console excerpt, the guest is restored as the first boot saved it once ready (or,
where it could not be saved, booted again), and that suite runs once more without it (the
suites before it are done, those after it come next), up to a crash limit.  A kernel splat
that leaves the guest running (WARN, BUG, lockdep...) is pinned on the test the console says
was running then, which fails with it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from rig.core.model import (
    ConsoleEvent,
    Outcome,
    StageError,
)
from rig.core.progress import Progress
from rig.guest import markers, sysrq
from rig.guest.console import Console
from rig.guest.machine import BootError, Guest, GuestCrashed, Snapshot, boot
from rig.results.schema import SuiteInfo, TestResult, Verdict
from rig.runtime import hang_limits
from rig.runtime.base import (
    TestRequest,
    TestStageResult,
    kernel_log_verdict,
    pin_splats,
    suite_timing,
)
from rig.runtime.crashes import CrashPolicy, Stops
from rig.runtime.suites.base import (
    Hung,
    Staged,
    Suite,
    SuiteReport,
    console_since,
)


class Local:
    """The runtime on this machine: the variant boots in QEMU here (a Runtime)."""

    def run_tests(self, req: TestRequest, progress: Progress) -> TestStageResult:
        """Boot, run every suite, and restore (or reboot) past crashing tests."""
        return _Stage(req, progress).run()


class _Stage:
    """One variant's test stage: the suites still to run and what the others gave."""

    def __init__(self, req: TestRequest, progress: Progress):
        self.req = req
        self.progress = progress
        self.result = TestStageResult(Outcome.OK)
        self.boot_req = req.boot
        self.pending = list(req.suites)
        self.reports: dict[str, SuiteReport] = {}
        self.crashed: dict[str, dict[str, tuple[str, str]]] = {s.name: {} for s, _ in req.suites}
        self.salvaged: dict[str, list[TestResult]] = {s.name: [] for s, _ in req.suites}
        # tests that ran to their end in a boot a crash then took down, results and all
        self.survived: dict[str, set[str]] = {s.name: set() for s, _ in req.suites}
        self.broken: set[str] = set()     # suites that died outside a test: not run again
        self.patterns = {s.name: CrashPolicy() for s, _ in req.suites}
        self.kernel_log: list[str] = []   # splats no test owns: the kernel-log verdict
        self.boot_error: BootError | None = None
        self.marker_token = ""            # the boot's (rig/guest/markers.py): none, no marker believed

    def run(self) -> TestStageResult:
        # the first boot's ready guest, restored after a crash or hang instead of a new boot
        with contextlib.closing(Snapshot(self.boot_req.workdir)) if self.req.restore else \
                contextlib.nullcontext() as snapshot:
            for attempt in range(self.req.max_crashes + 1):
                name = f"{self.req.who}.console.log" if attempt == 0 else \
                    f"{self.req.who}.console.{attempt}.log"
                self.boot_req = replace(self.boot_req, console_log=self.req.console_dir / name)
                outcome = self._boot(snapshot, first=attempt == 0)
                if outcome is not None:
                    self.result.outcome = outcome
                    break
            else:
                self.result.errors.append(
                    StageError("tests", f"gave up after {self.req.max_crashes} crashes"))
                self.result.outcome = Outcome.TESTS_RAN
        self._collect()
        return self.result

    def _boot(self, snapshot: Snapshot | None, first: bool) -> Outcome | None:
        """One boot (or restore) running the pending suites.  The final outcome, or None to
        boot again."""
        start = time.monotonic()
        suite: Suite | None = None
        console: Console | None = None
        mark = 0
        try:
            with self.progress.stage(self.req.who, "boot"), \
                    boot(self.boot_req, say=self.progress.log, snapshot=snapshot) as guest:
                _add(self.result.timings, "restore" if guest.restored else "boot",
                     guest.boot_seconds)
                if first and snapshot is not None and snapshot.saved:
                    _add(self.result.timings, "snapshot", snapshot.save_seconds)
                self.marker_token = guest.marker_token
                console = guest.console
                self.result.boot = guest.environment
                # a reboot need not probe KVM again
                self.boot_req = replace(self.boot_req, accel=guest.accel)
                uname = guest.run("uname -r", timeout=30)
                self.result.kernel_release = uname.stdout.strip()
                while self.pending:
                    suite, staged = self.pending[0]
                    self._unattributed(guest)
                    mark = guest.console_log.stat().st_size
                    if not self._run_suite(guest, suite, staged, mark):
                        return None if self.pending else Outcome.TESTS_RAN
                    self.pending.pop(0)
                return Outcome.OK
        except GuestCrashed as exc:
            # what killed it (a BUG, an Oops) came just before the panic, as a splat
            excerpt = "\n\n".join([r.excerpt for r in (console.splats() if console else [])
                                   if r.event is ConsoleEvent.SPLAT] + [exc.report.excerpt])
            self.result.console += excerpt + "\n"
            if suite is None:
                self.result.errors.append(StageError(
                    "boot", f"the guest died before the tests: {exc.report.event.value}",
                    excerpt))
                return Outcome.PANICKED if first else Outcome.TESTS_RAN
            self._crash(suite, console_since(self.boot_req.console_log, mark),
                        f"the guest died: {exc.report.event.value}", excerpt)
            return None if self.pending else Outcome.TESTS_RAN
        except BootError as exc:
            _add(self.result.timings, "boot", time.monotonic() - start)
            self.result.errors.append(exc.stage_error())
            self.result.console += (exc.report.excerpt + "\n") if exc.report else ""
            self.boot_error = exc
            # A kernel that never came up has no verdict; one that crashed in a test and
            # then would not come back still has the verdicts it gave.
            return exc.outcome if first else Outcome.TESTS_RAN

    def _run_suite(self, guest: Guest, suite: Suite, staged: Staged, mark: int) -> bool:
        """Run SUITE in GUEST; False if the guest must be booted again (a hang)."""
        with self.progress.stage(self.req.who, suite.name) as timing:
            try:
                for local, remote in staged.uploads:
                    guest.put(local, remote)
                policy = self.patterns[suite.name]
                stopped = Stops({kind: policy.why(kind) for kind in policy.stopped()},
                                frozenset(self.survived[suite.name]))
                report = suite.run(guest, staged, frozenset(self.crashed[suite.name]),
                                   self.req.limits, stopped)
            except Hung as exc:
                hung = exc
            else:
                hung = None
        _add(self.result.timings, suite_timing(suite.name), timing["seconds"])
        self.result.test_times.update(hang_limits.measure(
            markers.trusted(console_since(guest.console_log, mark), guest.marker_token)))
        if hung is not None:
            # before the guest is killed: where are its tasks stuck?
            tail = guest.console.tail()
            excerpt = "\n".join(filter(None, [tail, sysrq.stuck_tasks(guest.console,
                                                                    guest.session)]))
            self.result.console += excerpt + "\n"
            self._crash(suite, console_since(guest.console_log, mark), str(hung), excerpt)
            return False
        self._attribute(guest, suite, report, mark)
        self.reports[suite.name] = report
        return True

    def _crash(self, suite: Suite, console: str, message: str, excerpt: str) -> None:
        """Pin a crash or hang on the test the console says was running, to be skipped on
        the next boot; a suite that died outside any test is not run again."""
        console = markers.trusted(console, self.marker_token)
        self.salvaged[suite.name] += suite.salvage(console)
        self.survived[suite.name] |= set(hang_limits.measure(console))
        key = suite.running_test(console)
        if key is None or key in self.crashed[suite.name]:
            self.result.errors.append(
                StageError("tests", f"{suite.name}: {message}, outside any test", excerpt))
            self.broken.add(suite.name)
            self.pending = [p for p in self.pending if p[0] is not suite]
        else:
            self.crashed[suite.name][key] = (message, excerpt)
            if (cell := suite.cell_of(key)) is not None:
                self.patterns[suite.name].record(suite.test_id(key), cell)

    def _unattributed(self, guest: Guest) -> None:
        """Splats between suites belong to no test: the kernel-log verdict's."""
        for splat in guest.console.splats():
            self._no_test(splat.excerpt)

    def _no_test(self, excerpt: str) -> None:
        self.result.console += excerpt + "\n"
        self.kernel_log.append(excerpt)

    def _attribute(self, guest: Guest, suite: Suite, report: SuiteReport, mark: int) -> None:
        """Fail the test each splat of the suite's run came in; the rest go to the console."""
        splats = guest.console.splats()
        if not splats:
            return
        console = console_since(guest.console_log, mark)
        for excerpt in pin_splats(splats, console, guest.marker_token, suite, report.tests):
            self._no_test(excerpt)

    def _collect(self) -> None:
        """Every suite's results in order, with the host's verdicts and each one's outcome."""
        for suite, staged in self.req.suites:
            report = self.reports.get(suite.name, SuiteReport())
            tests = report.tests + self.salvaged[suite.name]
            known = list(tests)
            tests += [suite.host_result(key, Verdict.CRASHED, message, excerpt, known)
                      for key, (message, excerpt) in self.crashed[suite.name].items()]
            for t in tests:
                t.suite = suite.name
            self.result.tests += tests
            self.result.errors += [replace(e, message=f"{suite.name}: {e.message}")
                                   for e in report.errors]
            if suite.name in self.reports:
                clean = not (self.crashed[suite.name] or report.errors)
                outcome = Outcome.OK if clean else Outcome.TESTS_RAN
            elif tests or suite.name in self.broken:
                outcome = Outcome.TESTS_RAN
            else:    # it never got to run: the guest did not come up, or gave up
                outcome = self.boot_error.outcome if self.boot_error else Outcome.TESTS_RAN
            self.result.suites.append(SuiteInfo(suite.name, outcome, staged.origin))
        if self.result.outcome is Outcome.OK and any(
                s.outcome is not Outcome.OK for s in self.result.suites):
            self.result.outcome = Outcome.TESTS_RAN
        if self.result.kernel_release and self.req.suites:
            self.result.tests.append(
                kernel_log_verdict(self.kernel_log, self.req.suites[0][0].name))


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
