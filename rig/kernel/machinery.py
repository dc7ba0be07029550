"""Which files a series changes that are build machinery: code that runs on the host while
the kernel is configured and built (Makefiles, Kbuild, Kconfig, scripts/, tools/ ...), with
the patterns in data/build-machinery.toml."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from rig.core import datafiles
from rig.core.model import Patch
from rig.kernel import patches as patchlib


def _patterns() -> list[str]:
    return datafiles.toml("build-machinery.toml")["patterns"]


def is_machinery(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


def files(series: Iterable[Patch]) -> list[str]:
    """The build machinery SERIES creates, changes, renames or deletes, sorted."""
    patterns = _patterns()
    return sorted({f for p in series for f in patchlib.patch_files(p)
                   if is_machinery(f, patterns)})
