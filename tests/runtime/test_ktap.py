"""KTAP parsing on the real output of the kernel's mm selftests (fixtures/suites/README.md)."""

import re
from collections import Counter

import pytest
from support.paths import FIXTURES

from rig.results.schema import Verdict
from rig.runtime.suites import ktap

SUITES = FIXTURES / "suites"
KTAP_FILES = sorted(SUITES.glob("*.ktap"))
_TOTALS = re.compile(r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) "
                     r"error:(\d+)$", re.MULTILINE)


def test_there_are_real_captures_of_every_run():
    assert {p.name.rsplit("-", 1)[0] for p in KTAP_FILES} >= {
        "cow", "gup_longterm@ext4", "gup_longterm@tmpfs", "gup_test-u", "gup_test-ct"}


@pytest.mark.parametrize("path", KTAP_FILES, ids=lambda p: p.name)
def test_verdicts_match_the_programs_own_totals(path):
    text = path.read_text()
    report = ktap.parse(text)
    totals = [int(n) for n in _TOTALS.search(text).groups()]
    counts = Counter(r.verdict for r in report.results)
    assert [counts[Verdict.PASSED], counts[Verdict.FAILED], counts[Verdict.XFAILED],
            counts[Verdict.XPASSED], counts[Verdict.SKIPPED], counts[Verdict.ERROR]] == totals
    if not all(r.verdict is Verdict.SKIPPED for r in report.results):
        assert report.plan == len(report.results)    # else it skipped the rest as a whole
    assert [r.number for r in report.results] == list(range(1, len(report.results) + 1))


def test_cow_on_6_1_lines_diagnostics_and_reasons():
    """7.3's cow on 6.1: each result line names its test, the reason is the line before."""
    report = ktap.parse((SUITES / "cow-6.1.192.ktap").read_text())
    first = report.results[0]
    assert (first.verdict, first.description) == (
        Verdict.PASSED, "Basic COW after fork() ... with base page")
    assert first.diagnostics[-1] == "[RUN] Basic COW after fork() ... with base page"
    assert "[INFO] detected PMD size: 2048 KiB" in first.diagnostics
    skip = report.results[1]
    assert (skip.verdict, skip.description, skip.reason, skip.diagnostics[-1]) == (
        Verdict.SKIPPED, "", "Basic COW after fork() ... with swapped out base page",
        "MADV_PAGEOUT did not work, is swap enabled?")
    xfail = next(r for r in report.results if r.verdict is Verdict.XFAILED)
    assert xfail.diagnostics[-1] == "Leak from parent into child"
    assert xfail.reason.endswith("with hugetlb (2048 kB)")
    # 6.1's gup_test has no PIN_LONGTERM_TEST_START (it came in 6.3): cow's R/O pin tests skip
    assert report.results[-1].diagnostics[-1] == \
        "PIN_LONGTERM_TEST_START failed: Invalid argument (22)"
    assert report.trailing[-1] == "Totals: pass:46 fail:0 xfail:4 xpass:0 skip:101 error:0"


def test_cow_and_gup_longterm_on_6_12_pin_for_real():
    """6.12's gup_test has PIN_LONGTERM_TEST_START: the R/O pin tests run and pass (6.12's
    own programs, which say how it went on the result line)."""
    cow = ktap.parse((SUITES / "cow-6.12.117.ktap").read_text())
    zero = [r for r in cow.results if r.diagnostics[-1].endswith("with shared zeropage")]
    assert [(r.verdict, r.description) for r in zero] == [
        (Verdict.PASSED, "Other mapping not modified")] + 2 * [
        (Verdict.PASSED, "Longterm R/O pin is reliable")]
    longterm = ktap.parse((SUITES / "gup_longterm@ext4-6.12.117.ktap").read_text())
    said = {r.diagnostics[-1]: r.description for r in longterm.results}
    # ext4 page cache cannot be pinned writable for long: refused, as the test expects
    assert said["[RUN] R/W longterm GUP pin in MAP_SHARED file mapping ... with local tmpfile"] \
        == "Should have failed"
    assert said["[RUN] R/W longterm GUP pin in MAP_SHARED file mapping ... with memfd"] == \
        "Should have worked"


def test_directives_as_the_kernel_documents_them():
    """Lines from Documentation/dev-tools/ktap.rst and kselftest.h's formats (synthetic)."""
    report = ktap.parse("KTAP version 1\n1..7\n"
                        "ok 1 test_a\n"
                        "not ok 2 test_b\n"
                        "ok 3 test_c # SKIP no hardware\n"
                        "not ok 4 test_d # TODO not written\n"
                        "ok 5 # XFAIL known to fail\n"
                        "ok 6 # XPASS should have failed\n"
                        "not ok 7 # error broken\n"
                        "    ok 1 a subtest\n"
                        "ok 8 name #  a diagnostic, no directive\n"
                        "Bail out! 1 out of 8 tests failed\n")
    got = [(r.number, r.verdict, r.description, r.reason) for r in report.results]
    assert got == [
        (1, Verdict.PASSED, "test_a", ""),
        (2, Verdict.FAILED, "test_b", ""),
        (3, Verdict.SKIPPED, "test_c", "no hardware"),
        (4, Verdict.XFAILED, "test_d", "not written"),
        (5, Verdict.XFAILED, "", "known to fail"),
        (6, Verdict.XPASSED, "", "should have failed"),
        (7, Verdict.ERROR, "", "broken"),
        (1, Verdict.PASSED, "a subtest", ""),
        (8, Verdict.PASSED, "name # a diagnostic, no directive", ""),
    ]
    assert report.plan == 7 and report.bail_out == "1 out of 8 tests failed"


def test_lines_that_are_not_ktap_stay_with_the_next_result():
    """Kernel log lines interleaved on a console (synthetic)."""
    report = ktap.parse("1..1\n# [RUN] x\nrxe0: some driver message\nok 1 done\n")
    assert report.results[0].other == ["rxe0: some driver message"]
    assert report.results[0].diagnostics == ["[RUN] x"]
