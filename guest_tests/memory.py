"""Process memory at fixed addresses: mappings through libc, page state through procfs.

Python's mmap module hides the address and cannot mprotect, so mappings go through ctypes.
Page state comes from /proc/self/pagemap and /proc/kpageflags (PFNs need root).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value

# /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PFN_MASK = (1 << 55) - 1
PM_PRESENT = 1 << 63
# /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h)
KPF_ANON = 1 << 12
KPF_ZERO_PAGE = 1 << 24

THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class Mapping:
    """One mmap()ed range; reads and writes refuse what its protection would fault on."""

    def __init__(self, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0):
        addr = _libc.mmap(None, length, prot, flags, fd, offset)
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap(length={length}, prot={prot:#x}, flags={flags:#x}, "
                               f"offset={offset:#x}): {os.strerror(err)}")
        self.addr: int = addr
        self.length = length
        self.prot = prot

    @property
    def npages(self) -> int:
        return self.length // PAGE_SIZE

    def read(self) -> bytes:
        if not self.prot & mmap.PROT_READ:
            raise PermissionError("reading a mapping without PROT_READ would fault")
        return ctypes.string_at(self.addr, self.length)

    def write(self, data: bytes) -> None:
        if not self.prot & mmap.PROT_WRITE:
            raise PermissionError("writing a mapping without PROT_WRITE would fault")
        if len(data) != self.length:
            raise ValueError(f"{len(data)} bytes for a {self.length}-byte mapping")
        ctypes.memmove(self.addr, data, self.length)

    def touch_read(self) -> None:
        """Read one byte of every page, so each page is read-faulted."""
        for i in range(self.npages):
            ctypes.string_at(self.addr + i * PAGE_SIZE, 1)

    def protect(self, prot: int) -> None:
        _check(_libc.mprotect(self.addr, self.length, prot), f"mprotect({prot:#x})")
        self.prot = prot

    def no_huge_pages(self) -> None:
        """MADV_NOHUGEPAGE where the kernel has THP at all (without it madvise says EINVAL)."""
        if os.path.isdir(THP_SYSFS):
            _check(_libc.madvise(self.addr, self.length, mmap.MADV_NOHUGEPAGE),
                   "madvise(MADV_NOHUGEPAGE)")

    def unmap(self) -> None:
        _check(_libc.munmap(self.addr, self.length), "munmap")


@dataclass(frozen=True)
class PageState:
    """What the process's page table and the kernel's page flags say about one page."""

    entry: int                      # raw pagemap entry
    kflags: int | None              # raw kpageflags of the PFN, None if not present

    @property
    def present(self) -> bool:
        return bool(self.entry & PM_PRESENT)

    @property
    def pfn(self) -> int | None:
        return self.entry & PM_PFN_MASK if self.present else None

    @property
    def zero(self) -> bool:
        return self.kflags is not None and bool(self.kflags & KPF_ZERO_PAGE)

    @property
    def anon(self) -> bool:
        return self.kflags is not None and bool(self.kflags & KPF_ANON)


def page_states(addr: int, npages: int) -> list[PageState]:
    with open("/proc/self/pagemap", "rb") as pm:
        pm.seek(addr // PAGE_SIZE * 8)
        entries = struct.unpack(f"<{npages}Q", pm.read(npages * 8))
    states = []
    with open("/proc/kpageflags", "rb") as kpf:
        for entry in entries:
            kflags = None
            if entry & PM_PRESENT:
                pfn = entry & PM_PFN_MASK
                if pfn == 0:
                    raise PermissionError("pagemap hides PFNs: the tests must run as root")
                kpf.seek(pfn * 8)
                (kflags,) = struct.unpack("<Q", kpf.read(8))
            states.append(PageState(entry, kflags))
    return states
