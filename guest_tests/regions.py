"""The kinds of memory under test and the MR accesses, as data: adding a kind is one entry."""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass

import pyverbs.enums as e
import umem_dev
from memory import PAGE_SIZE, Mapping

PAGES = umem_dev.NPAGES             # several pages, far below 2 MiB: never a huge (zero) page
LENGTH = PAGES * PAGE_SIZE
R = mmap.PROT_READ
RW = mmap.PROT_READ | mmap.PROT_WRITE


@dataclass(frozen=True)
class RegionKind:
    name: str
    backing: str                    # "anon" | "driver" (the umem_test device's own pages)
    prot: int
    shared: bool
    before: str                     # what happens before registration:
                                    # "cpu-write" | "cpu-read" | "nothing" | "driver-write"
    mmap_offset: int = 0            # driver: umem_dev.MMAP_PAGES or MMAP_PFNMAP
    registration_xfail: str = ""    # why registration fails on every GUP-based kernel

    def __post_init__(self) -> None:
        if self.backing not in ("anon", "driver"):
            raise ValueError(f"region {self.name}: unknown backing {self.backing!r}")
        if self.before not in ("cpu-write", "cpu-read", "nothing", "driver-write"):
            raise ValueError(f"region {self.name}: unknown step before registration "
                             f"{self.before!r}")
        if self.before == "driver-write" and self.backing != "driver":
            raise ValueError(f"region {self.name}: only driver memory has a driver to write it")


REGIONS = (
    RegionKind("anon-written", "anon", RW, False, "cpu-write"),
    RegionKind("anon-untouched", "anon", RW, False, "nothing"),
    RegionKind("zero-page", "anon", RW, False, "cpu-read"),
    RegionKind("anon-prot-read", "anon", R, False, "nothing"),
    RegionKind("drv-shared-ro", "driver", R, True, "driver-write"),
    RegionKind("drv-shared-rw", "driver", RW, True, "driver-write"),
    RegionKind("drv-private-ro", "driver", R, False, "driver-write"),
    RegionKind("drv-pfnmap", "driver", RW, True, "driver-write", umem_dev.MMAP_PFNMAP,
               registration_xfail="a VM_PFNMAP mapping has no struct pages for GUP to pin"),
)


@dataclass(frozen=True)
class Access:
    name: str
    flags: int
    writable: bool                  # the MR lets the device write (ib_access_writable)


ACCESSES = (
    Access("ro-mr", e.IBV_ACCESS_REMOTE_READ, False),
    Access("rw-mr", e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
           | e.IBV_ACCESS_REMOTE_READ, True),
)


def grants(kind: RegionKind, access: Access) -> bool:
    """Whether the mapping gives the process the access the MR asks for."""
    return bool(kind.prot & (mmap.PROT_WRITE if access.writable else mmap.PROT_READ))


def pattern(tag: str) -> bytes:
    """LENGTH bytes, different for every page and every tag, never all zero."""
    pages = []
    for i in range(PAGES):
        digest = hashlib.sha256(f"{tag}/{i}".encode()).digest()
        pages.append((digest * (PAGE_SIZE // len(digest) + 1))[:PAGE_SIZE])
    return b"".join(pages)


def classify(data: bytes, **candidates: bytes) -> list[str]:
    """For each page of DATA, the name of the first candidate it matches, else "other"."""
    names = []
    for i in range(PAGES):
        page = slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
        names.append(next((name for name, c in candidates.items() if data[page] == c[page]),
                          "other"))
    return names


class Region:
    """A live mapping of one kind, with what it held before the test changed anything."""

    def __init__(self, kind: RegionKind):
        self.kind = kind
        self.driver = umem_dev.DriverPages() if kind.backing == "driver" else None
        try:
            self.mapping = self._map()
        except BaseException:
            if self.driver:
                self.driver.close()
            raise

    def _map(self) -> Mapping:
        kind = self.kind
        flags = mmap.MAP_SHARED if kind.shared else mmap.MAP_PRIVATE
        self.old = bytes(LENGTH)
        if self.driver:
            if kind.before == "driver-write":
                self.old = pattern("driver-before")
                self.driver.write(self.old)
            mapping = Mapping(LENGTH, kind.prot, flags, self.driver.fd, kind.mmap_offset)
        else:
            mapping = Mapping(LENGTH, kind.prot, flags | mmap.MAP_ANONYMOUS)
            mapping.no_huge_pages()
        if kind.before == "cpu-write":
            self.old = pattern("cpu-before")
            mapping.write(self.old)
        elif kind.before == "cpu-read":
            mapping.touch_read()
        return mapping

    def make_writable(self) -> bool:
        """mprotect the mapping to read-write if it is not; return whether it had to."""
        if self.mapping.prot & mmap.PROT_WRITE:
            return False
        self.mapping.protect(RW)
        return True

    def close(self) -> None:
        self.mapping.unmap()
        if self.driver:
            self.driver.close()
