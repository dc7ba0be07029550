"""JUnit parsing on real pytest output (tests/fixtures/junit/README.md says how it was made)."""

import copy
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from support.paths import FIXTURES

from rig.core import datafiles
from rig.core.model import Outcome, StageError
from rig.results import junit
from rig.results.schema import VariantResult, Verdict

JUNIT = FIXTURES / "junit"


def by_id(results):
    return {r.id: r for r in results}


def test_verdict_counts_match_pytests_own_summary():
    for name in ("base.synthetic.xml", "rfc.synthetic.xml", "odd.xml"):
        suite = ET.parse(JUNIT / name).getroot().find("testsuite")
        counts = Counter(r.verdict for r in junit.parse(JUNIT / name))
        assert counts[Verdict.FAILED] + counts[Verdict.XPASSED] == int(suite.get("failures"))
        assert counts[Verdict.SKIPPED] + counts[Verdict.XFAILED] == int(suite.get("skipped"))


def test_base_cells_carry_their_properties():
    results = junit.parse(JUNIT / "base.synthetic.xml")
    assert len({r.id for r in results}) == len(results) == 64
    r = by_id(results)["test_no_side_effect[drv-private-ro-ro-mr]"]
    assert (r.check, r.region, r.access, r.verdict) == (
        "no_side_effect", "drv-private-ro", "ro-mr", Verdict.FAILED)
    assert r.doc == "A read-only registration leaves the process's mapping as it was."
    assert r.observations["page_after"] == "copy"
    assert len(r.observations["raw_pfn_after"]) == 4
    assert r.message.startswith("AssertionError: registration replaced the driver's page")
    assert "def test_no_side_effect" in r.details
    assert r.kmsg and "rxe0" in r.kmsg[0]
    assert r.duration > 0
    assert r.cell == "drv-private-ro-ro-mr"


def test_regions_and_checks_come_from_the_data():
    results = junit.parse(JUNIT / "base.synthetic.xml")
    regions = list(dict.fromkeys(r.region for r in results))
    assert regions[0] == "anon-written" and regions[-1] == "drv-pfnmap" and len(regions) == 8
    assert {r.access for r in results} == {"ro-mr", "rw-mr"}
    assert {r.id.split("[")[0] for r in results} == {f"test_{r.check}" for r in results}


def test_xfail_and_skip():
    results = by_id(junit.parse(JUNIT / "base.synthetic.xml"))
    xfail = results["test_registration_matches_access[drv-pfnmap-ro-mr]"]
    assert xfail.verdict is Verdict.XFAILED
    assert xfail.message == "VM_PFNMAP has no struct pages: GUP cannot pin it"
    skip = results["test_no_side_effect[drv-shared-ro-ro-mr]"]
    assert skip.verdict is Verdict.SKIPPED and "EFAULT" in skip.message
    assert skip.observations == {"registered": False, "errno": "EFAULT"}


def test_teardown_and_setup_errors():
    results = by_id(junit.parse(JUNIT / "odd.xml"))
    assert results["test_teardown_error_after_pass"].verdict is Verdict.ERROR
    # pytest wrote this one as two testcases: one result, the failure stands, both messages
    both = results["test_fails_then_teardown_error"]
    assert both.verdict is Verdict.FAILED
    assert "registration failed: EFAULT" in both.message
    assert "failed on teardown" in both.message
    assert (both.region, both.access) == ("anon-written", "rw-mr")
    assert both.doc == "fails_then_teardown_error stand-in"
    setup = results["test_setup_error"]
    assert setup.verdict is Verdict.ERROR and "/dev/umem_test" in setup.message
    assert (setup.check, setup.region, setup.access) == ("setup_error", "", "")


def test_xpass_strict_and_lenient():
    results = by_id(junit.parse(JUNIT / "odd.xml"))
    assert results["test_strict_xpass"].verdict is Verdict.XPASSED
    assert results["test_lenient_xpass"].verdict is Verdict.PASSED


def test_a_test_without_properties_is_placed_by_the_cells_others_name():
    results = by_id(junit.parse(JUNIT / "odd.xml"))
    known = results["test_without_properties[anon-written-rw-mr]"]
    assert (known.check, known.region, known.access) == (
        "without_properties", "anon-written", "rw-mr")
    unknown = results["test_without_properties[hugepage-ro-mr]"]
    assert (unknown.region, unknown.access) == ("hugepage-ro-mr", "")


def test_a_name_two_modules_share_is_qualified():
    root = ET.parse(JUNIT / "odd.xml").getroot()
    suite = root.find("testsuite")
    twin = copy.deepcopy(suite.find("testcase[@name='test_setup_error']"))
    twin.set("classname", "guest_tests.test_more")
    suite.append(twin)
    results = by_id(junit.parse_string(ET.tostring(root, "unicode")))
    assert "guest_tests.test_odd::test_setup_error" in results
    assert results["guest_tests.test_more::test_setup_error"].check == "setup_error"
    assert "test_strict_xpass" in results


def test_markup_is_kept_as_text():
    hostile = by_id(junit.parse(JUNIT / "odd.xml"))["test_hostile_message"]
    assert "<script>alert(1)</script> &" in hostile.message
    assert "#x1B[31m" in hostile.message          # pytest's stand-in for an escape character
    assert hostile.kmsg == ["WARNING: CPU: 0 PID: 97 at mm/gup.c:1046 <script>"]


def test_collection_error():
    [r] = junit.parse(JUNIT / "collection-error.xml")
    assert r.verdict is Verdict.ERROR
    assert r.message == "collection failure"
    assert "No module named 'pyverbs'" in r.details
    assert (r.id, r.region, r.access) == ("guest_tests.test_broken", "", "")


def test_a_broken_property_becomes_an_error_verdict():
    text = (JUNIT / "base.synthetic.xml").read_text()
    target = 'name="test_registration_matches_access[zero-page-ro-mr]"'
    head, tail = text.split(target)
    tail = tail.replace('name="observations" value="{', 'name="observations" value="{oops', 1)
    r = by_id(junit.parse_string(head + target + tail))[
        "test_registration_matches_access[zero-page-ro-mr]"]
    assert r.verdict is Verdict.ERROR
    assert "property 'observations' is not JSON" in r.message
    assert r.region == "zero-page"


def test_a_cut_short_file_is_named(tmp_path):
    cut = tmp_path / "results.xml"
    text = (JUNIT / "base.synthetic.xml").read_text()
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(junit.JUnitError, match=f"{cut}: not well-formed XML"):
        junit.parse(cut)


def test_not_junit(tmp_path):
    with pytest.raises(junit.JUnitError, match="root element is <html>"):
        junit.parse_string("<html><body/></html>", "page.html")
    with pytest.raises(junit.JUnitError, match="cannot read"):
        junit.parse(tmp_path / "absent.xml")


def test_host_result_splits_the_id_like_the_suite_does():
    known = junit.parse(JUNIT / "base.synthetic.xml")
    r = junit.host_result("test_coherent_after_cpu_write[zero-page-ro-mr]", Verdict.CRASHED,
                          "the guest died: panic", "Kernel panic - not syncing", known)
    assert (r.check, r.region, r.access, r.verdict) == (
        "coherent_after_cpu_write", "zero-page", "ro-mr", Verdict.CRASHED)
    assert r.details == "Kernel panic - not syncing"


def test_own_junit_reads_back_with_host_verdicts():
    tests = junit.parse(JUNIT / "base.synthetic.xml") + junit.parse(JUNIT / "odd.xml")
    tests.append(junit.host_result("test_x[zero-page-rw-mr]", Verdict.CRASHED, "hung",
                                   "rcu: INFO: rcu_sched self-detected stall\x1b[0m", tests))
    tests.append(junit.host_result("test_y[zero-page-rw-mr]", Verdict.LOST, "never ran", "",
                                   tests))
    variant = VariantResult("umem-rfc", False, Outcome.TESTS_RAN, tests=tests)
    back = junit.parse_string(junit.to_junit(variant))
    crashed = tests[-2]
    crashed.details = crashed.details.replace("\x1b", "#x1B")   # XML 1.0 cannot carry ESC
    assert back == tests


def test_own_junit_for_a_variant_without_verdict_fails_in_ci():
    variant = VariantResult("write-if-able", False, Outcome.BUILD_FAILED,
                            errors=[StageError("build", "umem.c:231: error: undeclared",
                                               "231 | gup_flags |= FOLL_WRITE_IF_ABLE;")])
    suite = ET.fromstring(junit.to_junit(variant)).find("testsuite")
    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    error = suite.find("testcase/error")
    assert error.get("message") == "build-failed: umem.c:231: error: undeclared"
    assert "FOLL_WRITE_IF_ABLE" in error.text


def test_a_real_guest_run_parses_cell_by_cell():
    """guest-6.1-base.xml: the suite's JUnit file from a real 6.1 guest under QEMU."""
    tests = junit.parse(FIXTURES / "junit" / "guest-6.1-base.xml")
    assert len(tests) == 64
    assert all(t.region and t.access and t.doc and t.observations for t in tests)
    verdicts = Counter(t.verdict for t in tests)
    assert verdicts == {Verdict.PASSED: 39, Verdict.SKIPPED: 21, Verdict.XFAILED: 2,
                        Verdict.FAILED: 2}
    shared_ro = next(t for t in tests if t.id == "test_registration[drv-shared-ro-ro-mr]")
    assert shared_ro.verdict is Verdict.FAILED
    assert shared_ro.observations["registered"] is False


def test_own_junit_has_one_testsuite_per_suite_and_reads_back():
    from rig.results.schema import SuiteInfo
    from rig.runtime.suites.rdma_core import case_id

    umem = junit.parse(JUNIT / "base.synthetic.xml")
    for t in umem:
        t.suite = "umem"
    rdma = junit.parse(FIXTURES / "suites" / "rdma-core-6.1.192.xml",
                       case_id)
    for t in rdma:          # as the suite gives them
        t.suite = "rdma-core"
        t.region, _, t.check = t.id.rpartition(".")
    variant = VariantResult("base", True, Outcome.TESTS_RAN, tests=umem + rdma, suites=[
        SuiteInfo("umem", Outcome.OK), SuiteInfo("kselftest-mm", Outcome.BUILD_FAILED),
        SuiteInfo("rdma-core", Outcome.OK)],
        errors=[StageError("build kselftest-mm", "building cow failed")])
    root = ET.fromstring(junit.to_junit(variant))
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["base/umem", "base/kselftest-mm", "base/rdma-core"]
    assert (suites["base/umem"].get("tests"), suites["base/rdma-core"].get("tests")) == (
        "64", "158")
    # the suite that could not build fails in CI rather than passing empty
    failed = suites["base/kselftest-mm"]
    assert (failed.get("tests"), failed.get("errors")) == ("1", "1")
    assert failed.find("testcase/error").get("message") == \
        "build-failed: building cow failed"
    back = junit.parse_string(junit.to_junit(variant))
    assert [t for t in back if t.suite] == umem + rdma


def _laughs(depth: int) -> str:
    """A billion-laughs DTD: each entity ten of the one before."""
    lines = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, depth + 1)]
    return "<!DOCTYPE testsuites [\n" + "\n".join(lines) + "\n]>"


def test_a_real_junit_file_with_a_dtd_is_refused_not_expanded(tmp_path):
    """The real guest run's file with a billion-laughs DTD after its XML declaration and the
    last entity in a property: read, it would grow a thousandfold; it is refused."""
    real = (JUNIT / "guest-6.1-base.xml").read_text()
    decl, rest = real.split("?>", 1)
    hostile = tmp_path / "junit.xml"
    hostile.write_text(decl + "?>" + _laughs(4) + rest.replace(
        'value="test_registration', 'value="&lol4;test_registration', 1))
    with pytest.raises(junit.JUnitError, match=f"{hostile}: it has a DTD"):
        junit.parse(hostile)


def test_a_junit_file_past_the_cap_is_refused_unread(tmp_path, monkeypatch):
    real = JUNIT / "guest-6.1-base.xml"
    limits = {"junit_bytes": real.stat().st_size - 1}
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: limits)
    with pytest.raises(junit.JUnitError, match=rf"{real}: more than {real.stat().st_size - 1} "
                                               r"bytes \(\[parse\] junit_bytes"):
        junit.parse(real)
    with pytest.raises(junit.JUnitError, match="job 3: more than"):
        junit.parse_string(real.read_text(), "job 3")
