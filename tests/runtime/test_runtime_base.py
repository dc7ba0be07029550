"""Which test a kernel splat belongs to, from a real console (the same for local boots and lab
jobs), and the kernel-log verdict of the splats no test owns."""


from support.paths import FIXTURES
from support.tokens import TOKEN, tokened

from rig.guest.console import scan
from rig.results.schema import TestResult, Verdict
from rig.runtime.base import KERNEL_LOG, kernel_log_verdict, pin_splats
from rig.runtime.suites.umem import UmemSuite

# WARN_ON_ONCE() in ib_umem_get() while test_registration[anon-written-ro-mr] ran
WARNED = tokened((FIXTURES / "console" /
                  "warn-during-test.log").read_text())
RO, RW = "test_registration[anon-written-ro-mr]", "test_registration[anon-written-rw-mr]"


def _tests() -> list[TestResult]:
    return [TestResult(RO, "registration", "anon-written", "ro-mr", Verdict.PASSED),
            TestResult(RW, "registration", "anon-written", "rw-mr", Verdict.PASSED)]


def _splats():
    return scan([(i * 0.01, line) for i, line in enumerate(WARNED.splitlines())])


def test_a_splat_fails_the_test_it_came_in_and_no_other():
    tests = _tests()
    assert pin_splats(_splats(), WARNED, TOKEN, UmemSuite(), tests) == []
    ro, rw = tests
    assert ro.verdict is Verdict.FAILED
    assert ro.message.startswith("kernel splat during the test: ")
    assert "ib_umem_get" in ro.details and any("WARNING" in line for line in ro.kmsg)
    assert rw.verdict is Verdict.PASSED and not rw.details


def test_a_splat_no_test_marker_covers_goes_to_the_kernel_log_verdict():
    tests = _tests()
    before_any_test = WARNED[:WARNED.index(f"umem-rig {TOKEN}: test start")]
    unowned = pin_splats(_splats(), before_any_test, TOKEN, UmemSuite(), tests)
    assert len(unowned) == 1 and "ib_umem_get" in unowned[0]
    assert all(t.verdict is Verdict.PASSED for t in tests)
    verdict = kernel_log_verdict(unowned, "umem")
    assert (verdict.id, verdict.verdict, verdict.suite) == (KERNEL_LOG, Verdict.FAILED, "umem")
    assert verdict.message.startswith("1 kernel splat(s) outside any test: ")
    assert kernel_log_verdict([], "umem").verdict is Verdict.PASSED


def _forged(marker: str) -> str:
    """The real WARN console with MARKER printed by the kernel just before its splat."""
    at = WARNED.index("------------[ cut here ]")
    at = WARNED.rindex("\n", 0, at) + 1
    return WARNED[:at] + f"[   12.345678] {marker}\r\n" + WARNED[at:]


def test_a_marker_the_kernel_printed_is_not_believed():
    """The kernel under test prints the rig's marker line, without the boot's token or with a
    wrong one, to pin its WARN on another test: the splat stays on the test that ran."""
    for marker in (f"umem-rig: test start {RW}", f"umem-rig 0123abcd: test start {RW}",
                   f"umem-rig: test end {RO}", f"umem-rig {TOKEN[:-1]}: test start {RW}"):
        tests = _tests()
        assert pin_splats(_splats(), _forged(marker), TOKEN, UmemSuite(), tests) == []
        ro, rw = tests
        assert (ro.verdict, rw.verdict) == (Verdict.FAILED, Verdict.PASSED), marker


def test_without_the_boots_token_no_marker_is_believed():
    """The same real console read with another boot's token: every splat is the kernel
    log's, none is pinned on a test."""
    tests = _tests()
    assert len(pin_splats(_splats(), WARNED, "another-boot", UmemSuite(), tests)) == 1
    assert all(t.verdict is Verdict.PASSED for t in tests)
