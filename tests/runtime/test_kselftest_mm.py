"""The kselftest-mm suite's host side on a real guest's console (fixtures/suites/README.md)."""

import re
from collections import Counter

import pytest
from support.paths import FIXTURES
from support.tokens import TOKEN, tokened

from rig.core import datafiles
from rig.guest import markers
from rig.results.schema import Verdict
from rig.runtime.suites import ktap
from rig.runtime.suites.kselftest_mm import (
    KselftestMM,
    Recipe,
    command,
    program,
    results,
    segment,
)

SUITES = FIXTURES / "suites"
RELEASES = ["6.1.192", "6.12.118", "7.2.13", "7.3.0-rc7"]     # 7.3's tree's programs on each
CONSOLE = (SUITES / "kselftest-mm-6.1.192.console.log").read_text()
SUITE = KselftestMM()
RUNS = {r.name: r for r in SUITE.recipe.runs}
_TOTALS = re.compile(r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+)",
                     re.MULTILINE)


def test_the_recipe_runs_gup_longterm_on_ext4_and_tmpfs():
    recipe = Recipe.load()
    assert {r.name: r.cwd for r in recipe.runs if r.argv[0] == "gup_longterm"} == {
        "gup_longterm@ext4": "/root/kselftest-mm", "gup_longterm@tmpfs": "/tmp/kselftest-mm"}
    assert set(recipe.programs) == {"cow", "gup_longterm", "gup_test", "mkdirty",
                                    "hugetlb_dio", "memfd_secret", "madv_populate"}


@pytest.mark.parametrize("release", RELEASES)
def test_every_run_is_read_back_from_the_console_with_the_programs_totals(release):
    console = (SUITES / f"kselftest-mm-{release}.console.log").read_text()
    for run in SUITE.recipe.runs:
        text, status, ended = segment(console, run.name)
        assert ended, run.name
        got = results(run, text, status, ended)
        counts = Counter(t.verdict for t in got)
        totals = [int(n) for n in _TOTALS.search(text).groups()]
        assert [counts[Verdict.PASSED], counts[Verdict.FAILED], counts[Verdict.XFAILED],
                counts[Verdict.XPASSED], counts[Verdict.SKIPPED]] == totals, run.name
        assert len({t.id for t in got}) == len(got), run.name
        assert all(t.suite == "kselftest-mm" and t.region == run.name for t in got)


@pytest.mark.parametrize("release", RELEASES)
def test_the_console_gives_the_same_tests_as_the_programs_own_output(release):
    """The same programs run again in the same guest, stdout to a file: the same tests."""
    console = (SUITES / f"kselftest-mm-{release}.console.log").read_text()
    for run in SUITE.recipe.runs:
        text, status, ended = segment(console, run.name)
        from_console = [t.check for t in results(run, text, status, ended)]
        own = ktap.parse((SUITES / f"{run.name}-{release}.ktap").read_text())
        assert len(from_console) == len(own.results), run.name


def test_results_name_tests_by_their_run_lines_and_say_what_the_line_before_said():
    """7.x's programs print the test's name on its result line, what happened before it."""
    text, status, ended = segment(CONSOLE, "cow")
    got = {t.id: t for t in results(RUNS["cow"], text, status, ended)}
    zero = got["cow: R/O longterm GUP pin ... with shared zeropage"]
    assert (zero.verdict, zero.message) == (
        Verdict.SKIPPED, "PIN_LONGTERM_TEST_START failed: Invalid argument (22)")
    basic = got["cow: Basic COW after fork() ... with base page"]
    assert (basic.verdict, basic.message, basic.observations) == (
        Verdict.PASSED, "Basic COW after fork() ... with base page", {})
    assert basic.doc.startswith("COW after fork()")
    text, status, ended = segment(CONSOLE, "gup_longterm@ext4")
    longterm = [t.id for t in results(RUNS["gup_longterm@ext4"], text, status, ended)]
    assert "gup_longterm@ext4: R/O longterm GUP pin in MAP_PRIVATE file mapping ... with " \
        "local tmpfile" in longterm


def test_a_6_12_tree_says_how_it_went_on_the_result_line():
    """6.12's cow (its own output, real): the result line says how it went, kept as such."""
    own = (SUITES / "cow-6.12.117.ktap").read_text()
    got = {t.id: t for t in results(RUNS["cow"], own, 0, True)}
    zero = got["cow: R/O longterm GUP pin ... with shared zeropage"]
    assert (zero.verdict, zero.message, zero.observations) == (
        Verdict.PASSED, "Longterm R/O pin is reliable",
        {"result": "Longterm R/O pin is reliable"})
    swapped = got["cow: Basic COW after fork() ... with swapped out base page"]
    assert swapped.message == "MADV_PAGEOUT did not work, is swap enabled?"


def test_mkdirty_names_its_tests_by_their_info_lines():
    """7.2.13 with proc_mem.force_override=always: the FOLL_FORCE writes are refused as
    they must be (a SIGSEGV, the page unchanged); without that parameter 7.x's default
    (PROC_MEM_FORCE_PTRACE) never forces, and the two ptrace tests fail "write() failed"."""
    console = (SUITES / "kselftest-mm-7.2.13.console.log").read_text()
    text, status, ended = segment(console, "mkdirty")
    got = {t.check: (t.verdict, t.message) for t in results(RUNS["mkdirty"], text, status, ended)}
    assert got == {
        "PTRACE write access": (Verdict.PASSED, "SIGSEGV generated, page not modified"),
        "PTRACE write access to THP": (Verdict.PASSED, "SIGSEGV generated, page not modified"),
        "Page migration": (Verdict.SKIPPED, "mbind() failed"),
        "Page migration of THP": (Verdict.SKIPPED, "mbind() failed"),
        "PTE-mapping a THP": (Verdict.PASSED, "SIGSEGV generated, page not modified"),
        "UFFDIO_COPY": (Verdict.SKIPPED, "__NR_userfaultfd failed")}


def test_a_program_that_skips_as_a_whole_is_no_error():
    """memfd_secret on 6.1 (no CONFIG_SECRETMEM): one skip of five planned, exit status 4."""
    text, status, ended = segment(CONSOLE, "memfd_secret")
    assert status == 4
    got = results(RUNS["memfd_secret"], text, status, ended)
    assert [(t.verdict, t.message) for t in got] == [
        (Verdict.SKIPPED, "memfd_secret is not supported")]
    assert results(RUNS["memfd_secret"], text, 1, ended)[-1].verdict is Verdict.ERROR


def test_hugetlb_dio_runs_with_an_ext4_tmp_of_its_own():
    line = program(RUNS["hugetlb_dio"])
    assert line.startswith("mkdir -p /root/kselftest-mm/dio-tmp && unshare --mount ")
    assert "mount --bind /root/kselftest-mm/dio-tmp /tmp && " in line
    assert program(RUNS["cow"]) == \
        "mkdir -p /root/kselftest-mm && cd /root/kselftest-mm && /root/kselftest-mm/cow"


def test_a_guest_that_died_in_a_test_names_it_and_keeps_the_tests_before():
    """The real console cut just after a [RUN] line, as a guest that died there leaves it."""
    run_line = "# [RUN] vmsplice() + unmap in child ... with base page"
    cut = CONSOLE[:CONSOLE.index(run_line) + len(run_line)]
    assert SUITE.running_test(cut) == "cow: vmsplice() + unmap in child ... with base page"
    kept = SUITE.salvage(cut)
    assert [t.verdict for t in kept[:2]] == [Verdict.PASSED, Verdict.SKIPPED]
    assert kept[-1].verdict is Verdict.LOST
    assert kept[-1].message == f"{151 - (len(kept) - 1) - 1} of 151 planned tests never ran: " \
        "the guest died"
    crashed = SUITE.host_result(SUITE.running_test(cut), Verdict.CRASHED, "the guest died",
                                "Kernel panic", kept)
    assert (crashed.region, crashed.check) == (
        "cow", "vmsplice() + unmap in child ... with base page")


def test_a_guest_that_died_between_tests_names_the_next_by_number():
    """Where no [RUN] line came yet, the next test is known by its number (as a program
    without [RUN] lines names all its tests), so the crash compares with the base's test."""
    after_result = CONSOLE[:CONSOLE.index("\n", CONSOLE.index("ok 20 "))]
    assert SUITE.running_test(after_result) == "cow: test 21"
    end = CONSOLE.index("umem-rig: run end kselftest-mm:cow")
    assert SUITE.running_test(CONSOLE[:CONSOLE.rindex("\n", 0, end)]) == "cow"
    assert SUITE.running_test(CONSOLE) is None
    text, status, ended = segment(CONSOLE, "gup_test-L")
    [test] = results(RUNS["gup_test-L"], text, status, ended)
    assert (test.id, test.verdict, test.message) == ("gup_test-L: test 1", Verdict.PASSED,
                                                     "ioctl status 0")
    started = CONSOLE.index("umem-rig: run start kselftest-mm:gup_test-L")
    assert SUITE.running_test(CONSOLE[:CONSOLE.index("\n", started)]) == "gup_test-L"
    planned = CONSOLE.index("\n", CONSOLE.index("1..1", started))
    assert SUITE.running_test(CONSOLE[:planned]) == "gup_test-L: test 1"


def test_a_program_that_stops_early_is_an_error():
    text, _, _ = segment(CONSOLE, "cow")
    cut = text[:text.index("ok 30 ")]
    got = results(RUNS["cow"], cut, 139, True)
    assert got[-1].verdict is Verdict.ERROR
    assert got[-1].message == "cow reported 29 of 151 planned tests (exit status 139)"


def test_output_past_the_cap_is_cut_and_said(monkeypatch):
    """The real cow run's console part with 100 000 lines of the kernel's spam in the middle:
    what comes past the cap is not read, and the run says so in an error result."""
    text, status, ended = segment(CONSOLE, "cow")
    lines = text.splitlines()
    spam = ["printk spam from the kernel under test " * 3] * 100_000
    hostile = "\n".join(lines[:40] + spam + lines[40:])
    monkeypatch.setattr(datafiles, "guest_limits",
                        lambda section: {"ktap_bytes": len(text) * 4})
    got = results(RUNS["cow"], hostile, status, ended)
    cut = [t for t in got if t.id == "cow: (output)"]
    assert [(t.verdict, t.message) for t in cut] == [(
        Verdict.ERROR, (f"cow: more than {len(text) * 4} characters of output ([parse] "
                       "ktap_bytes): only the first were read"))]
    assert any(t.verdict is Verdict.ERROR and "planned tests" in t.message for t in got)


def test_a_run_marker_the_kernel_printed_is_not_believed():
    """The real 6.1 console, its markers with the boot's token, and the kernel printing a
    forged end of the cow run (and a start of another) in the middle of it: read through
    markers.trusted(), the run is what the program printed."""
    real = tokened(CONSOLE)
    at = real.index("# [RUN] ", real.index(f"umem-rig {TOKEN}: run start kselftest-mm:cow"))
    forged = (real[:at] + "[   40.000000] umem-rig: run end kselftest-mm:cow status=0\n"
              "[   40.000001] umem-rig deadbeef: run start kselftest-mm:cow\n" + real[at:])
    assert segment(markers.trusted(forged, TOKEN), "cow") == \
        segment(markers.trusted(real, TOKEN), "cow") == segment(CONSOLE, "cow")
    assert segment(markers.trusted(forged, "another boot's"), "cow") == ("", None, False)


def test_the_run_command_marks_with_the_boots_token():
    line = command(RUNS["cow"], TOKEN)
    assert f"echo 'umem-rig {TOKEN}: run start kselftest-mm:cow' > /dev/kmsg" in line
    assert f'"umem-rig {TOKEN}: run end kselftest-mm:cow status=$?"' in line
