"""Unpacking a tar archive as plain files and folders, on every Python the rig runs on.

tarfile's "data" filter (Python 3.11.4 on) refuses what could reach outside the destination
and drops modes and owners a member should not carry; Debian 12's own Python is 3.11.2,
which has no filter.  So the members are checked here first on every Python, and where
the filter is missing they are written with plain modes and the caller's ownership.
Imports only the standard library: the benchmarks run it under the system's Python.
"""

from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path, PurePosixPath

from rig.core.status import RigError


class UnsafeArchive(RigError):
    """A member that is not a plain file or folder inside the destination."""


def unsafe(member: tarfile.TarInfo) -> str | None:
    """Why MEMBER may not be unpacked, or None."""
    if not (member.isreg() or member.isdir()):
        return "not a plain file or folder (a link, device or FIFO)"
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "its name is absolute or climbs out of the destination"
    return None


def extract(tar: tarfile.TarFile, dest: Path, what: str) -> None:
    """Every member of TAR (WHAT, for the error) under DEST; UnsafeArchive, before anything
    is written, for a member that is not a plain file or folder inside DEST."""
    members = tar.getmembers()
    for m in members:
        if (why := unsafe(m)) is not None:
            raise UnsafeArchive(f"{what}: refused member {m.name!r}: {why}")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    plain = []
    for m in members:
        m = copy.copy(m)
        m.mode = 0o755 if m.isdir() or m.mode & 0o100 else 0o644
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        plain.append(m)
    tar.extractall(dest, members=plain, numeric_owner=True)
