"""The umem suite's view of a guest that died in a test: which test, and which cell it is."""

from __future__ import annotations

from support.paths import FIXTURES

from rig.guest import markers
from rig.results.schema import Verdict
from rig.runtime.suites.umem import UmemSuite

SUITE = UmemSuite()
TOKEN = "57e29c7b4f961bda9d141a55262c1890"      # that boot's, as its markers carry it
OOPS = markers.trusted((FIXTURES / "console" / "secretmem-odp-oops.log").read_text(), TOKEN)


def test_a_crash_in_the_only_test_of_an_odp_cell_still_names_the_cell():
    """The real console of 7.2.13 oopsing in test_secretmem[secretmem-odp-ro-mr]: no reported
    test shares that cell, and "odp-ro-mr" is the access, not "ro-mr" with an "-odp" region."""
    node = SUITE.running_test(OOPS)
    assert node == "test_secretmem.py::test_secretmem[secretmem-odp-ro-mr]"
    crashed = SUITE.host_result(node, Verdict.CRASHED, "the guest died: panic", "", [])
    assert (crashed.check, crashed.region, crashed.access) == (
        "secretmem", "secretmem", "odp-ro-mr")


def test_every_access_name_splits_off_the_region_it_follows():
    for key, cell in [
            ("test_umem.py::test_fork[anon-written-odp-rw-mr]",
             ("fork", "anon-written", "odp-rw-mr")),
            ("test_umem.py::test_remap[drv-shared-ro-ro-mr]", ("remap", "drv-shared-ro", "ro-mr")),
            ("test_odp.py::test_odp_remap[drv-shared-ro-odp-ro-mr]",
             ("odp_remap", "drv-shared-ro", "odp-ro-mr"))]:
        got = SUITE.cell_of(key)
        assert (got.check, got.region, got.access) == cell
