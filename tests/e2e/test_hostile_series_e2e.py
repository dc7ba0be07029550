"""End to end: `rig vet` of a series that plants symbolic links, in the work tree and in the
test driver's folder, pointing at canary files outside the rig's cache and out dir.

The series is made here with git format-patch on the base kernel's own files: patch 1 turns
Documentation/infiniband/core_locking.rst into a link to one canary (git's mode 120000),
patch 2 adds to the top Makefile a $(shell ln ...) that, in the driver's build (M=), plants
zz-planted.ko in the driver's folder, a link to the other.  The vet must refuse to copy the
planted module (build-failed naming it); the next switch of the same work tree, to another
series, must restore the .rst by replacing the link, not by writing through it.  The canaries
and everything else in the test's tmp folder stay as they were (content and mtime).
Another rig from before the fix sharing the cache may switch the work tree between the two
steps and write through the link itself (seen while the cold CI ran): run it alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.mkthread import git as _git

from rig.core.cache import Cache
from rig.flows import config, vet
from rig.kernel import patches, sandbox, sources
from rig.kernel.worktree import WorkTree
from rig.results import schema as results

RST = "Documentation/infiniband/core_locking.rst"
INDEX = "Documentation/infiniband/index.rst"
MTIME = 10**18


def _state(top: Path, skip: Path) -> dict[str, tuple]:
    """Every path under TOP but SKIP: its kind, size, mtime and (links) target."""
    found = {}
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for n in dirs + names:
            p = Path(root, n)
            st = p.lstat()
            found[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                             os.readlink(p) if p.is_symlink() else "")
    return found


def test_vet_a_series_that_plants_links(tmp_path):
    cfg = config.load()
    base = cfg.variant(cfg.base)
    source = sources.prepare(base.source, Cache())
    canaries = tmp_path / "canaries"
    canaries.mkdir()
    for name in ("tree-canary", "module-canary"):
        (canaries / name).write_text(f"the host's own {name}\n")
        os.utime(canaries / name, ns=(MTIME, MTIME))

    repo = tmp_path / "repo"
    for rel in (RST, INDEX, "Makefile"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.tree / rel, repo / rel)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    (repo / RST).unlink()
    (repo / RST).symlink_to(canaries / "tree-canary")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "Documentation: Point core_locking at the host")
    with open(repo / "Makefile", "a") as fh:
        fh.write("\nifneq ($(KBUILD_EXTMOD),)\n"
                 f"$(shell ln -sfn {canaries / 'module-canary'} $(KBUILD_EXTMOD)/zz-planted.ko)\n"
                 "endif\n")
    _git(repo, "commit", "-qam", "kbuild: Plant a module beside the test driver's")
    series = tmp_path / "hostile-links"
    _git(repo, "format-patch", "-q", "-o", str(series), "HEAD~2")
    assert "new file mode 120000" in min(series.iterdir()).read_text()

    out = tmp_path / "out"
    before = _state(tmp_path, out)
    ran = subprocess.run([sys.executable, "-m", "rig.cli", "vet", str(series), "--out", str(out)],
                         capture_output=True, text=True, timeout=3600, check=False)
    assert (out / vet.SUMMARY).exists(), ran.stderr[-3000:]
    cand = results.load(out / "results.json").variant("hostile-links")
    assert cand.outcome.value == "build-failed", (cand.outcome, cand.errors)
    refusal = "/driver/zz-planted.ko is a symbolic link planted by the series: refused"
    assert any(refusal in e.message for e in cand.errors), cand.errors
    assert refusal in (out / vet.SUMMARY).read_text()
    assert _state(tmp_path, out) == before

    tree = WorkTree(source, Cache()).tree
    assert (tree / RST).is_symlink()      # failed builds are not cached: the series was applied

    # Another series in the same work tree: the switch restores the .rst the link replaced.
    # The switch itself, not a build: a build of this series cached by an earlier run skips it.
    (repo / INDEX).write_text((repo / INDEX).read_text() + "\n")
    _git(repo, "commit", "-qam", "Documentation: A blank line")
    other = tmp_path / "other"
    _git(repo, "format-patch", "-q", "-o", str(other), "HEAD~1")
    before = _state(tmp_path, out)
    confine = sandbox.decide(cfg.build_settings.sandbox, untrusted=True)
    with WorkTree(source, Cache()).lock() as work:
        assert work.checkout(tuple(patches.load(other)), confine.settings).ok
    assert _state(tmp_path, out) == before
    for name in ("tree-canary", "module-canary"):
        assert (canaries / name).read_text() == f"the host's own {name}\n"
        assert (canaries / name).stat().st_mtime_ns == MTIME
    assert not (tree / RST).is_symlink()
    assert (tree / RST).read_bytes() == (source.tree / RST).read_bytes()
