"""The umem suite: guest_tests/ (region x MR access x contract check) and its driver module.

What it needs per variant is built with the kernel (umem_test.ko, in the kernel's cache
entry); the suite itself is uploaded as it is in the checkout, with the rig's marker plugin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rig import junit
from rig.cache import digest
from rig.guest import Guest
from rig.results import TestResult, Verdict

from . import guest_pytest
from .base import Limits, Staged, StageRequest, Suite, SuiteReport

GUEST_DIR = "/root/guest_tests"
GUEST_KO = f"{GUEST_DIR}/driver/umem_test.ko"   # where the suite looks for it by default
GUEST_XML = "/tmp/rig-results.xml"
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


class UmemSuite(Suite):
    name = "umem"
    group = "region"

    def stage(self, req: StageRequest) -> Staged:
        staged = stage_tests(req.project / "guest_tests", req.scratch / self.name)
        uploads = [(staged, GUEST_DIR)]
        if req.build.module.exists():
            uploads.append((req.build.module, GUEST_KO))
        sources = sorted(p for p in staged.rglob("*") if p.is_file())
        version = digest(*[str(p.relative_to(staged)) for p in sources], *sources)
        return Staged(self.name, tuple(uploads), f"guest_tests {version[:12]}",
                      req.scratch / self.name, req.select)

    def run(self, guest: Guest, staged: Staged, skip: frozenset[str],
            limits: Limits) -> SuiteReport:
        env = {"PYTHONPATH": GUEST_DIR, "UMEM_TEST_KO": GUEST_KO,
               "UMEM_TEST_TIMEOUT": f"{limits.test:g}"}
        return guest_pytest.run(
            guest, lambda died: guest_pytest.command(GUEST_DIR, GUEST_XML,
                                                     keyword(staged.select), env,
                                                     sorted(skip) + died),
            GUEST_XML, limits, staged.workdir / "umem.xml", self.host_result,
            selected=staged.select)

    def running_test(self, console: str) -> str | None:
        return guest_pytest.running_test(console)

    def test_id(self, key: str) -> str:
        return key.split("::")[-1]

    def host_result(self, key: str, verdict: Verdict, message: str, details: str,
                    known: list[TestResult]) -> TestResult:
        return junit.host_result(self.test_id(key), verdict, message, details, known)
