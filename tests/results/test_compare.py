"""The comparison on results built from real parsed JUnit: one run per fake kernel.

In synthetic_guest_suite.py the "rfc" kernel pins the zero page for read-only MRs (so the MR goes
stale when the CPU writes) and stops forcing a COW on driver memory; these tests check that
the comparison reports exactly that.
"""

import dataclasses
import json

import pytest
from support.paths import FIXTURES

from rig.core.model import Outcome, StageError
from rig.core.status import ExitStatus
from rig.results import compare, junit
from rig.results import schema as results
from rig.results.compare import ABSENT, Change, CompareError, Difference
from rig.results.schema import Results, VariantResult, Verdict

JUNIT = FIXTURES / "junit"


def variant(name, xml, outcome=Outcome.OK, is_base=False):
    return VariantResult(name, is_base, outcome, tests=junit.parse(JUNIT / xml))


def run(*variants):
    return compare.compare(Results([], [variant("base", "base.synthetic.xml", is_base=True), *variants]))


def ids(vc, change):
    return {c.id for c in vc.cells if c.change is change}


def test_rfc_against_base():
    c = run(variant("umem-rfc", "rfc.synthetic.xml"))
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
    [vc] = run(variant("umem-rfc", "rfc.synthetic.xml")).variants
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
    [vc] = run(variant("umem-rfc", "rfc.synthetic.xml")).variants
    cell = next(c for c in vc.cells if c.id == "test_no_side_effect[drv-shared-rw-ro-mr]")
    assert cell.change is Change.UNCHANGED
    assert cell.base.observations["raw_pfn_after"] == cell.other.observations["raw_pfn_after"]
    untouched = next(c for c in vc.cells if c.id == "test_no_side_effect[anon-untouched-ro-mr]")
    assert [d.key for d in untouched.differences] == ["page_after"]   # raw_pfn_after differs too
    assert untouched.base.observations["raw_pfn_after"] != \
        untouched.other.observations["raw_pfn_after"]


def test_xfail_to_xfail_is_unchanged():
    [vc] = run(variant("umem-rfc", "rfc.synthetic.xml")).variants
    cell = next(c for c in vc.cells if c.id == "test_registration_matches_access[drv-pfnmap-ro-mr]")
    assert (cell.base.verdict, cell.change) == (Verdict.XFAILED, Change.UNCHANGED)


def test_the_base_against_itself():
    c = run(variant("again", "base.synthetic.xml"))
    assert {cell.change for cell in c.variants[0].cells} == {Change.UNCHANGED}
    assert c.headline()[1] == "again vs base: 0 fixed, 0 regressed, 0 changed"
    assert c.exit_status() == ExitStatus.OK


def test_a_crash_regresses_and_the_tests_it_kept_from_running_are_lost():
    rfc = variant("umem-rfc", "rfc.synthetic.xml", Outcome.TESTS_RAN)
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
    again = variant("again", "base.synthetic.xml", Outcome.TESTS_RAN)
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
    cand = variant("no-driver", "base.synthetic.xml")
    for i, t in enumerate(cand.tests):
        if t.region.startswith("drv-"):
            cand.tests[i] = dataclasses.replace(
                t, verdict=Verdict.ERROR, message="/dev/umem_test: the driver did not load")
    driver = [t for t in variant("base", "base.synthetic.xml").tests if t.region.startswith("drv-")]
    ran = sum(1 for t in driver if t.verdict in compare.RAN)
    c = run(cand)
    [vc] = c.variants
    assert vc.count(Change.LOST) == ran > 0
    # the cells the base skipped (nothing to check) now error: not comparable, not a loss
    assert c.headline()[1] == f"no-driver vs base: 0 fixed, 0 regressed, 0 changed, " \
                              f"{ran} lost, {len(driver) - ran} not-comparable"
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_new_tests_and_tests_gone_missing():
    rfc = variant("umem-rfc", "rfc.synthetic.xml")
    dropped = rfc.tests.pop(0)
    rfc.tests.append(dataclasses.replace(rfc.tests[0], id="test_new_check[zero-page-ro-mr]"))
    [vc] = run(rfc).variants
    assert ids(vc, Change.LOST) == {dropped.id}
    assert ids(vc, Change.NEW) == {"test_new_check[zero-page-ro-mr]"}
    assert vc.headline().endswith(", 1 lost, 1 new")


def test_a_verdict_on_the_same_side_is_a_change():
    again = variant("again", "base.synthetic.xml")
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
    c = run(wia, variant("umem-rfc", "rfc.synthetic.xml"))
    assert c.exit_status() == ExitStatus.REGRESSION


def test_a_base_without_verdict():
    base = VariantResult("base", True, Outcome.PANICKED,
                         errors=[StageError("boot", "Kernel panic - not syncing: VFS")])
    c = compare.compare(Results([], [base, variant("umem-rfc", "rfc.synthetic.xml")]))
    assert c.headline() == ["base: panicked: Kernel panic - not syncing: VFS",
                            "umem-rfc vs base: not comparable, base has no verdict"]
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_the_base_headline_counts_its_verdicts():
    c = run()
    assert c.headline() == ["base: 64 tests: 39 passed, 2 failed, 21 skipped, 2 xfailed"]


def test_no_base():
    with pytest.raises(CompareError, match=r"no base variant .*\(variants: umem-rfc\)"):
        compare.compare(Results([], [variant("umem-rfc", "rfc.synthetic.xml")]))


def test_a_real_run_of_the_four_default_variants():
    """real-4-variants.json: `rig run` of base, umem-rfc, write-if-able and upstream (6.12)."""
    res = results.load(FIXTURES / "results" /
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


SUITES = FIXTURES / "suites"


def three_suites(name, umem_xml, is_base=False):
    """A variant with the umem suite (JUnit above) and the other two suites' real output
    from a 6.1 guest (fixtures/suites/)."""
    from rig.runtime.suites.kselftest_mm import KselftestMM, segment
    from rig.runtime.suites.kselftest_mm import results as ktap_results
    from rig.runtime.suites.rdma_core import case_id

    tests = junit.parse(JUNIT / umem_xml)
    for t in tests:
        t.suite = "umem"
    console = (SUITES / "kselftest-mm-6.1.192.console.log").read_text()
    for run in KselftestMM().recipe.runs:
        tests += ktap_results(run, *segment(console, run.name))
    rdma = junit.parse(SUITES / "rdma-core-6.1.192.xml", case_id)
    for t in rdma:
        t.suite = "rdma-core"
    suites = [results.SuiteInfo(s, Outcome.OK) for s in ("umem", "kselftest-mm", "rdma-core")]
    return VariantResult(name, is_base, Outcome.OK, tests=tests + rdma, suites=suites)


def test_each_suite_is_counted_on_its_own():
    base = three_suites("base", "base.synthetic.xml", is_base=True)
    rfc = three_suites("umem-rfc", "rfc.synthetic.xml")
    # one kselftest verdict turned, by hand, so that two suites have news
    turned = next(t for t in rfc.tests if t.id == "cow: Basic COW after fork() ... with base page")
    turned.verdict = Verdict.FAILED
    c = compare.compare(Results([], [base, rfc]))
    assert c.headline() == [
        ("base: umem 64 tests: 39 passed, 2 failed, 21 skipped, 2 xfailed; kselftest-mm 246 "
         "tests: 73 passed, 169 skipped, 4 xfailed; rdma-core 158 tests: 86 passed, 1 failed, "
         "71 skipped"),
        ("umem-rfc vs base: umem 2 fixed, 3 regressed, 7 changed; kselftest-mm 0 fixed, "
         "1 regressed, 0 changed; rdma-core 0 fixed, 0 regressed, 0 changed")]
    [vc] = c.variants
    assert {c.key for c in vc.cells if c.change is Change.REGRESSED} >= {
        ("kselftest-mm", "cow: Basic COW after fork() ... with base page")}
    assert c.exit_status() == ExitStatus.REGRESSION


def test_a_suite_that_did_not_build_leaves_the_others_verdicts():
    base = three_suites("base", "base.synthetic.xml", is_base=True)
    again = three_suites("again", "base.synthetic.xml")
    again.tests = [t for t in again.tests if t.suite != "kselftest-mm"]
    again.suites[1] = results.SuiteInfo("kselftest-mm", Outcome.BUILD_FAILED)
    again.outcome = Outcome.TESTS_RAN
    c = compare.compare(Results([], [base, again]))
    assert c.headline()[1].startswith(
        "again vs base: umem 0 fixed, 0 regressed, 0 changed; kselftest-mm build-failed in "
        "again; rdma-core 0 fixed, 0 regressed, 0 changed")
    assert c.exit_status() == ExitStatus.NO_VERDICT


def test_the_same_id_in_two_suites_is_two_tests():
    base = variant("base", "base.synthetic.xml", is_base=True)
    other = variant("other", "base.synthetic.xml")
    for t in base.tests + other.tests:
        t.suite = "umem"
    twin = dataclasses.replace(other.tests[0], suite="rdma-core", verdict=Verdict.FAILED)
    other.tests.append(twin)
    [vc] = compare.compare(Results([], [base, other])).variants
    assert [c.change for c in vc.cells if c.id == twin.id] == [Change.UNCHANGED, Change.NEW]


def test_a_real_run_of_the_four_default_variants_with_every_suite():
    """real-4-variants-3-suites.json.gz: what each suite says of each kernel."""
    import gzip

    path = FIXTURES / "results" / "real-4-variants-3-suites.json.gz"
    res = results.Results.from_json(gzip.decompress(path.read_bytes()).decode(), str(path))
    cmp = compare.compare(res)
    assert cmp.headline()[1:] == [
        ("umem-rfc vs base: umem 2 fixed, 4 regressed, 11 changed; kselftest-mm 0 fixed, "
         "0 regressed, 0 changed; rdma-core 0 fixed, 0 regressed, 0 changed"),
        ("write-if-able vs base: umem 2 fixed, 2 regressed, 7 changed; kselftest-mm 0 fixed, "
         "0 regressed, 0 changed; rdma-core 0 fixed, 0 regressed, 0 changed"),
        ("upstream vs base: umem 1 fixed, 0 regressed, 3 changed; kselftest-mm 0 fixed, "
         "0 regressed, 116 changed, 504 new; rdma-core 1 fixed, 0 regressed, 0 changed"),
    ]
    assert cmp.exit_status() == ExitStatus.REGRESSION
    upstream = next(v for v in cmp.variants if v.name == "upstream")
    # rxe learned IBV_WR_ATOMIC_WRITE after 6.1
    assert {c.id for c in upstream.cells if c.change is Change.FIXED and
            c.suite == "rdma-core"} == {"test_qpex.QpExTestCase.test_qp_ex_rc_atomic_write"}
    # 6.12's gup_test has PIN_LONGTERM_TEST_START: cow's R/O pin of the zero page runs, and
    # unsharing keeps the pin coherent
    zero = next(c for c in upstream.cells
                if c.id == "cow: R/O longterm GUP pin ... with shared zeropage")
    assert (zero.base.verdict, zero.other.verdict) == (Verdict.SKIPPED, Verdict.PASSED)


def test_a_change_a_rerun_takes_back_is_flaky_not_a_verdict():
    """The RFC's synthetic run, each changed test run once more on both kernels: one stale
    read the re-run passes (as rdma-core's test_resize_cq did on 6.12, 2026-12-02)."""
    base = variant("base", "base.synthetic.xml", is_base=True)
    rfc = variant("umem-rfc", "rfc.synthetic.xml")
    flip = "test_coherent_after_cpu_write[zero-page-ro-mr]"
    for v in (base, rfc):
        for t in v.tests:
            t.reruns = [Verdict.PASSED if (v is rfc and t.id == flip) else t.verdict]
    c = compare.compare(Results([], [base, rfc]))
    [vc] = c.variants
    assert ids(vc, Change.FLAKY) == {flip}
    assert flip not in ids(vc, Change.REGRESSED) and len(ids(vc, Change.REGRESSED)) == 2
    assert c.headline()[1] == "umem-rfc vs base: 2 fixed, 2 regressed, 7 changed, 1 flaky"
    assert c.exit_status() == ExitStatus.REGRESSION                 # the other two stand
    for t in rfc.tests:
        if t.id != flip and t.verdict is Verdict.FAILED:
            t.verdict = Verdict.PASSED
            t.reruns = [Verdict.PASSED]
    assert compare.compare(Results([], [base, rfc])).exit_status() == ExitStatus.OK


def test_reruns_go_through_the_results_file(tmp_path):
    res = Results([], [variant("base", "base.synthetic.xml", is_base=True)])
    res.variants[0].tests[0].reruns = [Verdict.FAILED, Verdict.PASSED]
    res.save(tmp_path / "r.json")
    back = results.load(tmp_path / "r.json").variants[0].tests[0]
    assert back.reruns == [Verdict.FAILED, Verdict.PASSED] and back.flaky
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["variants"][0]["tests"][0]["reruns"] = ["maybe"]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(results.ResultsError, match=r"tests\[0\]\.reruns\[0\]: 'maybe' is not one"):
        results.load(tmp_path / "bad.json")
