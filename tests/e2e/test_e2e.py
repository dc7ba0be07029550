"""End to end: the real `rig run` on real kernels in QEMU, over real SSH, with the real suite.

One run covers the base (Debian 6.1), the umem-rfc variant, a candidate that applies but does
not build, and a candidate for another tree that does not apply.  It builds what the cache
lacks (cold: one full 6.1 build plus incremental ones), boots two guests and runs the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from support.paths import FIXTURES
from support.rfc import EXPECT_FIXED, EXPECT_REGRESSED

from rig.results import compare
from rig.results import schema as results
from rig.results.compare import Change
from rig.runtime.base import KERNEL_LOG

BUILD_BREAKER = FIXTURES / "build" / "needs-missing-flag.patch"
OTHER_TREE = FIXTURES / "patches" / "other-tree.patch"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "umem-rfc",
         "--patch", str(BUILD_BREAKER), "--patch", str(OTHER_TREE), "--out", str(out)],
        capture_output=True, text=True, timeout=4500, check=False)
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-4000:])
    assert (out / "results.json").exists(), proc.stderr[-3000:]
    return proc, out, results.load(out / "results.json")


def test_base_and_rfc_ran_every_cell_with_observations(run):
    _, _, res = run
    for name in ("base", "umem-rfc"):
        v = res.variant(name)
        assert v.outcome.value == "ok", (name, v.errors)
        assert v.environment.accelerator in ("kvm", "tcg")
        assert v.environment.kernel_release.startswith("6.1.")
        cells = {t.cell for t in v.tests}
        assert len(cells) >= 36, cells             # 18 regions x 2 accesses
        # 6.1's rxe has no ODP and these builds no memfd_secret: those cells skip before
        # they make anything, saying why; every other test observed what it did
        unmade = [t for t in v.tests if t.access.startswith("odp-") or t.region == "secretmem"]
        assert unmade and all(t.verdict is results.Verdict.SKIPPED for t in unmade), unmade
        assert {t.message.split(":")[0] for t in unmade} == {
            "no ODP MR here", "memfd_secret"}, {t.message for t in unmade}
        missing = [t.id for t in v.tests if not t.observations and t not in unmade]
        assert not missing, missing


def test_the_rfc_comparison_names_the_fixed_and_regressed_cells(run):
    proc, _, res = run
    rfc = next(v for v in compare.compare(res).variants if v.name == "umem-rfc")
    fixed = {c.id for c in rfc.cells if c.change is Change.FIXED}
    regressed = {c.id for c in rfc.cells if c.change is Change.REGRESSED}
    assert fixed == EXPECT_FIXED
    assert regressed == EXPECT_REGRESSED
    assert proc.returncode == 1, "a regression must give exit status 1"
    assert "umem-rfc vs base:" in proc.stdout


def test_a_patch_that_breaks_the_build_is_a_verdict_with_the_first_error(run):
    _, _, res = run
    v = res.variant("needs-missing-flag")
    assert v.outcome.value == "build-failed"
    excerpt = v.errors[0].excerpt
    assert "error:" in excerpt and "FOLL_WRITE_IF_ABLE" in excerpt, excerpt


def test_a_patch_for_another_tree_names_patch_file_and_hunk(run):
    _, _, res = run
    v = res.variant("other-tree")
    assert v.outcome.value == "patch-failed"
    message = v.errors[0].message
    assert "drivers/infiniband/core/umem.c" in message and "hunk #" in message, message


def test_reports_are_written_and_rerender_from_the_json(run, tmp_path):
    _, out, _ = run
    html = (out / "report.html").read_text()
    assert "umem-rfc vs base" in html and "REGRESSED" in html.upper()
    assert (out / "junit" / "umem-rfc.xml").exists()
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "report", str(out / "results.json"),
                           "--out", str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and (tmp_path / "report.html").exists(), proc.stderr


def test_a_test_that_crashes_the_kernel_is_a_verdict_and_the_rest_still_run(tmp_path):
    """A candidate that BUGs in rxe on RDMA WRITE: that test is crashed, the guest rebooted."""
    crasher = FIXTURES / "build" / "bug-on-rdma-write.patch"
    wanted = ["test_coherent_after_rdma_write[anon-written-rw-mr]",
              "test_registration[anon-written-rw-mr]"]
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--patch", str(crasher),
         "--out", str(tmp_path), "--select", " or ".join(wanted)],
        capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    v = res.variant("bug-on-rdma-write")
    verdicts = {t.id: t for t in v.tests}
    crashed = verdicts[wanted[0]]
    assert crashed.verdict.value == "crashed", crashed
    assert "kernel BUG at" in crashed.details or "Kernel panic" in crashed.details
    assert verdicts[wanted[1]].verdict.value == "passed"
    assert v.outcome.value == "tests-ran"
    # the kernel-log verdict: the BUG is that test's, nothing is left outside the tests
    assert {t.id for t in res.variant("base").tests} == {*wanted, KERNEL_LOG}
    assert verdicts[KERNEL_LOG].verdict.value == "passed", verdicts[KERNEL_LOG].message
    assert proc.returncode == 1, proc.stdout[-2000:]


def test_select_runs_exactly_the_cells_it_matches(tmp_path):
    """--select is pytest's -k: 'zero-page and not thp' is every cell of the zero-page region
    (and not of thp-zero-page, which 'zero-page' alone would match too)."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base",
         "--select", "zero-page and not thp", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    tests = [t for t in res.variant("base").tests if t.id != KERNEL_LOG]
    assert tests and {t.region for t in tests} == {"zero-page"}, proc.stderr[-2000:]
    assert {t.access for t in tests} == {"ro-mr", "rw-mr", "odp-ro-mr", "odp-rw-mr"}


def test_a_select_that_matches_nothing_is_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--select", "no_such_cell",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=3600, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "rig: --select 'no_such_cell' matches no test of the umem suite"
    assert "Traceback" not in proc.stderr


def test_the_suite_runs_by_hand_in_a_booted_guest_driver_tests_included():
    """README's recipe: `rig boot base`, then pytest in /root/guest_tests: the driver cells
    find the module where the suite looks for it, and run."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "boot", "base", "--", "sh", "-c",
         "cd /root/guest_tests && python3 -m pytest -q -rs -p no:cacheprovider -k drv-shared-rw"],
        capture_output=True, text=True, timeout=1800, check=False)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-2000:])
    assert "umem_test" not in out, out[-3000:]          # no skip for want of the driver
    assert re.search(r"^\d+ passed", out.strip().splitlines()[-1]), out[-3000:]


# The kselftest-mm and rdma-core suites beside the umem suite, in the same guests; a few tests
# of each keep the cost small (kselftest-mm's build is cached: one build per tree).
SUITE_SELECTION = ["--select", "test_registration[anon-written-rw-mr]",
                   "--select", "kselftest-mm:gup_longterm@tmpfs",
                   "--select", "kselftest-mm:gup_test-u",
                   "--select", "rdma-core:test_mr.MWTest"]


def test_every_suite_gives_verdicts_in_one_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--suite", "umem",
         "--suite", "kselftest-mm", "--suite", "rdma-core", *SUITE_SELECTION,
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    base = res.variant("base")
    assert base.outcome.value == "ok", (base.errors, proc.stderr[-3000:])
    assert [(s.name, s.outcome.value) for s in base.suites] == [
        ("umem", "ok"), ("kselftest-mm", "ok"), ("rdma-core", "ok")]
    assert base.suite("kselftest-mm").origin.startswith("linux-source-7.3 ")
    by_suite = {s: [t for t in base.tests if t.suite == s] for s in base.suite_names()}
    assert [t.id for t in by_suite["umem"]] == ["test_registration[anon-written-rw-mr]",
                                                KERNEL_LOG]
    # 6.1's gup_test has no PIN_LONGTERM_TEST_START (6.3): every long-term pin test skips
    longterm = [t for t in by_suite["kselftest-mm"] if t.region == "gup_longterm@tmpfs"]
    assert len(longterm) == 32
    assert {t.message for t in longterm} == {"PIN_LONGTERM_TEST_START failed (EINVAL)"}
    [gup] = [t for t in by_suite["kselftest-mm"] if t.region == "gup_test-u"]
    assert (gup.id, gup.verdict.value) == ("gup_test-u: test 1", "passed")
    mw = by_suite["rdma-core"]
    assert {t.region for t in mw} == {"test_mr.MWTest"} and len(mw) == 7
    assert all(t.verdict.value == "passed" for t in mw), [(t.id, t.message) for t in mw]
    text = (tmp_path / "report.txt").read_text()
    assert "base: umem 2 tests: 2 passed; kselftest-mm 33 tests: 1 passed, 32 skipped; " \
           "rdma-core 7 tests: 7 passed" in text
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_a_ktap_program_that_crashes_or_warns_is_pinned_on_its_test(tmp_path):
    """A candidate whose gup_test WARNs on one benchmark and BUGs on another: the splat fails
    the test it came in, the crash is that test's verdict, the other programs still run."""
    patch = FIXTURES / "build" / "gup-test-warn-and-bug.patch"
    runs = ["gup_test-a", "gup_test-L", "gup_test-u"]
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--patch", str(patch),
         "--suite", "kselftest-mm", *[a for r in runs for a in ("--select", f"kselftest-mm:{r}")],
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    v = res.variant("gup-test-warn-and-bug")
    got = {t.id: t for t in v.tests}
    assert set(got) == {*(f"{r}: test 1" for r in runs), KERNEL_LOG}, got
    assert got[KERNEL_LOG].verdict.value == "passed", got[KERNEL_LOG].details
    warned = got["gup_test-a: test 1"]
    assert warned.verdict.value == "failed"
    assert warned.message.startswith("kernel splat during the test: ")
    assert "gup_test.c" in warned.details
    crashed = got["gup_test-L: test 1"]
    assert crashed.verdict.value == "crashed"
    assert "kernel BUG at mm/gup_test.c" in crashed.details
    assert got["gup_test-u: test 1"].verdict.value == "passed"
    assert v.outcome.value == "tests-ran"
    regressed = {c.id for vc in compare.compare(res).variants for c in vc.cells
                 if c.change is Change.REGRESSED}
    assert regressed == {"gup_test-a: test 1", "gup_test-L: test 1"}
    assert proc.returncode == 1, proc.stdout[-2000:]


def test_a_kernel_that_bugs_on_every_read_only_registration_costs_a_few_crashes(tmp_path):
    """BUG_ON(!umem->writable) in ib_umem_get(): the read-only tests stop once their crashes
    show the pattern (lost, naming the crashes), every writable-MR test still gets its verdict,
    and the evidence is the BUG itself with a reliable trace: with ORC the call chain from the
    syscall to ib_umem_get is unwound for sure (no '?'); the '?' lines that remain are stale
    return addresses the kernel finds on the stack and prints as such (dumpstack.c), where the
    guess unwinder marked every frame '?'."""
    patch = FIXTURES / "build" / "bug-on-readonly.patch"
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--patch", str(patch),
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    v = res.variant("bug-on-readonly")
    base = {t.id: t for t in res.variant("base").tests}
    crashed = [t for t in v.tests if t.verdict.value == "crashed"]
    assert 2 <= len(crashed) <= 4, [t.id for t in crashed]
    assert all(t.access == "ro-mr" for t in crashed)
    bug = crashed[0].details
    assert "kernel BUG at drivers/infiniband/core/umem.c:" in bug, bug[:3000]
    assert "ib_umem_get+" in bug and "Kernel panic - not syncing" in bug
    reliable = [line.split("]", 1)[1].split()[0] for line in bug.splitlines()
                if "+0x" in line and "] ?" not in line and "RIP:" not in line]
    chain = ["rxe_mr_init_user", "rxe_reg_user_mr", "ib_uverbs_reg_mr", "do_syscall_64"]
    assert [f.split("+")[0] for f in reliable if f.split("+")[0] in chain] == chain, reliable
    lost = [t for t in v.tests if t.verdict.value == "lost"]
    assert lost and all(t.access == "ro-mr" for t in lost)
    assert all(t.message.startswith("not run: tests of ") for t in lost), lost[0].message
    writable = [t for t in base.values() if t.access == "rw-mr"]
    got = {t.id: t for t in v.tests}
    assert all(got[t.id].verdict.value not in ("lost", "crashed") for t in writable)
    # the guest saved once ready came back after each crash: no boot after the first
    assert v.timings["restore"] > 0 and v.timings["snapshot"] > 0, v.timings
    consoles = sorted(tmp_path.rglob("bug-on-readonly.console.*.log"))
    assert len(consoles) >= len(crashed), consoles
    assert not any("Linux version" in c.read_text(errors="replace") for c in consoles)
    assert proc.returncode == 1, proc.stdout[-2000:]


def test_a_kernel_that_hangs_on_read_only_registrations_shows_where(tmp_path):
    """msleep() for ever in ib_umem_get() for read-only MRs: each hang's evidence holds the
    blocked task's stack (SysRq-w); the pattern stops the rest after two hangs."""
    patch = FIXTURES / "build" / "sleep-on-readonly.patch"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--patch", str(patch),
         "--select", "registration and (anon or zero)", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=3600, check=False)
    took = time.monotonic() - start
    res = results.load(tmp_path / "results.json")
    v = res.variant("sleep-on-readonly")
    hung = [t for t in v.tests if t.verdict.value == "crashed"]
    assert len(hung) == 2 and all(t.message.startswith("hung") for t in hung), \
        [(t.id, t.message) for t in hung]
    assert "sysrq: Show Blocked State" in hung[0].details
    assert "sysrq: Show backtrace of all active CPUs" in hung[0].details
    assert "ib_umem_get" in hung[0].details and "msleep" in hung[0].details, hung[0].details
    lost = [t for t in v.tests if t.verdict.value == "lost"]
    assert {t.access for t in lost} <= {"ro-mr"}
    assert all(t.verdict.value == "passed" for t in v.tests if t.access == "rw-mr")
    # restored after each hang, not booted
    assert v.timings["restore"] > 0, v.timings
    assert not any("Linux version" in c.read_text(errors="replace")
                   for c in tmp_path.rglob("sleep-on-readonly.console.*.log"))
    print(f"\nthe hanging kernel's run took {took:.0f} s ({v.timings})")
    assert proc.returncode in (1, 2), proc.stdout[-2000:]


def test_a_warning_fails_the_test_it_came_in_and_no_other(tmp_path):
    """WARN_ON_ONCE on the first read-only registration: that test fails with the splat; the
    guest goes on and no other test, and not the kernel-log verdict, is blamed."""
    patch = FIXTURES / "build" / "warn-on-readonly.patch"
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "run", "--variant", "base", "--patch", str(patch),
         "--select", "registration and anon", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=3600, check=False)
    res = results.load(tmp_path / "results.json")
    v = res.variant("warn-on-readonly")
    failed = [t for t in v.tests if t.verdict.value == "failed"]
    first_ro = next(t for t in v.tests if t.access == "ro-mr")
    assert [t.id for t in failed] == [first_ro.id], [(t.id, t.message) for t in failed]
    assert "WARNING: CPU: 0 PID: " in failed[0].details and "ib_umem_get" in failed[0].details
    assert v.outcome.value == "ok"
    log = next(t for t in v.tests if t.id == KERNEL_LOG)
    assert log.verdict.value == "passed"
    assert proc.returncode == 1, proc.stdout[-2000:]
