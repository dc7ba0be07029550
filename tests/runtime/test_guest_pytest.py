"""A test that kills pytest in the guest: run again once in the same boot, an error only when
it kills it again.  The guest is a stand-in (synthetic): its console gets the markers the rig's
plugin writes, its pytest dies or not as told, and the JUnit file it gives is a real one
(tests/fixtures/junit/guest-6.1-base.xml)."""

import shutil

from support.paths import FIXTURES

from rig.core.model import CommandResult
from rig.results.schema import Verdict
from rig.runtime.suites import guest_pytest, umem
from rig.runtime.suites.base import Limits

JUNIT = FIXTURES / "junit" / "guest-6.1-base.xml"
NODE = "test_umem.py::test_registration[anon-written-ro-mr]"


class _Console:
    def quiet_for(self) -> float:
        return 0.0


class _Guest:
    marker_token = "t0ken"
    console = _Console()

    def __init__(self, tmp_path, deaths: int):
        self.console_log = tmp_path / "console.log"
        self.console_log.write_text("")
        self.deaths = deaths

    def run(self, command, timeout, silence):
        with open(self.console_log, "a") as log:
            log.write(f"umem-rig {self.marker_token}: test start {NODE}\n")
            if self.deaths:
                self.deaths -= 1
                return CommandResult(139, "", "Fatal Python error: Segmentation fault\n", 1.0)
            log.write(f"umem-rig {self.marker_token}: test end {NODE}\n")
        return CommandResult(1, "", "", 1.0)

    def get(self, remote, local):
        shutil.copyfile(JUNIT, local)


def _run(tmp_path, deaths):
    """The suite's runs in the stand-in guest: what each left out, and the results."""
    left_out = []
    report = guest_pytest.run(_Guest(tmp_path, deaths), lambda nodes: left_out.append(nodes)
                              or "pytest", "x.xml", Limits(), tmp_path / "got.xml",
                              umem.UmemSuite().host_result)
    return left_out, report.tests


def test_a_test_that_killed_pytest_once_keeps_the_result_of_its_second_run(tmp_path):
    left_out, tests = _run(tmp_path, deaths=1)
    assert left_out == [[], []]                       # run again, with that test
    [test] = [t for t in tests if t.id == "test_registration[anon-written-ro-mr]"]
    assert test.verdict is Verdict.PASSED
    assert test.details.startswith("the test killed pytest (signal 11) once; run again in the "
                                   "same boot, it did not\n")


def test_a_test_that_kills_pytest_twice_is_an_error_and_left_out(tmp_path):
    left_out, tests = _run(tmp_path, deaths=2)
    assert left_out == [[], [], [NODE]]
    # the stand-in's JUnit file still has the test: the host's error comes after it
    error = [t for t in tests if t.id == "test_registration[anon-written-ro-mr]"][-1]
    assert (error.verdict, error.message) == (Verdict.ERROR, "the test killed pytest (signal 11)")
    assert not error.details.startswith("the test killed pytest (signal 11) once")
