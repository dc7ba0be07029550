"""Host-side file access inside a folder a series or its build wrote: never through a link.

A series can make any path of the work tree a symbolic link (git's mode 120000) and its
Makefiles can plant links in the build directory and the driver's folder.  Every host-side
read or write under such a ROOT goes through these helpers: each component of the relative
path is opened from its parent's descriptor with O_NOFOLLOW, so a link anywhere on the way
is refused (LinkRefused, naming the path) and nothing outside ROOT is ever reached.  The
writers (replace, write_text, remove) take away whatever the series put at their path (a
link, a folder for a file) instead of refusing it; they never write through it either.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rig.core.status import RigError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK   # no FIFO blocks the rig


class LinkRefused(RigError):
    """A link (or another non-regular file) a series planted where the rig reads or writes."""

    def __init__(self, root: Path, rel: str, what: str = "a symbolic link"):
        super().__init__(f"{root / rel} is {what} planted by the series: refused")
        self.path = root / rel


def _parts(rel: str | Path) -> list[str]:
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ValueError(f"not a path inside the folder: {rel}")
    return parts


def _refusal(root: Path, rel: str, dir_fd: int, name: str) -> LinkRefused:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return LinkRefused(root, rel, "missing: a link on its way")
    if stat.S_ISLNK(mode):
        return LinkRefused(root, rel)
    return LinkRefused(root, rel, "not a regular file")


@contextmanager
def _parent(root: Path, rel: str, *, make: bool = False) -> Iterator[tuple[int, str]]:
    """A descriptor of REL's folder under ROOT and REL's last name.  MAKE: create missing
    folders, replacing whatever non-folder the series put on the way."""
    *dirs, name = _parts(rel)
    fd = os.open(root, _DIR)
    try:
        for d in dirs:
            try:
                nxt = os.open(d, _DIR, dir_fd=fd)
            except OSError as e:
                if not make or e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _refusal(root, rel, fd, d) from None
                    raise
                _take_away(fd, d)
                os.mkdir(d, dir_fd=fd)
                nxt = os.open(d, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd, name
    finally:
        os.close(fd)


def _take_away(dir_fd: int, name: str) -> None:
    """Remove NAME in DIR_FD whatever it is, without following it."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


@contextmanager
def _open(root: Path, rel: str) -> Iterator[int]:
    with _parent(root, rel) as (dir_fd, name):
        try:
            fd = os.open(name, _FILE, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise LinkRefused(root, rel) from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LinkRefused(root, rel, "not a regular file")
            yield fd
        finally:
            os.close(fd)


def regular(root: Path, rel: str) -> os.stat_result | None:
    """REL's stat when it is a regular file reached without a link, else None."""
    try:
        with _parent(root, rel) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (OSError, LinkRefused):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def read_bytes(root: Path, rel: str) -> bytes:
    """The content of ROOT/REL; LinkRefused when a link is on the way or it is no file."""
    with _open(root, rel) as fd, os.fdopen(os.dup(fd), "rb") as fh:
        return fh.read()


def read_text(root: Path, rel: str) -> str:
    return read_bytes(root, rel).decode("utf-8", "replace")


def write_text(root: Path, rel: str, text: str) -> None:
    """ROOT/REL made a regular file holding TEXT, whatever the series put there before."""
    with _parent(root, rel, make=True) as (dir_fd, name):
        _take_away(dir_fd, name)
        with _create(dir_fd, name, 0o644, "w") as out:
            out.write(text)


def _create(dir_fd: int, name: str, mode: int, how: str):
    return os.fdopen(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=dir_fd), how)


def copy_out(root: Path, rel: str, dest: Path) -> None:
    """ROOT/REL copied to DEST (a path of the rig's own) with its times, as shutil.copy2."""
    with _open(root, rel) as fd:
        st = os.fstat(fd)
        with os.fdopen(os.dup(fd), "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace(root: Path, rel: str, source: Path) -> None:
    """ROOT/REL made a copy of SOURCE, whatever the series made of the path before."""
    with _parent(root, rel, make=True) as (dir_fd, name):
        _take_away(dir_fd, name)
        if source.is_symlink():           # the pristine tree's own link, as it was
            os.symlink(os.readlink(source), name, dir_fd=dir_fd)
            return
        with _create(dir_fd, name, stat.S_IMODE(source.stat().st_mode), "wb") as out, \
                open(source, "rb") as src:
            shutil.copyfileobj(src, out)


def remove(root: Path, rel: str) -> None:
    """Whatever is at ROOT/REL gone, a link removed as a link; nothing when a link is on the
    way (then the path is not in ROOT)."""
    try:
        with _parent(root, rel) as (dir_fd, name):
            _take_away(dir_fd, name)
    except (FileNotFoundError, LinkRefused):
        pass


def set_times(root: Path, rel: str, st: os.stat_result) -> None:
    """ROOT/REL's access and modification times set from ST, never a link's target's."""
    with _parent(root, rel) as (dir_fd, name):
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dir_fd,
                 follow_symlinks=False)


def files(root: Path, name_prefix: str) -> Iterator[str]:
    """The regular files under ROOT whose name starts with NAME_PREFIX, relative to ROOT;
    links are neither followed nor given."""
    for top, dirs, names in os.walk(root):
        for n in names:
            if n.startswith(name_prefix) and os.path.isfile(p := os.path.join(top, n)) \
                    and not os.path.islink(p):
                yield os.path.relpath(p, root)
