"""The kinds of memory under test and the MR accesses, as data: adding a kind is one entry."""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import mmap
import os
from dataclasses import dataclass

import pyverbs.enums as e
import umem_dev
from memory import HUGE_SIZE, PAGE_SIZE, THP_SYSFS, Mapping

PAGES = umem_dev.NPAGES             # the pages every check looks at: the first ones of a region
LENGTH = PAGES * PAGE_SIZE          # far below 2 MiB: a small region never gets a huge page
R = mmap.PROT_READ
RW = mmap.PROT_READ | mmap.PROT_WRITE
BACKINGS = ("anon", "driver", "file", "shmem", "hugetlb", "secretmem")
BEFORE = ("cpu-write", "cpu-read", "nothing")
FILE_DIR_ENV = "UMEM_TEST_FILE_DIR"
DEFAULT_FILE_DIR = "/var/tmp"       # on the guest's ext4 root (/tmp is a tmpfs)
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
SYS_MEMFD_SECRET = 447              # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)


class Unavailable(Exception):
    """The kernel cannot make this kind of region at all (a config option it lacks)."""


@dataclass(frozen=True)
class RegionKind:
    name: str
    backing: str                    # "anon"; "driver" (the umem_test device's own pages);
                                    # "file" (a regular file in FILE_DIR); "shmem" (a memfd);
                                    # "hugetlb" (a memfd with MFD_HUGETLB, 2 MiB pages);
                                    # "secretmem" (memfd_secret: out of the kernel's direct map)
    prot: int
    shared: bool
    before: str                     # what the CPU does before registration:
                                    # "cpu-write" | "cpu-read" (read-fault) | "nothing"
    fill: bool = False              # the object behind the mapping is filled with bytes of its
                                    # own before it is mapped (driver ioctl, pwrite, ...)
    huge: bool = False              # one 2 MiB page: MADV_HUGEPAGE (anon: a THP) or hugetlb
    mmap_offset: int = 0            # driver: umem_dev.MMAP_PAGES or MMAP_PFNMAP
    registration_xfail: str = ""    # why registration fails on every GUP-based kernel

    def __post_init__(self) -> None:
        if self.backing not in BACKINGS:
            raise ValueError(f"region {self.name}: unknown backing {self.backing!r}")
        if self.before not in BEFORE:
            raise ValueError(f"region {self.name}: unknown step before registration "
                             f"{self.before!r}")
        if self.fill and self.backing == "anon":
            raise ValueError(f"region {self.name}: anonymous memory has no object to fill")
        if self.huge != (self.backing == "hugetlb") and self.backing != "anon":
            raise ValueError(f"region {self.name}: huge is for anon (THP) and always hugetlb")
        if self.huge and self.backing == "anon" and self.shared:
            raise ValueError(f"region {self.name}: a shared anonymous THP is shmem")

    @property
    def length(self) -> int:
        return HUGE_SIZE if self.huge else LENGTH

    @property
    def secret(self) -> bool:
        """Whether the process keeps the memory secret from the kernel (memfd_secret): no
        device may ever read or write it (test_secretmem.py alone checks it through ODP)."""
        return self.backing == "secretmem"

    @property
    def pfnmap(self) -> bool:
        """Whether the mapping has no struct pages behind it (VM_PFNMAP)."""
        return self.backing == "driver" and self.mmap_offset == umem_dev.MMAP_PFNMAP

    @property
    def refaults(self) -> bool:
        """Whether a page zapped from the mapping comes back on the next access (the test
        driver maps its pages once, at mmap; it has no fault handler: SIGBUS)."""
        return self.backing != "driver"


REGIONS = (
    RegionKind("anon-written", "anon", RW, False, "cpu-write"),
    RegionKind("anon-untouched", "anon", RW, False, "nothing"),
    RegionKind("zero-page", "anon", RW, False, "cpu-read"),
    RegionKind("anon-prot-read", "anon", R, False, "nothing"),
    RegionKind("drv-shared-ro", "driver", R, True, "nothing", fill=True),
    RegionKind("drv-shared-rw", "driver", RW, True, "nothing", fill=True),
    RegionKind("drv-private-ro", "driver", R, False, "nothing", fill=True),
    RegionKind("drv-pfnmap", "driver", RW, True, "nothing", fill=True,
               mmap_offset=umem_dev.MMAP_PFNMAP,
               registration_xfail="a VM_PFNMAP mapping has no struct pages for GUP to pin"),
    RegionKind("file-shared-rw", "file", RW, True, "cpu-read", fill=True),
    RegionKind("file-shared-ro", "file", R, True, "cpu-read", fill=True),
    RegionKind("file-private-ro", "file", R, False, "cpu-read", fill=True),
    RegionKind("file-private-rw", "file", RW, False, "cpu-write", fill=True),
    RegionKind("shmem-shared-rw", "shmem", RW, True, "cpu-read", fill=True),
    RegionKind("shmem-shared-ro", "shmem", R, True, "cpu-read", fill=True),
    RegionKind("hugetlb-shared-rw", "hugetlb", RW, True, "cpu-write", huge=True),
    RegionKind("hugetlb-private-ro", "hugetlb", R, False, "cpu-read", fill=True, huge=True),
    RegionKind("thp-written", "anon", RW, False, "cpu-write", huge=True),
    RegionKind("thp-zero-page", "anon", RW, False, "cpu-read", huge=True),
    RegionKind("secretmem", "secretmem", RW, True, "cpu-write",
               registration_xfail="GUP refuses memfd_secret's pages (mm/gup.c "
                                  "check_vma_flags: vma_is_secretmem)"),
)


@dataclass(frozen=True)
class Access:
    name: str
    flags: int
    writable: bool                  # the MR lets the device write (ib_access_writable)
    odp: bool = False               # on-demand paging: nothing pinned, pages faulted in by
                                    # the device's accesses through the mmu notifiers


_RW_FLAGS = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ
ACCESSES = (                        # the pinned ones: GUP with FOLL_LONGTERM
    Access("ro-mr", e.IBV_ACCESS_REMOTE_READ, False),
    Access("rw-mr", _RW_FLAGS, True),
)
READ_ONLY, WRITABLE = ACCESSES
ODP_REGIONS = tuple(k for k in REGIONS if not k.secret)
ODP_ACCESSES = (
    Access("odp-ro-mr", e.IBV_ACCESS_ON_DEMAND | e.IBV_ACCESS_REMOTE_READ, False, odp=True),
    Access("odp-rw-mr", e.IBV_ACCESS_ON_DEMAND | _RW_FLAGS, True, odp=True),
)
ODP_READ_ONLY, ODP_WRITABLE = ODP_ACCESSES


def grants(kind: RegionKind, access: Access) -> bool:
    """Whether the mapping gives the process the access the MR asks for."""
    return bool(kind.prot & (mmap.PROT_WRITE if access.writable else mmap.PROT_READ))


def pattern(tag: str) -> bytes:
    """LENGTH bytes, different for every page and every tag, never all zero, and no two
    stretches of a page alike: a copy that lands at the wrong offset inside a page (one
    1 KiB packet of a WRITE where another belongs) never passes for the right bytes."""
    pages = [hashlib.shake_256(f"{tag}/{i}".encode()).digest(PAGE_SIZE) for i in range(PAGES)]
    return b"".join(pages)


def classify(data: bytes, **candidates: bytes) -> list[str]:
    """For each page of DATA, the name of the first candidate it matches, else "other"."""
    names = []
    for i in range(PAGES):
        page = slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
        names.append(next((name for name, c in candidates.items() if data[page] == c[page]),
                          "other"))
    return names


@functools.cache
def filesystem_of(path: str) -> str:
    """The type of the filesystem PATH is on, from /proc/self/mountinfo."""
    best, fstype = "", "unknown"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point, after = fields[4], fields[fields.index("-") + 1]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, fstype = mount_point, after
    return fstype


def memfd_secret() -> int:
    """A memfd_secret(2) file; Unavailable where the kernel has none (CONFIG_SECRETMEM off,
    or off at boot: 6.1 needs secretmem.enable=1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_MEMFD_SECRET, os.O_CLOEXEC)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS:         # mm/secretmem.c: also when off at boot
        raise Unavailable("memfd_secret: ENOSYS: the kernel has no secret memory "
                          "(CONFIG_SECRETMEM)")
    raise OSError(err, f"memfd_secret: {os.strerror(err)}")


def file_dir() -> str:
    return os.environ.get(FILE_DIR_ENV, DEFAULT_FILE_DIR)


class Region:
    """A live mapping of one kind, with what it held before the test changed anything.

    TAG names the cell: every byte pattern the region writes is derived from it, so no two
    cells (or steps) ever hold the same bytes.
    """

    def __init__(self, kind: RegionKind, tag: str):
        self.kind = kind
        self.tag = tag
        self.driver: umem_dev.DriverPages | None = None
        self.fd = -1
        self.fill: bytes | None = None     # what the object behind the mapping holds
        self.old = bytes(LENGTH)           # what the process reads before registration
        try:
            self._open_object()
            self.mapping = self._map()
            self._before()
        except BaseException:
            self._close_object()
            raise

    def _open_object(self) -> None:
        kind = self.kind
        fill = pattern(f"{self.tag}/fill") if kind.fill else None
        if kind.backing == "driver":
            self.driver = umem_dev.DriverPages()
            if fill:
                self.driver.write(fill)
        elif kind.backing == "file":
            self.fd = os.open(file_dir(), os.O_TMPFILE | os.O_RDWR, 0o600)
        elif kind.backing == "shmem":
            self.fd = os.memfd_create(f"umem-{kind.name}", os.MFD_CLOEXEC)
        elif kind.backing == "hugetlb":
            self.fd = os.memfd_create(f"umem-{kind.name}",
                                      os.MFD_CLOEXEC | os.MFD_HUGETLB | os.MFD_HUGE_2MB)
        elif kind.backing == "secretmem":
            self.fd = memfd_secret()
        if self.fd >= 0:
            os.ftruncate(self.fd, kind.length)
        if fill and self.fd >= 0:
            if kind.backing == "hugetlb":       # hugetlbfs has no write(): through a mapping
                writer = self._hugetlb_mapping(RW, mmap.MAP_SHARED)
                writer.write(fill)
                writer.unmap()
            else:
                os.pwrite(self.fd, fill, 0)
        if fill:
            self.fill = self.old = fill

    def _hugetlb_mapping(self, prot: int, flags: int) -> Mapping:
        try:
            return Mapping(HUGE_SIZE, prot, flags, self.fd)
        except OSError as exc:
            with open(NR_HUGEPAGES) as f:
                reserved = f.read().strip()
            raise OSError(exc.errno, f"{exc.strerror} (vm.nr_hugepages = {reserved}: the guest "
                                     "reserves 2 MiB pages with hugepages= on the kernel "
                                     "command line)") from None

    def _map(self) -> Mapping:
        kind = self.kind
        flags = mmap.MAP_SHARED if kind.shared else mmap.MAP_PRIVATE
        if kind.backing == "hugetlb":
            return self._hugetlb_mapping(kind.prot, flags)
        if kind.backing == "driver":
            return Mapping(kind.length, kind.prot, flags, self.driver.fd, kind.mmap_offset)
        if kind.backing != "anon":
            return Mapping(kind.length, kind.prot, flags, self.fd)
        if kind.huge and not os.path.isdir(THP_SYSFS):
            raise OSError(0, f"{kind.name} needs transparent huge pages: the kernel has no "
                             f"{THP_SYSFS}")
        mapping = Mapping(kind.length, kind.prot, flags | mmap.MAP_ANONYMOUS,
                          align=HUGE_SIZE if kind.huge else 0)
        self._advise_huge(mapping)
        return mapping

    def _advise_huge(self, mapping: Mapping) -> None:
        if self.kind.backing != "anon":
            return
        if self.kind.huge:
            mapping.advise(mmap.MADV_HUGEPAGE, "MADV_HUGEPAGE")
        else:
            mapping.no_huge_pages()

    def _before(self) -> None:
        if self.kind.before == "cpu-write":
            self.old = pattern(f"{self.tag}/cpu-before")
            self.mapping.write(self.old)
        elif self.kind.before == "cpu-read":
            self.mapping.touch_read(PAGES)

    def make_writable(self) -> bool:
        """mprotect the mapping to read-write if it is not; return whether it had to."""
        if self.mapping.prot & mmap.PROT_WRITE:
            return False
        self.mapping.protect(RW)
        return True

    def dontneed(self) -> None:
        self.mapping.advise(mmap.MADV_DONTNEED, "MADV_DONTNEED")

    def remap(self) -> None:
        """munmap the region and mmap its object again at the same address."""
        self.mapping.prot = self.kind.prot
        self.mapping.remap()
        self._advise_huge(self.mapping)

    def close(self) -> None:
        try:
            self.mapping.unmap()
        finally:
            self._close_object()

    def _close_object(self) -> None:
        if self.driver:
            self.driver.close()
        if self.fd >= 0:
            os.close(self.fd)
