"""The umem_test driver from Python: loading it, and its ioctls (mirrors driver/umem_test.h)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

DEVICE = Path("/dev/umem_test")
KO_ENV = "UMEM_TEST_KO"
DEFAULT_KO = Path(__file__).parent / "driver" / "umem_test.ko"

NPAGES = 4
MMAP_PAGES = 0x0                    # struct pages, vm_insert_page
MMAP_PFNMAP = 0x100000              # the same pages through remap_pfn_range

_INFO = struct.Struct(f"<II{NPAGES}Q")
_IO = struct.Struct("<QQQ")


def _ioc(direction: int, nr: int, size: int) -> int:
    # asm-generic/ioctl.h: dir:2 | size:14 | type:8 | nr:8
    return direction << 30 | size << 16 | ord("u") << 8 | nr


_IOC_WRITE, _IOC_READ = 1, 2
UMEM_TEST_INFO = _ioc(_IOC_READ, 0x80, _INFO.size)
UMEM_TEST_WRITE = _ioc(_IOC_WRITE, 0x81, _IO.size)
UMEM_TEST_READ = _ioc(_IOC_WRITE, 0x82, _IO.size)

_SYS_FINIT_MODULE = 313            # x86_64


def ensure_loaded() -> str:
    """Make /dev/umem_test exist; return "" or why it cannot."""
    if DEVICE.exists():
        return ""
    ko = Path(os.environ.get(KO_ENV, DEFAULT_KO))
    if not ko.is_file():
        return (f"{DEVICE} does not exist and there is no module to load at {ko} "
                f"(insmod umem_test.ko first, or set {KO_ENV})")
    libc = ctypes.CDLL(None, use_errno=True)
    with open(ko, "rb") as f:
        if libc.syscall(_SYS_FINIT_MODULE, f.fileno(), b"", 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EEXIST:
                return f"loading {ko} failed: {errno.errorcode.get(err, err)} {os.strerror(err)}"
    if not DEVICE.exists():
        return f"{ko} loaded but {DEVICE} did not appear (is devtmpfs mounted on /dev?)"
    return ""


class DriverPages:
    """One open of /dev/umem_test: its own NPAGES pages, freed when the last user lets go."""

    def __init__(self) -> None:
        self.fd = os.open(DEVICE, os.O_RDWR)

    def pfns(self) -> list[int]:
        buf = bytearray(_INFO.size)
        fcntl.ioctl(self.fd, UMEM_TEST_INFO, buf)
        npages, _page_size, *pfns = _INFO.unpack(buf)
        if npages != NPAGES:
            raise RuntimeError(f"{DEVICE} has {npages} pages; umem_dev.py expects {NPAGES}")
        return pfns

    def write(self, data: bytes, offset: int = 0) -> None:
        """The driver stores DATA into its pages through its own kernel mapping."""
        src = ctypes.create_string_buffer(data, len(data))
        fcntl.ioctl(self.fd, UMEM_TEST_WRITE,
                    _IO.pack(offset, len(data), ctypes.addressof(src)))

    def read(self, length: int, offset: int = 0) -> bytes:
        """What the driver's pages hold, read through its own kernel mapping."""
        dst = ctypes.create_string_buffer(length)
        fcntl.ioctl(self.fd, UMEM_TEST_READ, _IO.pack(offset, length, ctypes.addressof(dst)))
        return dst.raw

    def close(self) -> None:
        os.close(self.fd)
