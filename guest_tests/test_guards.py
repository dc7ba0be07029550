"""The suite's own guards, run against the real device (not part of the matrix: pytest.ini's
testpaths leave this file out; tests/e2e/test_expected_e2e.py runs it in a real guest).

A check must fail when the device moved no data or the wrong data.  Each test here runs a real
check of test_umem.py on a real cell, with the loopback's RDMA READ sabotaged, and expects the
check to fail: a READ of length 0 after the bounce buffer was left holding exactly the bytes
the check looks for (what a stale buffer would show: the poison must be what it finds), and a
READ of another cell's MR (whose bytes are its own).
"""

from __future__ import annotations

import ctypes

import cells
import pytest
import test_umem
import umem_dev
from regions import LENGTH, READ_ONLY, REGIONS, WRITABLE

KIND = {k.name: k for k in REGIONS}


class Sabotaged:
    """The real loopback, but each RDMA READ moves nothing (length 0) or reads DECOY."""

    def __init__(self, loop, cell_region=None, decoy=None):
        self.loop, self.cell_region, self.decoy = loop, cell_region, decoy

    def __getattr__(self, name):
        return getattr(self.loop, name)

    def rdma_read(self, target, length):
        if self.decoy is not None:
            return self.loop.rdma_read(self.decoy, length)
        # leave in the buffer what the process now holds, as a stale transfer could have
        region = self.cell_region()
        self.loop.bounce.write(ctypes.string_at(region.mapping.addr, LENGTH), LENGTH)
        return self.loop.rdma_read(target, 0)


def opener(check, loop, obs, holder):
    def _open(kind, access):
        manager = cells.open_cell(kind, access, check, loop, obs)

        class Keep:
            def __enter__(self):
                cell = manager.__enter__()
                holder.append(cell.region)
                return cell

            def __exit__(self, *exc):
                return manager.__exit__(*exc)
        return Keep()
    return _open


CHECKS = [pytest.param(check, region, access, id=f"{check}-{region}-{access.name}")
          for check, region, access in [
              ("coherent_after_cpu_write", "anon-written", READ_ONLY),
              ("coherent_after_cpu_write", "thp-written", READ_ONLY),
              ("driver_write_reaches_mr", "drv-shared-rw", WRITABLE),
              ("fork", "anon-written", WRITABLE),
              ("remap", "shmem-shared-rw", READ_ONLY)]]


@pytest.fixture(autouse=True)
def _driver():
    problem = umem_dev.ensure_loaded()
    assert not problem, problem


@pytest.mark.parametrize("check,region,access", CHECKS)
def test_a_read_that_moves_no_data_fails(check, region, access, loopback, obs):
    held = []
    loop = Sabotaged(loopback, cell_region=lambda: held[-1])
    with pytest.raises(AssertionError) as failed:
        getattr(test_umem, f"test_{check}")(KIND[region], access,
                                            opener(check, loop, obs, held), obs)
    assert "poison" in str(failed.value), failed.value


@pytest.mark.parametrize("check,region,access", CHECKS)
def test_a_read_of_another_mr_fails(check, region, access, loopback, obs):
    decoy_obs: dict = {}
    # a cell of the same kind, with bytes of its own (its tag is another check's)
    with cells.open_cell(KIND[region], WRITABLE, "decoy", loopback, decoy_obs) as decoy:
        decoy.region.mapping.write(decoy.pattern("cpu-write"))
        loop = Sabotaged(loopback, decoy=decoy.mr)
        with pytest.raises(AssertionError):
            getattr(test_umem, f"test_{check}")(KIND[region], access,
                                                opener(check, loop, obs, []), obs)
