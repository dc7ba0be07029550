"""What happens to a registered MR when its process forks, drops or replaces the mapping, or
re-registers the MR: each function runs one such event on an open cell, records what the
process, the child and the MR see into the cell's observations, and says what broke the
contract ("" when nothing did)."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable

from cells import Cell, not_new
from loopback import Target
from memory import HUGE_SIZE, THP_SYSFS, Mapping, is_mapped, page_states
from regions import LENGTH, PAGES, WRITABLE, R, classify, grants


def _differing(got: list[str], want: list[str]) -> list[int]:
    return [i for i, (g, w) in enumerate(zip(got, want)) if g != w]


def fork_and_write(cell: Cell, dontfork: bool) -> str:
    """fork(); the parent writes and reads the MR; then the child reads and writes; then the
    parent reads its memory and the MR again.  The MR must read what the parent reads each
    time."""
    region, obs = cell.region, cell.obs
    mapping = region.mapping
    obs["mprotect_rw"] = region.make_writable()
    if dontfork:
        mapping.advise(mmap.MADV_DONTFORK, "MADV_DONTFORK")
    at_fork = region.old
    parent, child = cell.pattern("parent-write"), cell.pattern("child-write")
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: never returns
        try:
            os.close(go_w)
            os.close(res_r)
            os.read(go_r, 1)                        # until the parent has written
            os.write(res_w, _child(mapping, child))
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(res_w)
    report = b""
    try:
        mapping.write(parent)
        now = cell.record_pages("after_parent_write")
        obs["pages_moved_by_parent_write"] = [i for i, (a, n) in enumerate(zip(cell.after, now))
                                              if a.pfn != n.pfn]
        obs["rdma_read_after_parent_write"] = cell.read_mr(parent=parent, at_fork=at_fork)
        os.write(go_w, b"x")
        while chunk := os.read(res_r, 65536):
            report += chunk
    finally:
        os.close(go_w)
        os.close(res_r)
        _, status = os.waitpid(pid, 0)
    if len(report) not in (1, _CHILD_REPORT.size) or os.waitstatus_to_exitcode(status) != 0:
        return f"the child failed (wait status {status:#x}): {report[:500]!r}"
    obs["child_has_mapping"] = report[0] == 1
    if obs["child_has_mapping"]:
        _, seen, *pfns = _CHILD_REPORT.unpack(report)
        obs["child_read_before_write"] = classify(seen, at_fork=at_fork, parent=parent)
        obs["raw_child_pfn_before_write"] = pfns
        obs["child_shares_parent_pages"] = [c == n.pfn for c, n in zip(pfns, now)]
    obs["parent_read_after_child_write"] = cell.read_process(parent=parent, child=child,
                                                             at_fork=at_fork)
    obs["rdma_read_after_child_write"] = cell.read_mr(parent=parent, child=child,
                                                      at_fork=at_fork)
    problems = []
    if stale := _differing(obs["rdma_read_after_parent_write"], ["parent"] * PAGES):
        problems.append(f"after the parent's write the MR does not read it on pages {stale} "
                        f"(per page: {obs['rdma_read_after_parent_write']})")
    if apart := _differing(obs["rdma_read_after_child_write"],
                           obs["parent_read_after_child_write"]):
        problems.append(f"after the child's write the MR and the parent differ on pages "
                        f"{apart} (MR: {obs['rdma_read_after_child_write']}, parent: "
                        f"{obs['parent_read_after_child_write']})")
    return "; ".join(problems)


# the child's report: mapped (1), what it read before writing, its PFNs then
_CHILD_REPORT = struct.Struct(f"<B{LENGTH}s{PAGES}Q")


def _child(mapping: Mapping, child: bytes) -> bytes:
    """In the child: what it sees of the region, then it writes CHILD there.  A failure is
    the exception's text, for the parent to report."""
    try:
        if not is_mapped(mapping.addr, mapping.length):
            return b"\0"
        seen = mapping.read(LENGTH)
        pfns = [s.pfn or 0 for s in page_states(mapping.addr, PAGES)]
        mapping.write(child)
        return _CHILD_REPORT.pack(1, seen, *pfns)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the parent reports it
        return f"{type(exc).__name__}: {exc}".encode()


def keeps_pinned_pages(cell: Cell, event: str, do: Callable[[], None]) -> str:
    """Read the MR, do EVENT to the mapping, have the CPU write new bytes: the MR must read the
    new bytes where the process still maps the page registration pinned, and what it read
    before the event everywhere else."""
    region, obs = cell.region, cell.obs
    pinned, fill = cell.loop.rdma_read(cell.mr, LENGTH)
    obs["rdma_read_before"] = classify(pinned, old=region.old, poison=fill)
    do()
    cell.record_pages(f"after_{event}")
    obs[f"process_read_after_{event}"] = cell.read_process(
        old=region.old, fill=region.fill or region.old, zero=bytes(LENGTH))
    obs["mprotect_rw"] = region.make_writable()
    new = cell.pattern("cpu-write")
    region.mapping.write(new)
    now = cell.record_pages("after_cpu_write")
    same = [a.pfn == n.pfn for a, n in zip(cell.after, now)]
    obs["process_maps_pinned_page"] = same
    obs["process_and_mr_differ"] = not all(same)
    obs["rdma_read_pages"] = cell.read_mr(new=new, pinned=pinned)
    want = ["new" if s else "pinned" for s in same]
    if wrong := _differing(obs["rdma_read_pages"], want):
        return (f"after {event} and a CPU write the MR reads {obs['rdma_read_pages']} where "
                f"the pages it pinned hold {want} (pages {wrong})")
    return ""


def follows_process(cell: Cell, event: str, do: Callable[[], None]) -> str:
    """Do EVENT to the mapping of an ODP MR: an RDMA READ must then return what the process
    reads, and after a CPU write the new bytes (the device reads first, so that it, not the
    process, faults the pages in)."""
    region, obs = cell.region, cell.obs
    do()
    seen = {"old": region.old, "fill": region.fill or region.old, "zero": bytes(LENGTH)}
    obs[f"rdma_read_after_{event}"] = cell.read_mr(**seen)
    cell.record_pages(f"after_{event}")
    obs[f"process_read_after_{event}"] = cell.read_process(**seen)
    obs["mprotect_rw"] = region.make_writable()
    new = cell.pattern("cpu-write")
    region.mapping.write(new)
    cell.record_pages("after_cpu_write")
    obs["rdma_read_pages"] = cell.read_mr(new=new, **seen)
    problems = []
    if apart := _differing(obs[f"rdma_read_after_{event}"], obs[f"process_read_after_{event}"]):
        problems.append(f"after {event} the MR and the process differ on pages {apart} (MR: "
                        f"{obs[f'rdma_read_after_{event}']}, process: "
                        f"{obs[f'process_read_after_{event}']})")
    if stale := not_new(obs["rdma_read_pages"]):
        problems.append(f"after {event} and a CPU write the MR does not read the new bytes on "
                        f"pages {stale} (per page: {obs['rdma_read_pages']})")
    return "; ".join(problems)


def _zero_pages_intact(huge: bool) -> bool:
    """Whether a fresh read-faulted anonymous page (a huge one: a fresh THP region) reads as
    zeros, i.e. whether the shared (huge) zero page still holds zeros."""
    fresh = Mapping(HUGE_SIZE if huge else LENGTH, R, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    align=HUGE_SIZE if huge else 0)
    try:
        if huge:
            fresh.advise(mmap.MADV_HUGEPAGE, "MADV_HUGEPAGE")
        fresh.touch_read(PAGES)
        return fresh.read(LENGTH) == bytes(LENGTH)
    finally:
        fresh.unmap()


def write_after_rereg(cell: Cell, target: Target) -> str:
    """After a read-only MR was made writable: RDMA WRITE into it, record where the bytes
    land, and compare with what a writable registration of the same mapping gets.

    If the MR pinned the shared zero page the WRITE lands in it and every process's zero
    page reads the new bytes until the end of the boot: that is detected and undone (zeros
    written back through the same MR) before the test ends."""
    region, obs = cell.region, cell.obs
    new = cell.pattern("rdma-write")
    cell.loop.rdma_write(target, new)
    obs["cpu_read_pages"] = cell.read_process(new=new, old=region.old)
    if region.driver:
        obs["driver_read_pages"] = classify(region.driver.read(LENGTH), new=new,
                                            old=region.old)
    huge = region.kind.huge and region.kind.backing == "anon" and os.path.isdir(THP_SYSFS)
    checks = [False, True] if huge else [False]
    corrupted = [h for h in checks if not _zero_pages_intact(h)]
    obs["zero_page_corrupted"] = bool(corrupted)
    if corrupted:
        cell.loop.rdma_write(target, bytes(LENGTH))
        obs["zero_page_restored"] = all(_zero_pages_intact(h) for h in corrupted)
    try:
        cell.loop.register(region.mapping.addr, region.mapping.length, WRITABLE.flags).close()
        obs["writable_registration_errno"] = None
    except Exception as exc:  # noqa: BLE001 - VerbsError: its name is what we record
        obs["writable_registration_errno"] = getattr(exc, "name", repr(exc))
    problems = []
    if corrupted:
        problems.append("the RDMA WRITE changed the shared zero page "
                        f"({'restored' if obs['zero_page_restored'] else 'NOT restored'})")
    if not grants(region.kind, WRITABLE):
        problems.append("the MR was made writable on a mapping without write permission")
    elif obs["writable_registration_errno"]:
        problems.append("the MR was made writable where a writable registration fails with "
                        f"{obs['writable_registration_errno']}")
    elif missed := not_new(obs["cpu_read_pages"]):
        problems.append(f"the CPU does not read what the RDMA WRITE put into the re-registered "
                        f"MR on pages {missed} (per page: {obs['cpu_read_pages']})")
    return "; ".join(problems)
