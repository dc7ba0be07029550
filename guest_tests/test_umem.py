"""The contract of ../shared/DESIGN.md, one test per check, for every region kind x MR access.

Each test's docstring says in its first line what it checks; the report shows that line.
The tests check the contract and record what happened; what a given kernel is expected to do
is in README.md, never here.
"""

from __future__ import annotations

import pytest
from regions import ACCESSES, LENGTH, REGIONS, classify, grants, pattern


def cells(regions=REGIONS, accesses=ACCESSES, xfail_registration=False):
    params = []
    for kind in regions:
        for access in accesses:
            marks = []
            if xfail_registration and kind.registration_xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=kind.registration_xfail))
            params.append(pytest.param(kind, access, id=f"{kind.name}-{access.name}",
                                       marks=marks))
    return params


def not_new(pages: list[str]) -> list[int]:
    return [i for i, page in enumerate(pages) if page != "new"]


DRIVER_REGIONS = [k for k in REGIONS if k.backing == "driver"]
WRITABLE_ACCESSES = [a for a in ACCESSES if a.writable]


@pytest.mark.parametrize("kind,access", cells(xfail_registration=True))
def test_registration(kind, access, open_cell, obs):
    """Registration succeeds exactly when the mapping grants the access the MR asks for."""
    obs["mapping_grants_access"] = grants(kind, access)
    with open_cell(kind, access):
        if grants(kind, access):
            assert obs["registered"], (
                f"registration failed with {obs['errno']} although the mapping grants "
                f"{'write' if access.writable else 'read'} access")
        else:
            assert not obs["registered"], "a write MR was registered on a read-only mapping"


@pytest.mark.parametrize("kind,access", cells())
def test_no_side_effect(kind, access, open_cell, obs):
    """Registration leaves the process's pages in place (filling in the zero page is allowed)."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        assert not obs["pages_replaced"], (
            f"registration replaced pages {obs['pages_replaced']} of the process's mapping "
            "with other pages")


@pytest.mark.parametrize("kind,access", cells())
def test_coherent_after_cpu_write(kind, access, open_cell, loopback, obs):
    """Bytes the CPU writes after registration are what an RDMA READ of the MR returns."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        region = cell.region
        obs["mprotect_rw"] = region.make_writable()
        new = pattern("cpu-write")
        region.mapping.write(new)
        obs["pages_moved_by_cpu_write"] = cell.pages_moved("after_cpu_write")
        obs["rdma_read_pages"] = classify(loopback.rdma_read(mr, LENGTH), new=new,
                                          old=region.old)
        stale = not_new(obs["rdma_read_pages"])
        obs["rdma_read_matches_cpu"] = not stale
        assert not stale, (
            f"RDMA READ of the MR does not return what the CPU wrote on pages {stale} "
            f"(per page: {obs['rdma_read_pages']}): the MR went stale")


@pytest.mark.parametrize("kind,access", cells(accesses=WRITABLE_ACCESSES))
def test_coherent_after_rdma_write(kind, access, open_cell, loopback, obs):
    """Bytes an RDMA WRITE puts into the MR are what the CPU then reads."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        region = cell.region
        new = pattern("rdma-write")
        loopback.rdma_write(mr, new)
        obs["cpu_read_pages"] = classify(region.mapping.read(), new=new, old=region.old)
        if region.driver:
            obs["driver_read_pages"] = classify(region.driver.read(LENGTH), new=new,
                                                old=region.old)
        missed = not_new(obs["cpu_read_pages"])
        obs["cpu_sees_rdma_write"] = not missed
        assert not missed, (
            f"the CPU does not read what the RDMA WRITE put into the MR on pages {missed} "
            f"(per page: {obs['cpu_read_pages']})")


@pytest.mark.parametrize("kind,access", cells(regions=DRIVER_REGIONS))
def test_driver_write_reaches_mr(kind, access, open_cell, loopback, obs):
    """Bytes the driver writes into its own pages reach the MR whenever they reach the process."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        region = cell.region
        new = pattern("driver-write")
        region.driver.write(new)
        obs["process_read_pages"] = classify(region.mapping.read(), new=new, old=region.old)
        obs["rdma_read_pages"] = classify(loopback.rdma_read(mr, LENGTH), new=new,
                                          old=region.old)
        obs["process_sees_driver_write"] = not not_new(obs["process_read_pages"])
        obs["mr_sees_driver_write"] = not not_new(obs["rdma_read_pages"])
        missed = [i for i, (proc, dev) in
                  enumerate(zip(obs["process_read_pages"], obs["rdma_read_pages"]))
                  if proc == "new" and dev != "new"]
        assert not missed, (
            f"the driver's write reached the process but not the MR on pages {missed} "
            f"(process: {obs['process_read_pages']}, MR: {obs['rdma_read_pages']})")
