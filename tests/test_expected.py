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
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "guest_tests"))

import expected as exp  # guest_tests/ is not a package: on the path above

REAL_RUN = Path(__file__).parent / "fixtures" / "expected" / "real-4-variants.json.gz"
REAL_RUN_7_2 = REAL_RUN.with_name("real-base-debian-7.2.json.gz")
README = ROOT / "guest_tests" / "README.md"


def real_results(path: Path = REAL_RUN) -> dict[str, list[exp.Result]]:
    doc = json.loads(gzip.decompress(path.read_bytes()))
    return {v["name"]: [exp.Result(**t) for t in v["tests"]] for v in doc["variants"]}


@pytest.fixture(scope="module")
def expected() -> exp.Expected:
    return exp.Expected.load()


def test_the_data_names_every_kernel_and_every_cell_has_a_reason(expected):
    assert expected.kernels == ["base", "umem-rfc", "write-if-able", "upstream", "debian-7.2"]
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
    """`rig run --variant base --variant debian-7.2` (Debian's 7.2.13): every cell as its
    column says, the huge zero page's THP and ext4's large folios included."""
    runs = real_results(REAL_RUN_7_2)
    assert sorted(runs) == ["base", "debian-7.2"]
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


@pytest.mark.e2e
def test_the_ci_kernels_do_what_their_code_says(expected, tmp_path):
    variants = [a for k in CI_KERNELS for a in ("--variant", k)]
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "run", *variants,
                           "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=7200, check=False)
    assert (tmp_path / "results.json").exists(), proc.stderr[-3000:]
    runs = exp.results_of(tmp_path / "results.json")
    assert sorted(runs) == sorted(CI_KERNELS), proc.stdout[-2000:]
    found = [line for kernel in CI_KERNELS
             for line in expected.disagreements(kernel, runs[kernel])]
    assert not found, "\n".join(found)


@pytest.mark.e2e
def test_a_read_that_moved_no_data_or_read_another_mr_fails_its_check():
    """guest_tests/test_guards.py in a real guest: every sabotaged READ makes its check fail."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "boot", "base", "--", "sh", "-c",
         ("cd /root/guest_tests && "
          "python3 -m pytest -p no:cacheprovider -v test_guards.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = [line for line in proc.stdout.splitlines() if line.endswith("PASSED")
              or " PASSED " in line]
    assert len(passed) == 10, proc.stdout[-4000:]


def test_the_rereg_series_carries_the_rfc_patch_unchanged():
    """rfc-rxe-rereg/ holds a copy of the RFC's patch (a series names only its own files)."""
    name = "0001-IB-umem-Don-t-force-write-access-when-pinning-read-o.patch"
    copy = Path(__file__).parent / "fixtures" / "expected" / "rfc-rxe-rereg" / name
    assert copy.read_bytes() == (ROOT / "patches" / "umem-rfc" / name).read_bytes()


@pytest.mark.e2e
def test_a_writable_rereg_that_lands_in_the_zero_page_is_caught_and_undone(tmp_path):
    """umem-rfc (a read-only MR pins the zero page) plus a test-only rxe rereg that makes an MR
    writable unchecked: the RDMA WRITE after the rereg changes the shared zero page, and the
    rereg check must say so, fail, and write the zeros back."""
    series = Path(__file__).parent / "fixtures" / "expected" / "rfc-rxe-rereg"
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "run", "--variant", "base",
                           "--patch", str(series), "--select", "test_rereg",
                           "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    assert (tmp_path / "results.json").exists(), proc.stderr[-3000:]
    runs = exp.results_of(tmp_path / "results.json")
    tests = {t.id: t for t in runs["rfc-rxe-rereg"]}
    for cell in ("anon-untouched-ro-mr", "zero-page-ro-mr", "thp-zero-page-ro-mr"):
        t = tests[f"test_rereg[{cell}]"]
        assert t.verdict == "failed", (cell, t)
        assert t.observations["rereg"] == "accepted", (cell, t.observations)
        assert t.observations["kind_after"][0] in ("zero", "huge-zero"), (cell, t.observations)
        assert t.observations["zero_page_corrupted"] is True, (cell, t.observations)
        assert t.observations["zero_page_restored"] is True, (cell, t.observations)
    # the MRs that pinned pages of the process's own, on mappings it may write, are fine
    for cell in ("anon-written-ro-mr", "shmem-shared-rw-ro-mr", "thp-written-ro-mr"):
        t = tests[f"test_rereg[{cell}]"]
        assert t.verdict == "passed", (cell, t)
        assert t.observations["zero_page_corrupted"] is False, (cell, t.observations)
    # and on read-only mappings the accepted rereg itself is the failure
    t = tests["test_rereg[file-shared-ro-ro-mr]"]
    assert t.verdict == "failed" and t.observations["writable_registration_errno"] == "EFAULT"


@pytest.mark.e2e
def test_a_driver_that_cannot_be_loaded_errors_its_cells_naming_why():
    """No silent skip: with no module to load, every driver cell is an error that says so."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "boot", "base", "--", "sh", "-c",
         ("cd /root/guest_tests && UMEM_TEST_KO=/nonexistent/umem_test.ko "
          "python3 -m pytest -p no:cacheprovider -q -rA -k 'drv-shared-rw-ro-mr or "
          "anon-written-ro-mr'")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    out = proc.stdout
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    # every test of the driver cell, and only those; the anonymous cell runs as ever
    assert len(errors) == 6 and all("drv-shared-rw-ro-mr" in line for line in errors), out[-4000:]
    assert "there is no module to load at /nonexistent/umem_test.ko" in out, out[-4000:]
    assert "5 passed" in out.splitlines()[-1], out[-500:]
