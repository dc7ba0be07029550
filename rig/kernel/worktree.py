"""The writable kernel tree in which the variants of one source take turns.

Every variant of a source builds in the same tree and the same O= directory, so a patched
variant recompiles only what its patches touch (copying a build tree elsewhere makes make
rebuild everything).  Switching variants restores the files the previous patches touched from
the pristine source and applies the new patches.  The list of touched files is journalled
before anything is written, so an interrupted switch is undone by the next one.  A file whose
content comes back identical to what the last build saw gets its old mtime back, so make
does not rebuild it for nothing (bisection steps move back and forth over the same patches).
A series may have made any path a link: every host step here goes through safefs, so a
restore replaces the link and never writes, reads or touches the times of what it points at.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rig.core import proc, safefs
from rig.core.cache import Cache, locked
from rig.core.model import Patch, PreparedSource
from rig.kernel import patches as patchlib
from rig.kernel import sandbox as sandboxlib


class WorkTree:
    def __init__(self, source: PreparedSource, cache: Cache):
        self.source = source
        self.root = cache.root / "work" / source.tree.parent.name
        self.tree = self.root / "linux"
        self._journal = self.root / "state.json"
        self.switched: list[str] = []     # files the last checkout() rewrote

    @contextmanager
    def lock(self) -> Iterator[WorkTree]:
        """Exclusive use of the tree and its build directories."""
        with locked(self.root.parent / f".{self.root.name}.lock"):
            if not self.tree.is_dir():
                self._create()
            yield self

    def objdir(self, config_key: str) -> Path:
        return self.root / f"obj-{config_key[:16]}"

    def _create(self) -> None:
        partial = self.root / "linux.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        proc.run(["cp", "-a", "--reflink=auto", str(self.source.tree), str(partial)],
                 f"copying {self.source.tree}")
        partial.rename(self.tree)
        self._save([], [])

    def _load(self) -> tuple[list[str], list[str]]:
        if not self._journal.exists():
            return [], []
        state = json.loads(self._journal.read_text())
        return state["applied"], state["touched"]

    def _save(self, applied: list[str], touched: list[str]) -> None:
        tmp = self._journal.with_suffix(".tmp")
        tmp.write_text(json.dumps({"applied": applied, "touched": sorted(set(touched))}))
        os.replace(tmp, self._journal)

    def checkout(self, series: tuple[Patch, ...],
                 sandbox: sandboxlib.Settings | None = None) -> patchlib.ApplyResult:
        """Make the tree pristine + SERIES, applied in SANDBOX if given.  On failure the tree
        holds the patches before it."""
        applied, touched = self._load()
        wanted = [p.sha256 for p in series]
        before: dict[str, tuple[bytes, os.stat_result] | None] = {}
        if wanted[:len(applied)] == applied:
            todo = series[len(applied):]        # extending what is there: apply the rest only
        else:
            before = {f: self._snapshot(f) for f in touched}
            self._restore(touched)
            applied, touched = [], []
            todo = series
        new_files = sorted({f for p in todo for f in patchlib.patch_files(p)})
        self.switched = sorted(set(before) | set(new_files))
        self._save(applied, touched + new_files)   # journal first, then write
        result = patchlib.apply(self.tree, todo, sandbox)
        applied += [p.sha256 for p in todo[:result.applied]]
        self._save(applied, touched + new_files)
        self._keep_mtimes(before)
        return result

    def _snapshot(self, rel: str) -> tuple[bytes, os.stat_result] | None:
        st = safefs.regular(self.tree, rel)
        return (safefs.read_bytes(self.tree, rel), st) if st else None

    def _restore(self, touched: list[str]) -> None:
        for rel in touched:
            pristine = self.source.tree / rel
            if pristine.is_file() or pristine.is_symlink():
                safefs.replace(self.tree, rel, pristine)
            else:
                safefs.remove(self.tree, rel)

    def _keep_mtimes(self, before: dict[str, tuple[bytes, os.stat_result] | None]) -> None:
        for rel, snap in before.items():
            if snap is not None and safefs.regular(self.tree, rel) \
                    and safefs.read_bytes(self.tree, rel) == snap[0]:
                safefs.set_times(self.tree, rel, snap[1])
