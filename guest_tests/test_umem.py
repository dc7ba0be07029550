"""The contract of ../shared/DESIGN.md, one test per check, for every region kind x MR access.

Each test's docstring says in its first line what it checks; the report shows that line.
The tests check the contract and record what happened; what a given kernel is expected to do
is in expected.toml, never here.
"""

from __future__ import annotations

import errno

import events
import pytest
from cells import cell_params, not_new
from loopback import VerbsError
from regions import (
    ACCESSES,
    LENGTH,
    ODP_ACCESSES,
    ODP_REGIONS,
    ODP_WRITABLE,
    READ_ONLY,
    REGIONS,
    WRITABLE,
    classify,
    grants,
)

DRIVER_REGIONS = [k for k in REGIONS if k.backing == "driver"]
REFAULTING_REGIONS = [k for k in REGIONS if k.refaults]
# fork needs a writable MR on a mapping the process may write: elsewhere registration must
# fail (test_registration's business) and fork would have nothing to check
WRITABLE_REGIONS = [k for k in REGIONS if grants(k, WRITABLE)]
WRITABLE_PRIVATE_REGIONS = [k for k in WRITABLE_REGIONS if not k.shared]
WRITABLE_ACCESSES = [a for a in ACCESSES if a.writable]


def pinned_and_odp(regions=REGIONS, writable=False) -> list:
    """A check whose contract an ODP MR shares with a pinned one (test_odp.py has the rest):
    REGIONS with the pinned accesses, and with the ODP ones where memory is not secret."""
    pinned = WRITABLE_ACCESSES if writable else ACCESSES
    return (cell_params(regions=regions, accesses=pinned)
            + cell_params(regions=[k for k in regions if k in ODP_REGIONS],
                          accesses=[ODP_WRITABLE] if writable else ODP_ACCESSES))



@pytest.mark.parametrize("kind,access", cell_params(xfail_registration=True))
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


@pytest.mark.parametrize("kind,access", pinned_and_odp())
def test_no_side_effect(kind, access, open_cell, obs):
    """Registration leaves the process's pages in place (filling in the zero page is allowed)."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        assert not obs["pages_replaced"], (
            f"registration replaced pages {obs['pages_replaced']} of the process's mapping "
            "with other pages")


@pytest.mark.parametrize("kind,access", pinned_and_odp())
def test_coherent_after_cpu_write(kind, access, open_cell, obs):
    """Bytes the CPU writes after registration are what an RDMA READ of the MR returns."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        region = cell.region
        obs["mprotect_rw"] = region.make_writable()
        new = cell.pattern("cpu-write")
        region.mapping.write(new)
        obs["pages_moved_by_cpu_write"] = cell.pages_moved("after_cpu_write")
        obs["rdma_read_pages"] = cell.read_mr(new=new, old=region.old)
        stale = not_new(obs["rdma_read_pages"])
        obs["rdma_read_matches_cpu"] = not stale
        assert not stale, (
            f"RDMA READ of the MR does not return what the CPU wrote on pages {stale} "
            f"(per page: {obs['rdma_read_pages']}): the MR went stale")


@pytest.mark.parametrize("kind,access", cell_params(accesses=WRITABLE_ACCESSES))
def test_coherent_after_rdma_write(kind, access, open_cell, loopback, obs):
    """Bytes an RDMA WRITE puts into the MR are what the CPU then reads."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        region = cell.region
        new = cell.pattern("rdma-write")
        loopback.rdma_write(mr, new)
        obs["cpu_read_pages"] = cell.read_process(new=new, old=region.old)
        if region.driver:
            obs["driver_read_pages"] = classify(region.driver.read(LENGTH), new=new,
                                                old=region.old)
        missed = not_new(obs["cpu_read_pages"])
        obs["cpu_sees_rdma_write"] = not missed
        assert not missed, (
            f"the CPU does not read what the RDMA WRITE put into the MR on pages {missed} "
            f"(per page: {obs['cpu_read_pages']})")


@pytest.mark.parametrize("kind,access", cell_params(regions=DRIVER_REGIONS))
def test_driver_write_reaches_mr(kind, access, open_cell, obs):
    """Bytes the driver writes into its own pages reach the MR whenever they reach the process."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        region = cell.region
        new = cell.pattern("driver-write")
        region.driver.write(new)
        obs["process_read_pages"] = cell.read_process(new=new, old=region.old)
        obs["rdma_read_pages"] = cell.read_mr(new=new, old=region.old)
        obs["process_sees_driver_write"] = not not_new(obs["process_read_pages"])
        obs["mr_sees_driver_write"] = not not_new(obs["rdma_read_pages"])
        missed = [i for i, (proc, dev) in
                  enumerate(zip(obs["process_read_pages"], obs["rdma_read_pages"]))
                  if proc == "new" and dev != "new"]
        assert not missed, (
            f"the driver's write reached the process but not the MR on pages {missed} "
            f"(process: {obs['process_read_pages']}, MR: {obs['rdma_read_pages']})")


@pytest.mark.parametrize("kind,access", pinned_and_odp(WRITABLE_REGIONS, writable=True))
def test_fork(kind, access, open_cell, obs):
    """After fork() the MR stays with the parent: it reads what the parent reads after the
    parent's write and after the child's."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.fork_and_write(cell, dontfork=False)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access",
                         pinned_and_odp(WRITABLE_PRIVATE_REGIONS, writable=True))
def test_fork_dontfork(kind, access, open_cell, obs):
    """With MADV_DONTFORK the child has no such mapping and the MR stays with the parent."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.fork_and_write(cell, dontfork=True)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access",
                         cell_params(regions=REFAULTING_REGIONS, accesses=[READ_ONLY]))
def test_dontneed(kind, access, open_cell, obs):
    """After MADV_DONTNEED the MR keeps the pages it pinned, whatever the process maps now."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.keeps_pinned_pages(cell, "dontneed", cell.region.dontneed)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access", cell_params(accesses=[READ_ONLY]))
def test_remap(kind, access, open_cell, obs):
    """After munmap and a new mmap of the same object at the same address the MR keeps the
    pages it pinned, whatever the process maps now."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.keeps_pinned_pages(cell, "remap", cell.region.remap)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access", cell_params(accesses=[READ_ONLY]))
def test_rereg(kind, access, open_cell, loopback, obs):
    """Re-registering a read-only MR as writable never lets the device write where a writable
    registration could not."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        try:
            target = loopback.rereg_access(mr, WRITABLE.flags)
        except VerbsError as exc:
            obs["rereg_errno"] = exc.name
            if exc.errno == errno.EOPNOTSUPP:
                obs["rereg"] = "not supported"
                pytest.skip(f"the kernel does not implement rereg for this device: {exc}")
            obs["rereg"] = "refused"
            return
        obs["rereg"], obs["rereg_errno"] = "accepted", None
        wrong = events.write_after_rereg(cell, target)
        assert not wrong, wrong
