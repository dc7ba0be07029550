"""End to end: the kernels CI builds do what guest_tests/expected.toml, read from their code,
says, cell by cell."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.paths import FIXTURES, PROJECT

sys.path.insert(0, str(PROJECT / "guest_tests"))
import expected as exp  # guest_tests/ is not a package: on the path above

# The kernels CI builds end to end; debian-7.2 is held to the data by its real run (tests/flows/test_expected.py) and
# by `rig run` itself (nightly, tox -e rig): README, "Which kernels CI builds".
CI_KERNELS = ["base", "umem-rfc", "write-if-able", "upstream"]


@pytest.fixture(scope="module")
def expected() -> exp.Expected:
    return exp.Expected.load()


def test_the_ci_kernels_do_what_their_code_says(expected, tmp_path):
    variants = [a for k in CI_KERNELS for a in ("--variant", k)]
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "run", *variants,
                           "--out", str(tmp_path)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=7200, check=False)
    assert (tmp_path / "results.json").exists(), proc.stderr[-3000:]
    runs = exp.results_of(tmp_path / "results.json")
    assert sorted(runs) == sorted(CI_KERNELS), proc.stdout[-2000:]
    found = [line for kernel in CI_KERNELS
             for line in expected.disagreements(kernel, runs[kernel])]
    assert not found, "\n".join(found)


def test_a_read_that_moved_no_data_or_read_another_mr_fails_its_check():
    """guest_tests/test_guards.py in a real guest: every sabotaged READ makes its check fail."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "boot", "base", "--", "sh", "-c",
         ("cd /root/guest_tests && "
          "python3 -m pytest -p no:cacheprovider -v test_guards.py")],
        cwd=PROJECT, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    passed = [line for line in proc.stdout.splitlines() if line.endswith("PASSED")
              or " PASSED " in line]
    assert len(passed) == 10, proc.stdout[-4000:]


def test_a_writable_rereg_that_lands_in_the_zero_page_is_caught_and_undone(tmp_path):
    """umem-rfc (a read-only MR pins the zero page) plus a test-only rxe rereg that makes an MR
    writable unchecked: the RDMA WRITE after the rereg changes the shared zero page, and the
    rereg check must say so, fail, and write the zeros back."""
    series = FIXTURES / "expected" / "rfc-rxe-rereg"
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "run", "--variant", "base",
                           "--patch", str(series), "--select", "test_rereg",
                           "--out", str(tmp_path)],
                          cwd=PROJECT, capture_output=True, text=True, timeout=3600, check=False)
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


def test_a_driver_that_cannot_be_loaded_errors_its_cells_naming_why():
    """No silent skip: with no module to load, every driver cell is an error that says so."""
    proc = subprocess.run(
        [sys.executable, "-m", "rig.cli", "boot", "base", "--", "sh", "-c",
         ("cd /root/guest_tests && UMEM_TEST_KO=/nonexistent/umem_test.ko "
          "python3 -m pytest -p no:cacheprovider -q -rA -k 'drv-shared-rw-ro-mr or "
          "anon-written-ro-mr'")],
        cwd=PROJECT, capture_output=True, text=True, timeout=1800, check=False)
    out = proc.stdout
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    # every test of the driver cell, and only those; the anonymous cell runs as ever
    assert len(errors) == 6 and all("drv-shared-rw-ro-mr" in line for line in errors), out[-4000:]
    assert "there is no module to load at /nonexistent/umem_test.ko" in out, out[-4000:]
    assert "5 passed" in out.splitlines()[-1], out[-500:]
