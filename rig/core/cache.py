"""Content-addressed cache under the user's cache directory.

An entry is a directory named by the hash of everything that went into it.  It is built in a
temporary sibling and renamed into place only when complete, so an interrupted build never
leaves a half entry that later reads as good.  A per-entry lock file (flock) keeps two rig
processes from building the same entry at once; the second waits and then finds a hit.

Scratch space lives under the cache too (tmp/), never in /tmp: each scratch directory and
half-built entry carries its process id, so what a killed rig left behind is swept by the
next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rig.core.paths import remove_tree
from rig.core.status import RigError

# What `rig cache --clear KIND` may remove: the cache's own directories, nothing else.
KINDS = {
    "source": "unpacked kernel sources",
    "config": "merged and checked configs",
    "kernel": "build artefacts",
    "image": "guest images",
    "work": "writable kernel trees and their build directories",
    "ccache": "the compiler cache",
    "logs": "build and boot logs",
    "suite": "guest suites built per kernel source",
    "tmp": "scratch space",
    "apt": "the rig's own apt lists of Debian's archive (where kernel sources come from)",
    "watch": "rig watch's state, outbox and vets (unless [watch] state says elsewhere)",
    "keys": "the rig's SSH client key (a new one means a new guest image)",
    "lava-root": "the local LAVA lab the end-to-end tests bring up",
    "testroot": "the clean Debian root the end-to-end set-up test starts from",
}


class CacheError(RigError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _owner(name: str) -> int | None:
    """The pid a scratch or partial name carries ("<pid>.what-..." or ".key.<pid>.x.partial")."""
    parts = name.lstrip(".").split(".")
    for part in (parts[0], parts[1] if len(parts) > 2 else ""):
        if part.isdigit():
            return int(part)
    return None


def default_root() -> Path:
    env = os.environ.get("RIG_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "umem-rig"


def digest(*parts: object) -> str:
    """Stable hash of JSON-able parts, bytes or paths' contents, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            data = part
        elif isinstance(part, Path):
            data = part.read_bytes()
        else:
            data = json.dumps(part, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on PATH (created if missing), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = root or default_root()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> Path | None:
        """The finished entry, or None.  Only complete entries ever exist under their key."""
        p = self.path(kind, key)
        return p if p.is_dir() else None

    @contextlib.contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        with locked(self.root / kind / f".{key}.lock"):
            yield

    @contextlib.contextmanager
    def publish(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a scratch directory; on clean exit it becomes the entry for KEY.

        Callers hold lock(kind, key) around lookup + publish.  On an exception the scratch
        directory is removed and nothing is published.
        """
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}.", suffix=".partial",
                                    dir=final.parent))
        try:
            yield tmp
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def scratch(self, what: str) -> Iterator[Path]:
        """A private temporary directory under the cache, removed on exit."""
        base = self.root / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}.{what}-", dir=base))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def rotated_log(self, kind: str, name: str, keep: int = 20) -> Path:
        """A new log file logs/KIND/<time>-NAME, keeping only the KEEP newest of that kind."""
        folder = self.root / "logs" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in sorted(folder.iterdir())[:-keep + 1 or None]:
            old.unlink(missing_ok=True)
        return folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{name}"

    def sweep(self) -> list[Path]:
        """Remove the scratch directories and half-built entries of rig processes that are
        gone (killed outright); return what was removed."""
        gone = []
        candidates = list((self.root / "tmp").glob("*")) + list(self.root.glob("*/.*.partial"))
        for path in candidates:
            pid = _owner(path.name)
            if pid is not None and pid != os.getpid() and not _alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path)
        return gone

    def clear(self, kind: str | None = None) -> list[Path]:
        """Remove one of KINDS, or every kind; nothing else under the root (and the root only
        when nothing else is left in it), so a mistyped --cache never removes a user's
        files.  An unknown KIND is refused before anything is removed."""
        if kind is not None and kind not in KINDS:
            raise CacheError(f"{kind!r} is not a kind of cache entry; the kinds are "
                             f"{', '.join(sorted(KINDS))}")
        removed = [self.root / k for k in ([kind] if kind else sorted(KINDS))
                   if (self.root / k).is_dir()]
        for path in removed:
            remove_tree(path, self.root)
        if kind is None and self.root.is_dir():
            for lock in self.root.glob(".*.lock"):
                lock.unlink()
            with contextlib.suppress(OSError):
                self.root.rmdir()
        return removed
