"""What a test suite is to the rig: a plug-in of the test stage.

A suite says what it needs built for a variant and uploaded (stage(), on the host, cached
like the kernel), how it runs in a booted guest (run()), and how its output becomes the rig's
TestResults.  The test stage (rig/runtime/local.py) boots the guest, runs the suites one after
another and deals with what goes wrong in any of them the same way: a panic or a hang is
pinned on the test the console says was running (running_test()), the guest is booted again,
and the suite is run once more without that test (run()'s SKIP).  What a dead guest's console
still holds of a suite's results is kept (salvage()).
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.core.cache import Cache
from rig.core.model import BuildResult, CommandResult, ImageResult, SourceSpec, StageError
from rig.core.status import InfraError, RigError
from rig.guest.machine import Guest
from rig.results.schema import TestResult, Verdict
from rig.runtime import hang_limits
from rig.runtime.crashes import Cell, Stops

HANG_MARGIN = 15.0                   # seconds of console silence beyond a test's own limit


class SuiteError(InfraError):
    """A suite that cannot be prepared for a variant (its tests do not build, a setting is
    wrong); the message names what and why.  The other suites still run."""


class SelectError(RigError):
    """A test selection that matches nothing: the user's input, not the kernel's fault."""


class Hung(Exception):
    """A guest command overran its time or left the console silent past a test's limit."""


@dataclass(frozen=True)
class Limits:
    test: float = 30.0               # seconds one test may take
    suite: float = 1200.0            # seconds one suite may take in one boot
    # seconds each test took on the base (rig/runtime/hang_limits.py), by its console name
    learned: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRequest:
    """What a suite gets on the host to prepare one variant's run."""

    project: Path                    # the checkout (guest_tests/, kconfigs/ ...)
    cache: Cache
    build: BuildResult               # the variant's kernel build (its modules)
    image: ImageResult               # the guest image the suite will run in
    settings: Mapping[str, Any]      # the suite's [suites.NAME] table from the configuration
    sources: Mapping[str, SourceSpec]  # the configuration's kernel trees, by name
    select: tuple[str, ...]          # the suite's own test names to run; empty: all
    scratch: Path                    # a directory for staged files, alive for the whole run
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Staged:
    """A suite ready to run on one variant: what to upload and what it is."""

    name: str
    uploads: tuple[tuple[Path, str], ...]     # (local file or folder, guest path)
    origin: str                      # where its tests come from, for the report
    workdir: Path                    # host files of its runs (the run's scratch space)
    select: tuple[str, ...] = ()
    cache_hit: bool = False


@dataclass(frozen=True)
class Unattended:
    """How a suite runs in a guest no one logs into (a lab's, which runs it from its boot):
    the shell command, and where in the guest its JUnit file lands."""

    command: str
    junit_xml: str


@dataclass
class SuiteReport:
    """What one run of a suite in one guest gave."""

    tests: list[TestResult] = field(default_factory=list)
    errors: list[StageError] = field(default_factory=list)


class Suite(abc.ABC):
    name: str = ""
    runs_pytest: bool = False        # its runs fork from the guest's pytest server (rig-init)

    def validate(self, select: tuple[str, ...]) -> None:
        """SuiteError if SELECT names tests the suite cannot have (checked before any build)."""

    @abc.abstractmethod
    def stage(self, req: StageRequest) -> Staged:
        """Build (or find in the cache) what the suite needs; SuiteError if it can't."""

    @abc.abstractmethod
    def run(self, guest: Guest, staged: Staged, skip: frozenset[str], limits: Limits,
            stopped: Stops | None = None) -> SuiteReport:
        """Run in GUEST (the uploads are in place) without the tests in SKIP (keys from
        running_test()), nor those of a STOPPED kind that did not run in an earlier boot
        (crashes.py; where the suite's tests have cells), which it reports lost with the
        reason.  Raises Hung for a hang and lets GuestCrashed through: the test stage
        reboots."""

    def cell_of(self, key: str) -> Cell | None:
        """Where the test KEY sits in a region x access x check matrix, for crash patterns;
        None for a suite whose tests have no such cells."""
        return None

    @abc.abstractmethod
    def running_test(self, console: str) -> str | None:
        """The key of the test that started and never ended in CONSOLE (this suite's part of
        one boot's console), or None.  The key is the suite's own (a pytest node id, ...)."""

    @abc.abstractmethod
    def test_id(self, key: str) -> str:
        """The id of the result that the test KEY (from running_test()) gives."""

    @abc.abstractmethod
    def host_result(self, key: str, verdict: Verdict, message: str, details: str,
                    known: list[TestResult]) -> TestResult:
        """The result the host gives the test KEY itself (crashed), given the suite's other
        results (KNOWN), which tell how its ids read."""

    def salvage(self, console: str) -> list[TestResult]:
        """Results the console of a guest that died in this suite still holds (none unless
        the suite reports through the console)."""
        return []

    def select_for(self, test: TestResult) -> str:
        """The --select value of this suite that runs TEST (and as few others as it can)."""
        return test.id

    def unattended(self, staged: Staged, limits: Limits, deselect: list[str],
                   token: str) -> Unattended | None:
        """How the suite runs with no SSH, its tests' markers carrying TOKEN and DESELECT
        left out; None if it needs SSH (it talks to the guest while it runs)."""
        return None


def reserve_hugepages(guest: Guest, free: int, limits: Limits) -> CommandResult:
    """Make sure FREE 2 MiB huge pages are free in the guest (adding to the pool if not)."""
    return run_step(guest, f"""h=/sys/kernel/mm/hugepages/hugepages-2048kB
[ -d $h ] || exit 0
free=$(cat $h/free_hugepages); nr=$(cat $h/nr_hugepages)
[ "$free" -ge {free:d} ] || echo $((nr + {free:d} - free)) > $h/nr_hugepages""", limits)


def console_since(log: Path | None, mark: int) -> str:
    """One boot's console log from byte MARK on."""
    if log is None or not log.exists():
        return ""
    with open(log, "rb") as fh:
        fh.seek(mark)
        return fh.read().decode("utf-8", "replace")


def run_step(guest: Guest, command: str, limits: Limits,
             running: Callable[[], str | None] | None = None) -> CommandResult:
    """Run COMMAND in the guest as one step of a suite; Hung if it overruns.

    `timeout` in the guest ends a step stuck in userspace (status 137); a step stuck in the
    kernel is caught by the console's silence, since every test logs its start and end.
    With RUNNING (which test is running, by its console name), a test the base was timed on
    is hung after its own limit (rig/runtime/hang_limits.py)."""
    untimed = limits.test + HANG_MARGIN
    silence = hang_limits.silence(limits.learned, untimed, guest.console.quiet_for, running) \
        if running else untimed
    run = guest.run(f"timeout -s KILL {limits.suite:g} sh -c {shlex.quote(command)}",
                    timeout=limits.suite + 60, silence=silence)
    if run.timed_out or run.status == 137:
        raise Hung(f"hung: {run.stderr.strip() or 'the suite did not finish'}")
    return run
