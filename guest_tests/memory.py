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
HUGE_SIZE = 2 << 20                 # a PMD-sized page on x86_64: THP and the hugetlb default

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
MAP_FIXED_NOREPLACE = 0x100000      # include/uapi/asm-generic/mman-common.h (not in mmap)

# /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PFN_MASK = (1 << 55) - 1
PM_PRESENT = 1 << 63
# /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h)
KPF_ANON = 1 << 12
KPF_SWAPBACKED = 1 << 14
KPF_HUGE = 1 << 17                  # hugetlb
KPF_THP = 1 << 22                   # transparent huge page (or the huge zero page)
KPF_ZERO_PAGE = 1 << 24             # the zero page (with KPF_THP: the huge zero page)

THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mmap(addr: int | None, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    got = _libc.mmap(addr, length, prot, flags, fd, offset)
    if got in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap(length={length}, prot={prot:#x}, flags={flags:#x}, "
                           f"offset={offset:#x}): {os.strerror(err)}")
    return got


class Mapping:
    """One mmap()ed range; reads and writes refuse what its protection would fault on."""

    def __init__(self, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0,
                 align: int = 0):
        """ALIGN: place the mapping at a multiple of it (for a PMD-mapped THP)."""
        self.length, self.prot, self.flags, self.fd, self.offset = length, prot, flags, fd, offset
        if not align:
            self.addr: int = _mmap(None, length, prot, flags, fd, offset)
            return
        # map more than needed, then give back what lies outside the aligned range
        span = _mmap(None, length + align, prot, flags, fd, offset)
        self.addr = (span + align - 1) // align * align
        for start, end in ((span, self.addr), (self.addr + length, span + length + align)):
            if end > start:
                _check(_libc.munmap(start, end - start), "munmap")

    @property
    def npages(self) -> int:
        return self.length // PAGE_SIZE

    def read(self, length: int | None = None) -> bytes:
        if not self.prot & mmap.PROT_READ:
            raise PermissionError("reading a mapping without PROT_READ would fault")
        return ctypes.string_at(self.addr, self.length if length is None else length)

    def write(self, data: bytes) -> None:
        """Store DATA at the start of the mapping."""
        if not self.prot & mmap.PROT_WRITE:
            raise PermissionError("writing a mapping without PROT_WRITE would fault")
        if len(data) > self.length:
            raise ValueError(f"{len(data)} bytes for a {self.length}-byte mapping")
        ctypes.memmove(self.addr, data, len(data))

    def touch_read(self, npages: int) -> None:
        """Read one byte of each of the first NPAGES pages, so each is read-faulted."""
        for i in range(npages):
            ctypes.string_at(self.addr + i * PAGE_SIZE, 1)

    def protect(self, prot: int) -> None:
        _check(_libc.mprotect(self.addr, self.length, prot), f"mprotect({prot:#x})")
        self.prot = prot

    def advise(self, advice: int, what: str) -> None:
        _check(_libc.madvise(self.addr, self.length, advice), f"madvise({what})")

    def no_huge_pages(self) -> None:
        """MADV_NOHUGEPAGE where the kernel has THP at all (without it madvise says EINVAL)."""
        if os.path.isdir(THP_SYSFS):
            self.advise(mmap.MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE")

    def unmap(self) -> None:
        _check(_libc.munmap(self.addr, self.length), "munmap")

    def remap(self) -> None:
        """munmap, then mmap the same object again at the same address (protection as
        first mapped)."""
        self.unmap()
        self.map_again()

    def map_again(self) -> None:
        """mmap the object again where it was, after unmap()."""
        got = _mmap(self.addr, self.length, self.prot, self.flags | MAP_FIXED_NOREPLACE,
                    self.fd, self.offset)
        if got != self.addr:
            _libc.munmap(got, self.length)
            raise OSError(0, f"mmap at {self.addr:#x} returned {got:#x} (a kernel before 4.17 "
                             "ignores MAP_FIXED_NOREPLACE)")


def pinned_kb() -> int:
    """The process's pinned memory (VmPin: mm->pinned_vm, which ib_umem_get() adds to)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmPin:"):
                return int(line.split()[1])
    raise OSError(0, "/proc/self/status has no VmPin line")


def is_mapped(addr: int, length: int) -> bool:
    """Whether the range is mapped at all (madvise says ENOMEM for an unmapped hole)."""
    return _libc.madvise(addr, length, mmap.MADV_NORMAL) == 0


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

    def _flag(self, bit: int) -> bool:
        return self.kflags is not None and bool(self.kflags & bit)

    @property
    def zero(self) -> bool:
        """The shared zero page or the huge zero page."""
        return self._flag(KPF_ZERO_PAGE)

    @property
    def anon(self) -> bool:
        return self._flag(KPF_ANON)

    @property
    def huge(self) -> bool:
        """Part of a huge page: a THP, a hugetlb page or the huge zero page."""
        return self._flag(KPF_THP) or self._flag(KPF_HUGE)

    def kind(self, driver_pfn: int | None = None) -> str:
        """What the page is, from its flags: one word for the report."""
        if not self.present:
            return "none"
        if self.zero:
            return "huge-zero" if self._flag(KPF_THP) else "zero"
        if self.pfn == driver_pfn:
            return "driver"
        if self._flag(KPF_HUGE):
            return "hugetlb-anon" if self.anon else "hugetlb-file"
        if self._flag(KPF_THP):
            return "thp" if self.anon else "thp-file"
        if self.anon:
            return "anon"
        # shmem and tmpfs pages are swap-backed page cache; the rest is a file's page cache
        # (or, for a driver's mapping, a page the driver does not own)
        return "shmem" if self._flag(KPF_SWAPBACKED) else "file"


_proc_files: dict[int, tuple[int, int]] = {}


def _pagemap_and_kpageflags() -> tuple[int, int]:
    """Open once per process (under TCG each open costs milliseconds); a forked child gets its
    own, since the pagemap its parent opened describes the parent's memory."""
    pid = os.getpid()
    if pid not in _proc_files:
        _proc_files.clear()
        _proc_files[pid] = (os.open("/proc/self/pagemap", os.O_RDONLY),
                            os.open("/proc/kpageflags", os.O_RDONLY))
    return _proc_files[pid]


def page_states(addr: int, npages: int) -> list[PageState]:
    pagemap, kpageflags = _pagemap_and_kpageflags()
    entries = struct.unpack(f"<{npages}Q", os.pread(pagemap, npages * 8,
                                                    addr // PAGE_SIZE * 8))
    states = []
    for entry in entries:
        kflags = None
        if entry & PM_PRESENT:
            pfn = entry & PM_PFN_MASK
            if pfn == 0:
                raise PermissionError("pagemap hides PFNs: the tests must run as root")
            (kflags,) = struct.unpack("<Q", os.pread(kpageflags, 8, pfn * 8))
        states.append(PageState(entry, kflags))
    return states
