"""The umem suite: guest_tests/ (region x MR access x contract check) and its driver module.

What it needs per variant is built with the kernel (umem_test.ko, in the kernel's cache
entry); the suite itself is uploaded as it is in the checkout, with the rig's marker plugin.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from rig.core.cache import digest
from rig.guest.machine import Guest
from rig.results import junit
from rig.results.schema import TestResult, Verdict
from rig.runtime.crashes import Cell, Stops
from rig.runtime.suites import guest_pytest
from rig.runtime.suites.base import Limits, Staged, StageRequest, Suite, SuiteReport, Unattended

GUEST_DIR = "/root/guest_tests"
GUEST_KO = f"{GUEST_DIR}/driver/umem_test.ko"   # where the suite looks for it by default
GUEST_XML = "/tmp/rig-results.xml"
# the kinds of test the rig stopped running (crashes.py) and the tests the plugin left out
STOPPED_KINDS = "/tmp/rig-stopped-kinds.json"
STOPPED_TESTS = "/tmp/rig-stopped.json"
# the region is the shortest that leaves an access: "anon-written-odp-ro-mr" is anon-written
_NODE = re.compile(r"test_(?P<check>\w+)\[(?P<region>[\w-]+?)-(?P<access>(?:odp-)?r[ow]-mr)\]$")
_SKIP_UPLOAD = shutil.ignore_patterns("__pycache__", "*.o", "*.ko", "*.mod*", "*.cmd",
                                      "Module.symvers", "modules.order", ".pytest_cache")


def stage_tests(tests: Path, into: Path) -> Path:
    """guest_tests/ as uploaded: the sources and the marker plugin."""
    staged = into / "guest_tests"
    shutil.copytree(tests, staged, ignore=_SKIP_UPLOAD)
    shutil.copy2(guest_pytest.MARKERS, staged / guest_pytest.MARKERS.name)
    return staged


def keyword(select: tuple[str, ...]) -> list[str]:
    """pytest's -k for the --select expressions given to this suite (any of them)."""
    return ["-k", " or ".join(f"({e})" for e in select)] if select else []


def _env(limits: Limits) -> dict[str, str]:
    return {"PYTHONPATH": GUEST_DIR, "UMEM_TEST_KO": GUEST_KO,
            "UMEM_TEST_TIMEOUT": f"{limits.test:g}"}


def _command(staged: Staged, env: dict[str, str], deselect: list[str], token: str) -> str:
    return guest_pytest.command(GUEST_DIR, GUEST_XML, keyword(staged.select), env, deselect,
                                token)


class UmemSuite(Suite):
    name = "umem"
    runs_pytest = True

    def stage(self, req: StageRequest) -> Staged:
        staged = stage_tests(req.project / "guest_tests", req.scratch / self.name)
        uploads = [(staged, GUEST_DIR)]
        if req.build.module.exists():
            uploads.append((req.build.module, GUEST_KO))
        sources = sorted(p for p in staged.rglob("*") if p.is_file())
        version = digest(*[str(p.relative_to(staged)) for p in sources], *sources)
        return Staged(self.name, tuple(uploads), f"guest_tests {version[:12]}",
                      req.scratch / self.name, req.select)

    def run(self, guest: Guest, staged: Staged, skip: frozenset[str], limits: Limits,
            stopped: Stops | None = None) -> SuiteReport:
        env = _env(limits)
        if stopped and stopped.kinds:
            kinds = [{**asdict(kind), "why": why} for kind, why in stopped.kinds.items()]
            local = staged.workdir / "stopped-kinds.json"
            local.write_text(json.dumps({"kinds": kinds, "ran": sorted(stopped.ran)}))
            guest.put(local, STOPPED_KINDS)
            env["RIG_STOPPED_KINDS"] = STOPPED_KINDS
        report = guest_pytest.run(
            guest, lambda died: _command(staged, env, sorted(skip) + died, guest.marker_token),
            GUEST_XML, limits, staged.workdir / "umem.xml", self.host_result,
            selected=staged.select)
        if stopped and stopped.kinds:
            report.tests += self._not_run(guest, staged, report.tests)
        return report

    def unattended(self, staged: Staged, limits: Limits, deselect: list[str],
                   token: str) -> Unattended:
        return Unattended(_command(staged, _env(limits), deselect, token), GUEST_XML)

    def _not_run(self, guest: Guest, staged: Staged, known: list[TestResult]) -> list[TestResult]:
        """The tests the plugin left out because their kind kept crashing: lost, and why."""
        local = staged.workdir / "stopped.json"
        guest.get(STOPPED_TESTS, local)
        lost = []
        for left in json.loads(local.read_text()):
            result = junit.host_result(left["id"], Verdict.LOST, left["why"], "", known)
            result.check, result.region, result.access = (left["check"], left["region"],
                                                          left["access"])
            lost.append(result)
        return lost

    def cell_of(self, key: str) -> Cell | None:
        """"test_umem.py::test_registration[anon-written-ro-mr]": check, region and access."""
        m = _NODE.search(key)
        return Cell(m["check"], m["region"], m["access"]) if m else None

    def running_test(self, console: str) -> str | None:
        return guest_pytest.running_test(console)

    def test_id(self, key: str) -> str:
        return key.split("::")[-1]

    def host_result(self, key: str, verdict: Verdict, message: str, details: str,
                    known: list[TestResult]) -> TestResult:
        result = junit.host_result(self.test_id(key), verdict, message, details, known)
        if not result.access and (cell := self.cell_of(key)):
            # a cell no reported test shares (the guest died in its only test)
            result.check, result.region, result.access = cell.check, cell.region, cell.access
        return result
