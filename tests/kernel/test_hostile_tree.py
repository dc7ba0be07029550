"""Links a series plants in the work tree, the build directory or the driver's folder are never
followed by a host step: restoring the tree replaces them, reading through them is refused
with the path named (issue 19, class 1).

The kernel tree is a tiny fake one in tmp; the symlink patch is made by git format-patch here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.mkthread import git as _git

from rig.core import safefs
from rig.core.cache import Cache
from rig.core.model import (
    BuildEnvironment,
    BuildSettings,
    PreparedSource,
    SourceSpec,
    Toolchain,
    Variant,
)
from rig.core.progress import Progress
from rig.flows.config import project_root
from rig.kernel import patches
from rig.kernel.build import Builder, MakeStep
from rig.kernel.kconfig import MergedConfig
from rig.kernel.worktree import WorkTree


@pytest.fixture
def canary(tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_text("the host's own file\n")
    os.utime(outside / "canary", ns=(10**18, 10**18))
    return outside / "canary"


def _unchanged(canary: Path) -> bool:
    return (canary.read_text() == "the host's own file\n" and canary.stat().st_mtime_ns == 10**18
            and sorted(p.name for p in canary.parent.iterdir()) == ["canary"])


@pytest.fixture
def work(tmp_path) -> WorkTree:
    pristine = tmp_path / "src" / "linux"
    (pristine / "mm").mkdir(parents=True)
    (pristine / "mm" / "gup.c").write_text("int gup;\n")
    (pristine / "Makefile").write_text("all:\n")
    source = PreparedSource(SourceSpec("fake", "tarball"), pristine, "1")
    w = WorkTree(source, Cache(tmp_path / "cache"))
    with w.lock():
        pass
    return w


def _symlink_patch(tmp_path: Path, link: str, target: Path) -> list[patches.Patch]:
    """A real `git format-patch` of a commit that turns LINK into a link to TARGET."""
    repo = tmp_path / "repo"
    shutil.copytree(tmp_path / "src" / "linux", repo)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    (repo / link).unlink()
    (repo / link).symlink_to(target)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "mm: make gup.c a link")
    out = tmp_path / "series"
    _git(repo, "format-patch", "-q", "-o", str(out), "HEAD~1")
    return patches.load(out)


def test_a_symlink_patch_then_the_next_variant_does_not_write_through_it(work, tmp_path,
                                                                        canary):
    series = _symlink_patch(tmp_path, "mm/gup.c", canary)
    assert "new file mode 120000" in series[0].diff
    with work.lock():
        assert work.checkout(tuple(series)).ok
        assert (work.tree / "mm" / "gup.c").is_symlink()
        work.checkout(())                     # back to pristine: the restore
    assert _unchanged(canary)
    restored = work.tree / "mm" / "gup.c"
    assert not restored.is_symlink() and restored.read_text() == "int gup;\n"


def test_a_folder_made_a_link_is_replaced_not_written_into(work, canary):
    with work.lock():
        (work.tree / "mm" / "gup.c").write_text("patched\n")
        work._save(["x"], ["mm/gup.c", "mm/new.c"])
        shutil.rmtree(work.tree / "mm")
        (work.tree / "mm").symlink_to(canary.parent)   # as a build would leave it
        (canary.parent / "new.c").write_text("")        # what the restore must not delete
        work.checkout(())
    (canary.parent / "new.c").unlink()
    assert _unchanged(canary)
    assert (work.tree / "mm").is_dir() and not (work.tree / "mm").is_symlink()
    assert (work.tree / "mm" / "gup.c").read_text() == "int gup;\n"


@pytest.fixture
def builder(tmp_path):
    driver = tmp_path / "driver"
    shutil.copytree(project_root() / "guest_tests" / "driver", driver)
    return Builder(BuildSettings(driver), Cache(tmp_path / "cache"), Progress(live=False))


def test_a_build_dir_config_link_is_replaced_and_a_release_link_refused(builder, work,
                                                                      canary, tmp_path):
    config = MergedConfig("CONFIG_A=y\n", "k" * 16, "tinyconfig", ())
    objdir = work.objdir(config.key)
    objdir.mkdir()
    (objdir / ".config").symlink_to(canary)     # planted by a series' earlier build
    release = objdir / "include" / "config" / "kernel.release"
    plant = f"mkdir -p {release.parent} && ln -sf {canary} {release}"
    steps = {"config": MakeStep("config", ("true",), (objdir,), (), ()),
             "build": MakeStep("build", ("sh", "-c", plant), (objdir,), (), ())}
    variant = Variant("v", work.source.spec, ())
    with pytest.raises(safefs.LinkRefused, match="kernel.release is a symbolic link planted "
                                                 "by the series: refused"), \
            builder.cores.slot() as jobs:
        builder._make_kernel(variant, config, work, steps, tmp_path / "log", None, jobs)
    assert _unchanged(canary)
    assert (objdir / ".config").read_text() == "CONFIG_A=y\n"


def test_a_planted_module_link_is_refused_not_copied_into_the_cache(builder, tmp_path,
                                                                   canary):
    objdir, moddir = tmp_path / "obj", tmp_path / "mod"
    for rel in ("arch/x86/boot/bzImage", "System.map", "vmlinux", ".config"):
        (objdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (objdir / rel).write_text(rel)
    moddir.mkdir()
    (moddir / "umem_test.ko").symlink_to(canary)
    (tmp_path / "log").write_text("")
    env = BuildEnvironment("base", "1", "k", "tinyconfig", Toolchain("g", "l", "m"))
    with pytest.raises(safefs.LinkRefused, match=f"{moddir}/umem_test.ko is a symbolic link"):
        builder._publish(Variant("v", SourceSpec("fake", "tarball"), ()), "key", env, objdir,
                         moddir, tmp_path / "log")
    assert builder.cache.lookup("kernel", "key") is None
    assert _unchanged(canary)


def test_reads_refuse_a_link_anywhere_on_the_way(tmp_path, canary):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("in\n")
    (root / "up").symlink_to(canary.parent)
    assert safefs.read_text(root, "d/f") == "in\n"
    for rel in ("up/canary", "up"):
        with pytest.raises(safefs.LinkRefused, match=f"{root}/{rel} is a symbolic link"):
            safefs.read_bytes(root, rel)
    os.mkfifo(root / "d" / "fifo")
    with pytest.raises(safefs.LinkRefused, match="not a regular file"):
        safefs.read_bytes(root, "d/fifo")
    assert safefs.regular(root, "up/canary") is None
