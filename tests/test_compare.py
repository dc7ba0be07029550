"""The comparison on results built from real parsed JUnit: one run per fake kernel.

In fake_guest_suite.py the "rfc" kernel pins the zero page for read-only MRs (so the MR goes
stale when the CPU writes) and stops forcing a COW on driver memory; these tests check that
the comparison reports exactly that.
"""

import dataclasses
from pathlib import Path

import pytest

from rig import compare, junit, results
from rig.compare import ABSENT, Change, CompareError, Difference
from rig.model import Outcome, StageError
from rig.results import Results, VariantResult, Verdict
from rig.status import ExitStatus

JUNIT = Path(__file__).parent / "fixtures" / "junit"


def variant(name, xml, outcome=Outcome.OK, is_base=False):
    return VariantResult(name, is_base, outcome, tests=junit.parse(JUNIT / xml))


def run(*variants):
    return compare.compare(Results([], [variant("base", "base.xml", is_base=True), *variants]))


def ids(vc, change):
    return {c.id for c in vc.cells if c.change is change}


def test_rfc_against_base():
    c = run(variant("umem-rfc", "rfc.xml"))
    [vc] = c.variants
    stale = {f"test_coherent_after_cpu_write[{r}-ro-mr]"
             for r in ("anon-untouched", "zero-page", "anon-prot-read")}
    assert ids(vc, Change.REGRESSED) == stale
    assert ids(vc, Change.FIXED) == {"test_registration_matches_access[drv-shared-ro-ro-mr]",
                                     "test_no_side_effect[drv-private-ro-ro-mr]"}
    changed = ids(vc, Change.CHANGED)
    assert "test_no_side_effect[zero-page-ro-mr]" in changed
    assert "test_driver_write_visible[drv-private-ro-ro-mr]" in changed
    assert vc.count(Change.UNCHANGED) + len(changed) + len(stale) + 2 == 64
    assert c.headline()[1] == "umem-rfc vs base: 2 fixed, 3 regressed, 7 changed"
    assert c.exit_status() == ExitStatus.REGRESSION


def test_differences_name_the_keys_and_both_values():
    [vc] = run(variant("umem-rfc", "rfc.xml")).variants
    cells = {c.id: c for c in vc.cells}
    assert cells["test_no_side_effect[zero-page-ro-mr]"].differences == [
        Difference("page_after", "new", "zero")]
    regressed = cells["test_coherent_after_cpu_write[zero-page-ro-mr]"]
    assert regressed.differences == [Difference("verdict", "passed", "failed"),
                                     Difference("rdma_read", "new bytes", "old bytes")]
    # a skip turned into a pass: another verdict, and keys only one side recorded
    skip_to_pass = cells["test_no_side_effect[drv-shared-ro-ro-mr]"]
    assert skip_to_pass.change is Change.CHANGED
    assert Difference("verdict", "skipped", "passed") in skip_to_pass.differences
    assert Difference("page_after", ABSENT, "same") in skip_to_pass.differences


def test_volatile_observations_are_not_compared():
    [vc] = run(variant("umem-rfc", "rfc.xml")).variants
    cell = next(c for c in vc.cells if c.id == "test_no_side_effect[drv-shared-rw-ro-mr]")
    assert cell.change is Change.UNCHANGED
    assert cell.base.observations["raw_pfn_after"] == cell.other.observations["raw_pfn_after"]
    untouched = next(c for c in vc.cells if c.id == "test_no_side_effect[anon-untouched-ro-mr]")
    assert [d.key for d in untouched.differences] == ["page_after"]   # raw_pfn_after differs too
    assert untouched.base.observations["raw_pfn_after"] != \
        untouched.other.observations["raw_pfn_after"]


def test_xfail_to_xfail_is_unchanged():
    [vc] = run(variant("umem-rfc", "rfc.xml")).variants
    cell = next(c for c in vc.cells if c.id == "test_registration_matches_access[drv-pfnmap-ro-mr]")
    assert (cell.base.verdict, cell.change) == (Verdict.XFAILED, Change.UNCHANGED)


def test_the_base_against_itself():
    c = run(variant("again", "base.xml"))
    assert {cell.change for cell in c.variants[0].cells} == {Change.UNCHANGED}
    assert c.headline()[1] == "again vs base: 0 fixed, 0 regressed, 0 changed"
    assert c.exit_status() == ExitStatus.OK


def test_a_crash_regresses_and_the_tests_it_kept_from_running_are_lost():
    rfc = variant("umem-rfc", "rfc.xml", Outcome.TESTS_RAN)
    by_id = {t.id: i for i, t in enumerate(rfc.tests)}
    crash_id = "test_coherent_after_rdma_write[zero-page-rw-mr]"
    lost_id = "test_coherent_after_rdma_write[drv-shared-rw-rw-mr]"
    rfc.tests[by_id[crash_id]] = junit.host_result(
        crash_id, Verdict.CRASHED, "the guest died: panic", "Kernel panic", rfc.tests)
    rfc.tests[by_id[lost_id]] = junit.host_result(
        lost_id, Verdict.LOST, "never ran", "", rfc.tests)
    c = run(rfc)
    [vc] = c.variants
    assert crash_id in ids(vc, Change.REGRESSED)
    assert ids(vc, Change.LOST) == {lost_id}
    assert c.headline()[1] == (f"umem-rfc vs base: 2 fixed, 4 regressed, 7 changed, "
                               f"1 lost; the guest crashed in {crash_id}")
    assert c.exit_status() == ExitStatus.REGRESSION


def test_lost_tests_leave_the_run_without_a_full_verdict():
    again = variant("again", "base.xml", Outcome.TESTS_RAN)
    at = max(i for i, t in enumerate(again.tests) if t.verdict is Verdict.PASSED)
    again.tests[at] = junit.host_result(again.tests[at].id, Verdict.LOST, "never ran", "",
                                        again.tests)
    again.errors = [StageError("tests", "gave up after 4 crashes")]
    c = run(again)
    assert c.headline()[1] == ("again vs base: 0 fixed, 0 regressed, 0 changed, "
                               "1 lost; tests-ran: gave up after 4 crashes")
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_a_candidate_whose_driver_tests_all_error_loses_coverage_and_exits_2():
    """The driver failed to load with the series: every driver cell errors.  That is lost
    coverage, never a pass: exit 2, "N lost" in the headline."""
    cand = variant("no-driver", "base.xml")
    for i, t in enumerate(cand.tests):
        if t.region.startswith("drv-"):
            cand.tests[i] = dataclasses.replace(
                t, verdict=Verdict.ERROR, message="/dev/umem_test: the driver did not load")
    driver = [t for t in variant("base", "base.xml").tests if t.region.startswith("drv-")]
    ran = sum(1 for t in driver if t.verdict in compare.RAN)
    c = run(cand)
    [vc] = c.variants
    assert vc.count(Change.LOST) == ran > 0
    # the cells the base skipped (nothing to check) now error: not comparable, not a loss
    assert c.headline()[1] == f"no-driver vs base: 0 fixed, 0 regressed, 0 changed, " \
                              f"{ran} lost, {len(driver) - ran} not-comparable"
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_new_tests_and_tests_gone_missing():
    rfc = variant("umem-rfc", "rfc.xml")
    dropped = rfc.tests.pop(0)
    rfc.tests.append(dataclasses.replace(rfc.tests[0], id="test_new_check[zero-page-ro-mr]"))
    [vc] = run(rfc).variants
    assert ids(vc, Change.LOST) == {dropped.id}
    assert ids(vc, Change.NEW) == {"test_new_check[zero-page-ro-mr]"}
    assert vc.headline().endswith(", 1 lost, 1 new")


def test_a_verdict_on_the_same_side_is_a_change():
    again = variant("again", "base.xml")
    target = next(t for t in again.tests if t.verdict is Verdict.PASSED)
    target.verdict = Verdict.XFAILED
    [vc] = run(again).variants
    cell = next(c for c in vc.cells if c.id == target.id)
    assert cell.change is Change.CHANGED
    assert cell.differences == [Difference("verdict", "passed", "xfailed")]


def test_nested_observations_are_flattened_and_raw_keys_anywhere_skipped():
    assert compare.stable({"before": {"zero_page": True, "raw_pfn": 5}, "raw_x": 1, "e": None}) \
        == {"before.zero_page": True, "e": None}


def test_a_variant_without_verdict():
    wia = VariantResult("write-if-able", False, Outcome.BUILD_FAILED, errors=[StageError(
        "build", "umem.c:231:49: error: 'FOLL_WRITE_IF_ABLE' undeclared")])
    c = run(wia)
    assert c.headline()[1] == \
        "write-if-able: build-failed: umem.c:231:49: error: 'FOLL_WRITE_IF_ABLE' undeclared"
    assert c.variants[0].cells == []
    assert c.exit_status() == ExitStatus.NO_VERDICT
    # a regression found elsewhere is still the exit status
    c = run(wia, variant("umem-rfc", "rfc.xml"))
    assert c.exit_status() == ExitStatus.REGRESSION


def test_a_base_without_verdict():
    base = VariantResult("base", True, Outcome.PANICKED,
                         errors=[StageError("boot", "Kernel panic - not syncing: VFS")])
    c = compare.compare(Results([], [base, variant("umem-rfc", "rfc.xml")]))
    assert c.headline() == ["base: panicked: Kernel panic - not syncing: VFS",
                            "umem-rfc vs base: not comparable, base has no verdict"]
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_the_base_headline_counts_its_verdicts():
    c = run()
    assert c.headline() == ["base: 64 tests: 39 passed, 2 failed, 21 skipped, 2 xfailed"]


def test_no_base():
    with pytest.raises(CompareError, match=r"no base variant .*\(variants: umem-rfc\)"):
        compare.compare(Results([], [variant("umem-rfc", "rfc.xml")]))


def test_a_real_run_of_the_four_default_variants():
    """real-4-variants.json: `rig run` of base, umem-rfc, write-if-able and upstream (6.12)."""
    res = results.load(Path(__file__).parent / "fixtures" / "results" /
                       "real-4-variants.json")
    cmp = compare.compare(res)
    assert cmp.headline()[1:] == [
        "umem-rfc vs base: 2 fixed, 4 regressed, 11 changed",
        "write-if-able vs base: 2 fixed, 2 regressed, 7 changed",
        "upstream vs base: 1 fixed, 0 regressed, 3 changed",
    ]
    assert cmp.exit_status() == ExitStatus.REGRESSION
    wia = next(v for v in cmp.variants if v.name == "write-if-able")
    # VM_WRITE at registration time decides: the PROT_READ buffer still pins the zero page
    assert {c.id for c in wia.cells if c.change is compare.Change.REGRESSED} == {
        "test_coherent_after_cpu_write[anon-prot-read-ro-mr]",
        "test_coherent_after_cpu_write[drv-private-ro-ro-mr]"}
