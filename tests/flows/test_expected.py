"""The expected behaviour as data (guest_tests/expected.toml) against real runs.

The end-to-end tests run the real `rig run` of the four default variants once and hold every
test's verdict and key observations against the data, and run the suite's own guards (a READ
that moved no data, or read another MR, fails its check) in a real guest.  The others check the
data and its comparison on a real four-variant run cut down to what the comparison reads
(tests/fixtures/expected/README.md).
"""

from __future__ import annotations

import copy
import gzip
import json
import sys
import tomllib
from pathlib import Path

import pytest
from support.paths import FIXTURES, PROJECT

ROOT = PROJECT
sys.path.insert(0, str(ROOT / "guest_tests"))

import expected as exp  # guest_tests/ is not a package: on the path above

REAL_RUN = FIXTURES / "expected" / "real-4-variants.json.gz"
REAL_RUN_7_2 = REAL_RUN.with_name("real-7.2-odp-fixes.json.gz")
REAL_OOPS = REAL_RUN.with_name("real-7.2-prefetch-oops.json.gz")
README = ROOT / "guest_tests" / "README.md"


def real_results(path: Path = REAL_RUN) -> dict[str, list[exp.Result]]:
    doc = json.loads(gzip.decompress(path.read_bytes()))
    return {v["name"]: [exp.Result(**t) for t in v["tests"]] for v in doc["variants"]}


@pytest.fixture(scope="module")
def expected() -> exp.Expected:
    return exp.Expected.load()


def test_the_data_names_every_kernel_and_every_cell_has_a_reason(expected):
    assert expected.kernels == ["base", "umem-rfc", "write-if-able", "upstream", "debian-7.2",
                                "odp-fixes"]
    for test_id, cell in expected.test_ids():
        check = test_id.removeprefix("test_").split("[")[0]
        for kernel in expected.kernels:
            e = expected.expect(check, cell, kernel)
            assert e.verdict.value in exp.VERDICTS and e.verdict.why, (test_id, kernel)
            assert all(c.why for c in e.observations.values()), (test_id, kernel)


def test_a_real_four_variant_run_agrees_with_the_data(expected):
    for kernel, results in real_results().items():
        assert expected.disagreements(kernel, results) == [], kernel


def test_a_real_run_of_debian_7_2_agrees_with_the_data(expected):
    """`rig run --variant base --variant debian-7.2 --variant odp-fixes` (Debian's 7.2.13, and
    it with patches/odp-fixes): every cell as its column says, the huge zero page's THP, ext4's
    large folios, the ODP cells (7.2's copy at the wrong offset, the oops on secret memory) and
    prefetch included."""
    runs = real_results(REAL_RUN_7_2)
    assert sorted(runs) == ["base", "debian-7.2", "odp-fixes"]
    for kernel, results in runs.items():
        assert expected.disagreements(kernel, results) == [], kernel


def test_a_disagreement_names_the_test_the_kernel_what_was_expected_and_why(expected):
    """The real run with one verdict and one observation changed by hand (synthetic)."""
    results = copy.deepcopy(real_results()["umem-rfc"])
    test = next(r for r in results if r.id == "test_coherent_after_cpu_write[zero-page-ro-mr]")
    test.verdict = "passed"
    test.observations["kind_after"] = ["anon"] * 4
    found = expected.disagreements("umem-rfc", results)
    assert len(found) == 2, found
    verdict, kind = sorted(found, key=lambda line: "kind_after" in line)
    assert verdict.startswith("test_coherent_after_cpu_write[zero-page-ro-mr] on umem-rfc: "
                              "passed, expected failed: ")
    assert "zero page" in verdict
    assert kind.startswith("test_coherent_after_cpu_write[zero-page-ro-mr] on umem-rfc: "
                           'kind_after = ["anon", "anon", "anon", "anon"], expected "zero": ')


def test_a_crash_counts_as_expected_only_where_the_kernel_reads_past_an_allocation(expected):
    """The real 7.2 run in which the asynchronous PREFETCH_WRITE on a pinned MR oopsed (kept
    before test_prefetch_no_fault existed), and that crash moved by hand to a test where
    nothing undefined happens (synthetic)."""
    results = copy.deepcopy(real_results(REAL_OOPS)["debian-7.2"])
    oops = next(r for r in results if r.id == "test_prefetch_write_async[zero-page-rw-mr]")
    assert oops.verdict == "crashed"
    assert expected.expect("prefetch_write_async", "zero-page-rw-mr", "debian-7.2").may_crash
    other = next(r for r in results if r.id == "test_prefetch_write_async[zero-page-ro-mr]")
    other.verdict, other.observations = "crashed", {}
    found = [line for line in expected.disagreements("debian-7.2", results)
             if line.startswith("test_prefetch_write_async[")]
    assert found[0] == ("test_prefetch_write_async[zero-page-ro-mr] on debian-7.2: crashed, "
                        "expected passed: " + expected.expect(
                            "prefetch_write_async", "zero-page-ro-mr", "debian-7.2").verdict.why)
    assert all(line.startswith("test_prefetch_write_async[zero-page-ro-mr] ") for line in found)


def test_a_check_that_ran_without_its_observations_or_a_test_not_run_is_reported(expected):
    """The real run with an observation and a test taken out by hand (synthetic)."""
    results = copy.deepcopy(real_results()["base"])
    test = next(r for r in results if r.id == "test_fork[anon-written-rw-mr]")
    del test.observations["child_read_before_write"]
    results = [r for r in results if r.id != "test_rereg[zero-page-ro-mr]"]
    found = expected.disagreements("base", results)
    assert any(line.startswith("test_fork[anon-written-rw-mr] on base: no observation "
                               "child_read_before_write") for line in found), found
    assert any(line.startswith("test_fork[anon-written-rw-mr] on base: ran its check but did "
                               "not record child_read_before_write") for line in found), found
    assert "test_rereg[zero-page-ro-mr] on base: expected to run, but the results have no " \
           "such test" in found


def test_the_guest_readme_table_is_the_one_the_data_gives(expected):
    text = README.read_text()
    start, end = text.index(exp.TABLE_START), text.index(exp.TABLE_END) + len(exp.TABLE_END)
    assert text[start:end] == expected.table(), \
        "guest_tests/README.md is out of step: run python3 guest_tests/expected.py table"


# The kernels CI builds end to end; debian-7.2 is held to the data by its real run (above) and
# by `rig run` itself (nightly, tox -e rig): README, "Which kernels CI builds".
CI_KERNELS = ["base", "umem-rfc", "write-if-able", "upstream"]


def test_the_rereg_series_carries_the_rfc_patch_unchanged():
    """rfc-rxe-rereg/ holds a copy of the RFC's patch (a series names only its own files)."""
    name = "0001-IB-umem-Don-t-force-write-access-when-pinning-read-o.patch"
    copy = FIXTURES / "expected" / "rfc-rxe-rereg" / name
    assert copy.read_bytes() == (ROOT / "patches" / "umem-rfc" / name).read_bytes()




def test_a_kernel_like_another_takes_its_entries_and_its_own_win(expected):
    """odp-fixes is 7.2 plus patches that touch only ODP: a pinned cell's 7.2 entry is its
    expectation too; an ODP cell's own odp-fixes entry wins over 7.2's."""
    fixes, base_7_2 = (expected.expect("registration", "anon-untouched-ro-mr", k)
                       for k in ("odp-fixes", "debian-7.2"))
    assert (fixes.verdict, fixes.observations) == (base_7_2.verdict, base_7_2.observations)
    odp = [expected.expect("coherent_after_cpu_write", "anon-written-odp-rw-mr", k)
           for k in ("debian-7.2", "odp-fixes", "base")]
    assert [e.verdict.value for e in odp] == ["failed", "passed", "skipped"]
    assert odp[2].observations == {}        # no ODP: the test makes nothing to observe


def test_data_that_names_an_unknown_kernel_to_be_like_is_refused():
    data = tomllib.loads(exp.DATA.read_text())
    data["like"] = {"odp-fixes": "debian-7.3"}
    with pytest.raises(exp.DataError, match="like: odp-fixes = 'debian-7.3' names an unknown"):
        exp.Expected(data)
