"""The rdma-core suite's host side on real output from a guest (fixtures/suites/README.md)."""

import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from support.paths import FIXTURES

from rig.results import junit
from rig.results.schema import Verdict
from rig.runtime.suites import guest_pytest
from rig.runtime.suites.base import SuiteError
from rig.runtime.suites.rdma_core import RdmaCore, Recipe, case_id, from_node, node

SUITES = FIXTURES / "suites"
XML = SUITES / "rdma-core-6.1.192.xml"


def parsed():
    tests = junit.parse(XML, case_id)
    for t in tests:         # what RdmaCore.run() does with them
        t.region, _, t.check = t.id.rpartition(".")
    return {t.id: t for t in tests}


def test_counts_match_pytests_own_summary():
    suite = ET.parse(XML).getroot().find("testsuite")
    counts = Counter(t.verdict for t in parsed().values())
    assert sum(counts.values()) == int(suite.get("tests")) == 158
    assert counts[Verdict.FAILED] == int(suite.get("failures"))
    assert counts[Verdict.SKIPPED] == int(suite.get("skipped"))


def test_ids_are_unittests_own_and_split_into_class_and_test():
    tests = parsed()
    mw = tests["test_mr.MWTest.test_mw_type2"]
    assert (mw.region, mw.check, mw.verdict) == ("test_mr.MWTest", "test_mw_type2",
                                                 Verdict.PASSED)
    rereg = tests["test_mr.MRTest.test_mr_rereg_access"]
    assert rereg.verdict is Verdict.SKIPPED
    assert rereg.message.startswith("Rereg MR is not supported")


def test_what_rxe_on_6_1_cannot_do_is_a_failure_or_a_reason():
    tests = parsed()
    # IBV_WR_ATOMIC_WRITE: rxe learned it in 6.2
    atomic_write = tests["test_qpex.QpExTestCase.test_qp_ex_rc_atomic_write"]
    assert atomic_write.verdict is Verdict.FAILED
    assert "local QP operation error" in atomic_write.message
    reasons = {t.message for t in tests.values() if t.verdict is Verdict.SKIPPED}
    assert {"Device memory is not supported", "Create XRCD is not supported",
            "ODP is not supported - No ODP caps"} <= reasons


def test_nothing_left_out_ran():
    recipe = Recipe.load()
    for left_out in recipe.deselect:
        assert not [t for t in parsed() if t.startswith(left_out + ".")], left_out


def test_nodes_and_ids():
    assert node("test_mr.MWTest.test_mw_type1") == "tests/test_mr.py::MWTest::test_mw_type1"
    assert node("test_mr") == "tests/test_mr.py"
    assert from_node("tests/test_mr.py::MWTest::test_mw_type1") == "test_mr.MWTest.test_mw_type1"
    suite = RdmaCore()
    crashed = suite.host_result("tests/test_flow.py::FlowTest::test_ipv4_spec_flow_traffic",
                                Verdict.ERROR, "the test killed pytest (signal 11)", "", [])
    assert (crashed.id, crashed.region, crashed.check) == (
        "test_flow.FlowTest.test_ipv4_spec_flow_traffic", "test_flow.FlowTest",
        "test_ipv4_spec_flow_traffic")


def test_a_selection_must_be_in_a_module_it_runs():
    suite = RdmaCore()
    suite.validate(("test_mr.MWTest", "test_qp"))
    with pytest.raises(SuiteError, match="'test_mlx5_dr' is not in a module the suite runs"):
        suite.validate(("test_mlx5_dr",))


def test_the_markers_name_the_test_that_killed_pytest():
    console = ("[   54.771372] umem-rig: test start tests/test_flow.py::FlowTest::test_eth\n"
               "[   54.955383] umem-rig: test end tests/test_flow.py::FlowTest::test_eth\n"
               "[   54.959384] umem-rig: test start tests/test_flow.py::FlowTest::test_ipv4\n")
    assert guest_pytest.running_test(console) == "tests/test_flow.py::FlowTest::test_ipv4"


def test_on_6_12_rxe_does_atomic_write():
    tests = junit.parse(SUITES / "rdma-core-6.12.117.xml", case_id)
    by_id = {t.id: t for t in tests}
    assert by_id["test_qpex.QpExTestCase.test_qp_ex_rc_atomic_write"].verdict is Verdict.PASSED
    assert {t.id for t in tests} == set(parsed())        # the same tests as on 6.1
