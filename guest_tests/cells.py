"""One cell of the matrix: a fresh region of one kind, registered with one access.

Opening a cell records what registration did (result, errno, each page before and after) into
the test's observations, whatever the test then checks.  Keys starting with "raw_" hold values
that differ from boot to boot (addresses, PFNs); the host shows them but never compares them.
Every byte pattern a cell writes is derived from its region, access, check and step, so bytes
left over from another cell or step never pass for this one's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from loopback import CompletionError, Loopback, Target, VerbsError
from memory import PageState, page_states, pinned_kb
from pyverbs.mr import MR
from regions import (
    ACCESSES,
    LENGTH,
    PAGES,
    REGIONS,
    Access,
    Region,
    RegionKind,
    Unavailable,
    classify,
    file_dir,
    filesystem_of,
    pattern,
)


def cell_params(regions=REGIONS, accesses=ACCESSES, xfail_registration=False) -> list:
    """The (kind, access) parameters of a check over REGIONS x ACCESSES."""
    params = []
    for kind in regions:
        for access in accesses:
            marks = []
            if xfail_registration and kind.registration_xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=kind.registration_xfail))
            params.append(pytest.param(kind, access, id=f"{kind.name}-{access.name}",
                                       marks=marks))
    return params


def replaced(before: list[PageState], after: list[PageState]) -> list[int]:
    """Pages the process had (not the zero page) that now are another page or gone."""
    return [i for i, (b, a) in enumerate(zip(before, after))
            if b.present and not b.zero and a.pfn != b.pfn]


def allocated(before: list[PageState], after: list[PageState]) -> list[int]:
    """Pages that were missing or the zero page and now are a page of their own."""
    return [i for i, (b, a) in enumerate(zip(before, after))
            if (not b.present or b.zero) and a.present and not a.zero]


def page_observations(suffix: str, states: list[PageState],
                      driver_pfns: list[int] | None) -> dict:
    pfns = driver_pfns or [None] * len(states)
    obs = {
        f"present_{suffix}": [s.present for s in states],
        f"zero_{suffix}": [s.zero for s in states],
        f"anon_{suffix}": [s.anon for s in states],
        f"kind_{suffix}": [s.kind(d) for s, d in zip(states, pfns)],
        f"raw_pfn_{suffix}": [s.pfn for s in states],
        f"raw_pagemap_{suffix}": [f"{s.entry:#018x}" for s in states],
        f"raw_kpageflags_{suffix}": [None if s.kflags is None else f"{s.kflags:#x}"
                                     for s in states],
    }
    if driver_pfns is not None:
        # does the process's page table point at the driver's own page?
        obs[f"driver_page_{suffix}"] = [s.pfn == d for s, d in zip(states, driver_pfns)]
    return obs


def not_new(pages: list[str]) -> list[int]:
    return [i for i, page in enumerate(pages) if page != "new"]


@dataclass
class Cell:
    region: Region
    access: Access
    obs: dict
    loop: Loopback
    mr: MR | None
    error: VerbsError | None
    after: list[PageState]          # the pages right after registration: the ones MR pinned

    def require_registration(self) -> MR:
        """The MR, or skip the check: a failed registration leaves nothing to check."""
        if self.mr is None:
            pytest.skip(f"registration failed with {self.error.name}: nothing to check")
        return self.mr

    def pattern(self, step: str) -> bytes:
        """LENGTH bytes that belong to this cell's STEP alone."""
        return pattern(f"{self.region.tag}/{step}")

    def states(self) -> list[PageState]:
        return page_states(self.region.mapping.addr, PAGES)

    def record_pages(self, suffix: str) -> list[PageState]:
        """Record the pages now, under SUFFIX; return them."""
        now = self.states()
        self.obs.update(page_observations(suffix, now, self.obs.get("raw_driver_pfns")))
        return now

    def pages_moved(self, suffix: str) -> list[int]:
        """Record the pages now; return those that are not the pages registration left."""
        now = self.record_pages(suffix)
        return [i for i, (a, n) in enumerate(zip(self.after, now)) if a.pfn != n.pfn]

    def read_mr(self, target: MR | Target | None = None, **candidates: bytes) -> list[str]:
        """Per page, which of CANDIDATES an RDMA READ of the MR returns; "poison" where the
        READ left the buffer as it was, "other" for anything else; the completion status on
        every page where the READ failed (an ODP MR of what the device cannot reach)."""
        try:
            data, fill = self.loop.rdma_read(target or self.mr, LENGTH)
        except CompletionError as exc:
            return [exc.status] * PAGES
        return classify(data, **candidates, poison=fill)

    def read_process(self, **candidates: bytes) -> list[str]:
        """Per page, which of CANDIDATES the process reads from its mapping."""
        return classify(self.region.mapping.read(LENGTH), **candidates)


@contextlib.contextmanager
def open_cell(kind: RegionKind, access: Access, check: str, loop: Loopback,
              obs: dict) -> Iterator[Cell]:
    if access.odp and (why := loop.odp_unsupported(access.writable)):
        pytest.skip(f"no ODP MR here: {why}")
    try:
        region = Region(kind, f"{kind.name}/{access.name}/{check}")
    except Unavailable as exc:
        pytest.skip(str(exc))
    mr = None
    try:
        mapping = region.mapping
        driver_pfns = region.driver.pfns() if region.driver else None
        obs["raw_addr"] = f"{mapping.addr:#x}"
        if driver_pfns is not None:
            obs["raw_driver_pfns"] = driver_pfns
        if kind.backing == "file":
            obs["file_fs"] = filesystem_of(file_dir())
        before = page_states(mapping.addr, PAGES)
        pinned = pinned_kb()
        error = None
        try:
            mr = loop.register(mapping.addr, mapping.length, access.flags)
        except VerbsError as exc:
            error = exc
        after = page_states(mapping.addr, PAGES)
        obs["pinned_kb"] = pinned_kb() - pinned
        obs["registered"] = mr is not None
        obs["errno"] = error.name if error else None
        obs.update(page_observations("before", before, driver_pfns))
        obs.update(page_observations("after", after, driver_pfns))
        obs["pages_replaced"] = replaced(before, after)
        obs["pages_allocated"] = allocated(before, after)
        if kind.huge and not all(s.huge for s in before):
            pytest.fail(f"{kind.name} did not get a huge page before registration (pages: "
                        f"{obs['kind_before']}): the cell would test small pages")
        yield Cell(region, access, obs, loop, mr, error, after)
    finally:
        if mr is not None:
            mr.close()
        region.close()
