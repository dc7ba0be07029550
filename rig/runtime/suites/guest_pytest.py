"""Suites that run under pytest in the guest (the umem suite, rdma-core's unittest tests).

pytest writes a JUnit file the host fetches afterwards; a test that panics or hangs the guest
takes that file with it, so the rig's plugin (guest_plugin/rig_markers.py) marks each test's
start and end in the kernel log, which the serial console carries out whatever happens.  A
test that kills pytest itself (a segfault in a C extension, or in the guest's Python) is found
the same way, and pytest runs again in the same guest with it: a test that kills it twice is an
error of that test and the next run goes without it; one that runs the second time keeps its
result, and its details say it killed pytest once (seen on 2026-12-03: the guest's Python
3.11.2 segfaulted building the report of a skip, once in thousands).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

from rig.core.model import StageError
from rig.guest import markers, ssh
from rig.guest.machine import Guest
from rig.results import junit
from rig.results.schema import TestResult, Verdict
from rig.runtime.suites.base import Limits, SelectError, SuiteReport, console_since, run_step

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "guest_plugin"
MARKERS = PLUGIN_DIR / "rig_markers.py"
GUEST_PLUGINS = "/root/rig-plugins"              # where the plugins go in the guest
# `python3 -m pytest`, forked from rig-init's pytest server where it runs, else that command
PYTEST = ("python3", "-S", "/usr/lib/rig/pytest-server", "run")
MAX_DEATHS = 6                                   # pytest processes a suite may lose per boot
PYTEST_NO_TESTS = 5                              # pytest's status when it collected nothing
_MARK = re.compile(r"umem-rig: test (start|end) (\S+)")

# (node id, verdict, message, details, the suite's other results) -> the host's result
HostResult = Callable[[str, Verdict, str, str, list[TestResult]], TestResult]


def running_test(console: str) -> str | None:
    """The node id of the test that started and never ended, per the console markers."""
    open_test = None
    for kind, node in _MARK.findall(console):
        open_test = node if kind == "start" else (None if node == open_test else open_test)
    return open_test


def command(cwd: str, junit_xml: str, args: list[str], env: dict[str, str],
            deselect: list[str], token: str) -> str:
    """The guest's pytest command line: the rig's markers on with the boot's TOKEN, JUnit
    with properties, and no JUnit file left from an earlier try."""
    env = {**env, markers.ENV: token}
    argv = [*PYTEST, "-p", "no:cacheprovider", "-p", "rig_markers",
            f"--junitxml={junit_xml}", "-o", "junit_family=xunit1", "-q", "-rN", *args]
    argv += [a for node in deselect for a in ("--deselect", node)]
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (f"rm -f {shlex.quote(junit_xml)} && cd {shlex.quote(cwd)} && {assignments} "
            + " ".join(shlex.quote(a) for a in argv))


def run(guest: Guest, command_for: Callable[[list[str]], str], junit_xml: str,
        limits: Limits, local: Path, host_result: HostResult,
        name_of: junit.Namer | None = None, selected: tuple[str, ...] = ()) -> SuiteReport:
    """Run pytest (COMMAND_FOR(nodes to deselect) from command()) and parse its JUnit file,
    fetched into LOCAL.  A pytest that wrote no JUnit file is an error of the suite; one that
    collected nothing from a SELECTED run was given a selection that matches no test."""
    died: dict[str, tuple[str, str]] = {}     # killed pytest twice: left out, an error
    once: dict[str, tuple[str, str]] = {}     # killed it once: run again
    for _ in range(MAX_DEATHS + 1):
        mark = guest.console_log.stat().st_size
        ran = run_step(guest, command_for(sorted(died)), limits, lambda m=mark: running_test(
            markers.trusted(console_since(guest.console_log, m), guest.marker_token)))
        node = running_test(markers.trusted(console_since(guest.console_log, mark),
                                            guest.marker_token)) if ran.status > 128 else None
        if node is None or node in died:
            break
        (died if node in once else once)[node] = (
            f"the test killed pytest (signal {ran.status - 128})",
            (ran.stdout + ran.stderr)[-3000:])
    if ran.status == PYTEST_NO_TESTS and selected:
        raise SelectError(f"--select {' '.join(selected)!r} matches no test of the "
                          f"{local.stem} suite")
    report = SuiteReport()
    try:
        guest.get(junit_xml, local)
    except ssh.Refused as exc:
        report.errors.append(StageError("tests", str(exc), (ran.stdout + ran.stderr)[-3000:]))
    except Exception as exc:  # noqa: BLE001 - any transfer failure is the same
        report.errors.append(StageError(
            "tests", f"pytest exited {ran.status} and wrote no JUnit file: {exc}",
            (ran.stdout + ran.stderr)[-3000:]))
    else:
        try:
            report.tests = junit.parse(local, name_of)
        except junit.JUnitError as exc:     # cut short: pytest died while writing it
            report.errors.append(StageError("tests", str(exc),
                                            (ran.stdout + ran.stderr)[-3000:]))
        if ran.status not in (0, 1):
            report.errors.append(StageError("tests", f"pytest exited {ran.status}",
                                            (ran.stdout + ran.stderr)[-3000:]))
    report.tests += [host_result(node, Verdict.ERROR, message, details, report.tests)
                     for node, (message, details) in died.items()]
    for node, (message, details) in once.items():
        named = host_result(node, Verdict.ERROR, message, details, []).id
        for t in report.tests:
            if t.id == named and node not in died:
                t.details = (f"{message} once; run again in the same boot, it did not\n"
                             f"{details}\n{t.details or ''}")
    return report
