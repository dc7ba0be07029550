"""On-demand paging: the contract of an MR that pins nothing, where it differs from a pinned
MR's (test_umem.py holds the checks both share), and ibv_advise_mr() prefetch on every MR.

An ODP MR follows the process: the device reaches whatever page the process maps at the
moment of the access, faulting it in as the process would, and an access the process could
not make itself fails with a remote access error.  What a given kernel does is in
expected.toml, never here.
"""

from __future__ import annotations

import time

import events
import pytest
from cells import cell_params, not_new
from loopback import ADVISE_FLAG_FLUSH, CompletionError
from memory import page_states
from regions import (
    ACCESSES,
    LENGTH,
    ODP_ACCESSES,
    ODP_READ_ONLY,
    ODP_REGIONS,
    ODP_WRITABLE,
    PAGES,
    classify,
    grants,
)

REFAULTING_REGIONS = [k for k in ODP_REGIONS if k.refaults]
# prefetch on one region of each way a page gets there (none yet, the zero page, a read-only
# mapping, the page cache, shmem, hugetlb, no struct page); secret memory: test_secretmem.py
PREFETCH_REGIONS = [k for k in ODP_REGIONS if k.name in (
    "anon-untouched", "zero-page", "anon-prot-read", "file-shared-ro", "shmem-shared-rw",
    "hugetlb-shared-rw", "drv-pfnmap")]
PREFETCH_WAIT = 2.0                 # seconds an asynchronous prefetch gets to show in the pages


def device_can(kind, writing: bool) -> bool:
    """Whether the process itself could make the device's access: the mapping grants it and
    has struct pages to fault in (a PFNMAP has none)."""
    return grants(kind, ODP_WRITABLE if writing else ODP_READ_ONLY) and not kind.pfnmap


@pytest.mark.parametrize("kind,access", cell_params(regions=ODP_REGIONS, accesses=ODP_ACCESSES))
def test_odp_registration(kind, access, open_cell, obs):
    """An ODP registration succeeds on any mapping, pins nothing and faults nothing in."""
    with open_cell(kind, access):
        assert obs["registered"], f"the ODP registration failed with {obs['errno']}"
        changed = [i for i, (b, a) in enumerate(zip(obs["raw_pfn_before"], obs["raw_pfn_after"]))
                   if b != a]
        obs["pages_changed"] = changed
        assert not obs["pinned_kb"], f"the ODP registration pinned {obs['pinned_kb']} KiB"
        assert not changed, f"the ODP registration changed pages {changed} of the mapping"


@pytest.mark.parametrize("kind,access", cell_params(regions=ODP_REGIONS, accesses=[ODP_WRITABLE]))
def test_odp_rdma_write(kind, access, open_cell, loopback, obs):
    """An RDMA WRITE lands in the page the process maps now where the process could write it
    itself, and fails with a remote access error where it could not; the QPs work after."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        new = cell.pattern("rdma-write")
        obs["rdma_write_status"] = loopback.write_status(mr, new)
        obs["cpu_read_pages"] = cell.read_process(new=new, old=cell.region.old)
        cell.record_pages("after_rdma_write")
        obs["read_after_write"] = "ok" if loopback.works() else "failed"
        if device_can(kind, writing=True):
            missed = not_new(obs["cpu_read_pages"])
            assert obs["rdma_write_status"] == "IBV_WC_SUCCESS" and not missed, (
                f"the RDMA WRITE completed with {obs['rdma_write_status']}; the CPU reads "
                f"{obs['cpu_read_pages']}")
        else:
            assert obs["rdma_write_status"] == "IBV_WC_REM_ACCESS_ERR", (
                f"an RDMA WRITE the process could not make completed with "
                f"{obs['rdma_write_status']} (CPU reads {obs['cpu_read_pages']})")
            assert "new" not in obs["cpu_read_pages"], "the refused WRITE reached the memory"
        assert obs["read_after_write"] == "ok", "the QPs did not work again after the WRITE"


@pytest.mark.parametrize("kind,access", cell_params(regions=REFAULTING_REGIONS,
                                                   accesses=ODP_ACCESSES))
def test_odp_dontneed(kind, access, open_cell, obs):
    """After MADV_DONTNEED an RDMA READ returns what the process reads now, and after a CPU
    write the new bytes: the MR follows the process."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.follows_process(cell, "dontneed", cell.region.dontneed)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access", cell_params(regions=ODP_REGIONS, accesses=ODP_ACCESSES))
def test_odp_remap(kind, access, open_cell, obs):
    """After munmap and a new mmap of the same object at the same address an RDMA READ returns
    what the process reads now, and after a CPU write the new bytes."""
    with open_cell(kind, access) as cell:
        cell.require_registration()
        wrong = events.follows_process(cell, "remap", cell.region.remap)
        assert not wrong, wrong


@pytest.mark.parametrize("kind,access", cell_params(regions=ODP_REGIONS, accesses=ODP_ACCESSES))
def test_odp_unmapped(kind, access, open_cell, loopback, obs):
    """An RDMA READ of an ODP MR whose range the process unmapped fails with a remote access
    error, and the QPs work after it."""
    with open_cell(kind, access) as cell:
        mr = cell.require_registration()
        mapping = cell.region.mapping
        mapping.unmap()
        try:
            data, fill = loopback.rdma_read(mr, LENGTH)
            obs["rdma_read_status"] = "IBV_WC_SUCCESS"
            obs["rdma_read_pages"] = classify(data, old=cell.region.old, zero=bytes(LENGTH),
                                              poison=fill)
        except CompletionError as exc:
            obs["rdma_read_status"] = exc.status
        finally:
            mapping.map_again()                 # for the cell's own teardown
        obs["read_after_error"] = "ok" if loopback.works() else "failed"
        assert obs["rdma_read_status"] == "IBV_WC_REM_ACCESS_ERR", (
            f"an RDMA READ of an unmapped range completed with {obs['rdma_read_status']}")
        assert obs["read_after_error"] == "ok", "the QPs did not work again after the READ"


def _advise(cell, loopback, obs, advice: str, flags: int, settled) -> list:
    """ADVICE on the cell's MR, the pages waited for until SETTLED (an asynchronous advice
    runs later) and recorded: what they are now, and what the advice changed."""
    mr = cell.require_registration()
    obs["advise_errno"] = loopback.advise(mr, advice, flags, LENGTH)
    deadline = time.monotonic() + (0 if flags & ADVISE_FLAG_FLUSH else PREFETCH_WAIT)
    while not settled(page_states(cell.region.mapping.addr, PAGES)):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    now = cell.record_pages("after_advise")
    obs["present_after_advise_all"] = all(s.present for s in now)
    obs["pages_allocated_by_advise"] = [
        i for i, (a, n) in enumerate(zip(cell.after, now))
        if (not a.present or a.zero) and n.present and not n.zero]
    obs["pages_moved_by_advise"] = [i for i, (a, n) in enumerate(zip(cell.after, now))
                                    if a.present and a.pfn != n.pfn]
    obs["rdma_read_after_advise"] = cell.read_mr(old=cell.region.old)
    return now


def _prefetch(cell, loopback, obs, advice: str, flags: int) -> None:
    """ADVICE on the cell's MR; where the kernel accepts it, the pages must then be in the
    process's page tables as the process's own access would have left them."""
    writing = advice == "PREFETCH_WRITE"

    # as the process's own access would leave them: present; for a write, its own (not zero)
    def settled(states) -> bool:
        return all(s.present and not (writing and s.zero) for s in states)

    now = _advise(cell, loopback, obs, advice, flags, settled)
    access = cell.access
    if not access.odp or (writing and not access.writable):
        assert obs["advise_errno"], f"{advice} on a {access.name} was accepted"
        assert not obs["pages_moved_by_advise"], (
            f"the refused {advice} moved pages {obs['pages_moved_by_advise']}")
        return
    if not device_can(cell.region.kind, writing):
        return                              # best effort: the kernel may fail it or not
    assert obs["advise_errno"] is None, f"{advice} on an ODP MR failed: {obs['advise_errno']}"
    assert settled(now), (f"after {advice} the pages are not as the process's own access "
                          f"leaves them: {obs['kind_after_advise']}")


@pytest.mark.parametrize("kind,access", cell_params(regions=PREFETCH_REGIONS,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_prefetch(kind, access, open_cell, loopback, obs):
    """ibv_advise_mr(PREFETCH, FLUSH) on an ODP MR faults the pages in for reading; on a pinned
    MR the kernel refuses it and changes nothing."""
    with open_cell(kind, access) as cell:
        _prefetch(cell, loopback, obs, "PREFETCH", ADVISE_FLAG_FLUSH)


@pytest.mark.parametrize("kind,access", cell_params(regions=PREFETCH_REGIONS,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_prefetch_write(kind, access, open_cell, loopback, obs):
    """ibv_advise_mr(PREFETCH_WRITE, FLUSH) on a writable ODP MR faults the pages in for
    writing; on a pinned or read-only MR the kernel refuses it and changes nothing."""
    with open_cell(kind, access) as cell:
        _prefetch(cell, loopback, obs, "PREFETCH_WRITE", ADVISE_FLAG_FLUSH)


@pytest.mark.parametrize("kind,access", cell_params(regions=PREFETCH_REGIONS,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_prefetch_no_fault(kind, access, open_cell, loopback, obs):
    """ibv_advise_mr(PREFETCH_NO_FAULT, FLUSH) on an ODP MR maps what the process has mapped
    already and faults nothing: accepted on any ODP MR, the page tables as they were; on a
    pinned MR the kernel refuses it and changes nothing."""
    with open_cell(kind, access) as cell:
        _advise(cell, loopback, obs, "PREFETCH_NO_FAULT", ADVISE_FLAG_FLUSH, lambda _: True)
        changed = obs["pages_allocated_by_advise"] + obs["pages_moved_by_advise"]
        if not cell.access.odp:
            assert obs["advise_errno"], f"PREFETCH_NO_FAULT on a {cell.access.name} was accepted"
        else:
            assert obs["advise_errno"] is None, (
                f"PREFETCH_NO_FAULT on an ODP MR failed: {obs['advise_errno']}")
        assert not changed, f"PREFETCH_NO_FAULT changed pages {sorted(set(changed))}"
        assert obs["present_after_advise_all"] == all(s.present for s in cell.after), (
            "PREFETCH_NO_FAULT changed which pages are present")


@pytest.mark.parametrize("kind,access", cell_params(regions=PREFETCH_REGIONS,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_prefetch_async(kind, access, open_cell, loopback, obs):
    """ibv_advise_mr(PREFETCH) without FLUSH on an ODP MR faults the pages in soon after the
    call; on a pinned MR the kernel refuses it and changes nothing."""
    with open_cell(kind, access) as cell:
        _prefetch(cell, loopback, obs, "PREFETCH", 0)


@pytest.mark.parametrize("kind,access", cell_params(regions=PREFETCH_REGIONS,
                                                   accesses=ACCESSES + ODP_ACCESSES))
def test_prefetch_write_async(kind, access, open_cell, loopback, obs):
    """ibv_advise_mr(PREFETCH_WRITE) without FLUSH on a writable ODP MR faults the pages in for
    writing soon after the call; on a pinned or read-only MR the kernel refuses it."""
    with open_cell(kind, access) as cell:
        _prefetch(cell, loopback, obs, "PREFETCH_WRITE", 0)
