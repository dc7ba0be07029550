"""Content-addressed cache under the user's cache directory.

An entry is a directory named by the hash of everything that went into it.  It is built in a
temporary sibling and renamed into place only when complete, so an interrupted build never
leaves a half entry that later reads as good.  A per-entry lock file (flock) keeps two rig
processes from building the same entry at once; the second waits and then finds a hit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=final.parent))
        try:
            yield tmp
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clear(self, kind: str | None = None) -> None:
        target = self.root / kind if kind else self.root
        shutil.rmtree(target, ignore_errors=True)
