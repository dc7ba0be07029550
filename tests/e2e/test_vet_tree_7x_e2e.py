"""End to end: `rig vet --tree` on a 7.x maintainer tree.  The tree is Debian's 7.2 source as
the rig caches it, one commit; the thread holds a series written against it with git
format-patch (base-commit: names that commit) that puts back what 6.1 did for a read-only MR:
FOLL_WRITE | FOLL_FORCE.  The test driver module and both suites build against the tree, and
the cells that change are the ones 7.2's mm/gup.c says must.

Not in CI (.ci/run): it builds Debian's 7.2, which CI does not (DEVELOPERS.md's cold budget;
the README's "Which kernels CI builds"); the nightly job runs it, as anyone can:
`RIG_NIGHTLY=1 tox -e test -- tests/e2e/test_vet_tree_7x_e2e.py`.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from support.mkthread import Change, git, header, mbox, revision
from test_e2e_vet import Tree, rig

from rig.core.cache import Cache
from rig.flows import config, vet
from rig.kernel import sources
from rig.results import compare
from rig.results import schema as results
from rig.results.compare import Change as CellChange

pytestmark = pytest.mark.skipif(os.environ.get("RIG_NIGHTLY") != "1",
                                reason="builds Debian's 7.2, which CI does not: RIG_NIGHTLY=1")

UMEM = "drivers/infiniband/core/umem.c"
FORCE = Change(                   # 7.2's __ib_umem_get_va() as 6.1's ib_umem_get() pinned
    "IB/umem: Pin read-only MRs for writing, forced, as before 6.2",
    "A read-only MR pinned with FOLL_WRITE | FOLL_FORCE breaks COW at registration, so the\n"
    "device and the process share one page from then on.",
    ((UMEM, "\tif (umem->writable)\n\t\tgup_flags |= FOLL_WRITE;\n",
      "\tgup_flags |= FOLL_WRITE;\n\tif (!umem->writable)\n\t\tgup_flags |= FOLL_FORCE;\n"),))

# From 7.2.13's check_vma_flags() (mm/gup.c), with FOLL_WRITE | FOLL_FORCE | FOLL_LONGTERM for
# a read-only MR: a shared mapping without VM_WRITE is no COW mapping, so the forced write is
# refused (-EFAULT); a shared writable file mapping needs dirty tracking, which a long-term
# write pin may not have (writable_file_mapping_allowed()); both registered without the series.
REFUSED = {f"test_registration[{region}-ro-mr]" for region in (
    "drv-shared-ro", "file-shared-ro", "shmem-shared-ro", "file-shared-rw")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    cfg = config.load()
    source = sources.prepare(cfg.variant("debian-7.2").source, Cache())
    path = tmp_path_factory.mktemp("maintainer-7") / "linux"
    subprocess.run(["cp", "-a", "--reflink=auto", str(source.tree), str(path)], check=True)
    git(path, "init", "-q", "-b", "master")
    git(path, "add", "-A", "-f")              # Debian's .gitignore ignores the top
    git(path, "commit", "-q", "-m", f"Debian linux-source-7.2 {source.version}")
    base = git(path, "rev-parse", "HEAD").strip()
    sent = revision(path, base, [FORCE], 1, "2026-12-01T10:00:00Z", None)
    thread = path.parent / "force-thread.mbox"
    thread.write_text(mbox(sent))
    return Tree(path, base, base, thread, header(sent[0], "Message-Id").strip("<>"))


@pytest.fixture(scope="module")
def vetted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("vet-7")
    before = tree.state()
    # without the prefetch checks: on a pinned MR 7.2's rxe reads past the ib_umem, series or
    # not (guest_tests/expected.toml, may_crash)
    proc = rig("vet", str(tree.thread), "--tree", str(tree.path), "--select", "not prefetch",
               "--out", str(out))
    assert (out / "results.json").exists(), proc.stderr[-3000:]
    return proc, out, results.load(out / "results.json"), before


def test_the_series_is_vetted_on_the_7_2_tree_at_its_base_commit(tree, vetted):
    _, out, res, before = vetted
    text = (out / vet.SUMMARY).read_text()
    assert f"  Base: linux {tree.base[:12]}, from the series' base-commit: line" in text, text
    for v in res.variants:
        assert v.outcome.value == "ok", (v.name, v.errors)
        assert v.environment.kernel_release.startswith("7.2."), v.environment.kernel_release
    assert tree.state() == before


def test_the_cells_that_change_are_the_ones_7_2s_gup_says(vetted):
    proc, _, res, _ = vetted
    cand = next(v for v in compare.compare(res).variants if not v.variant.is_base)
    regressed = {c.id for c in cand.cells if c.change is CellChange.REGRESSED}
    assert regressed == REFUSED, sorted(regressed)
    for c in cand.cells:
        if c.id in REFUSED:
            assert c.other.observations["errno"] == "EFAULT", c.id
    # nothing but read-only pinned MRs can change: writable and ODP MRs never see the flags
    moved = [(c.id, c.change.value) for c in cand.cells if c.change is not CellChange.UNCHANGED]
    assert all(c.test.access == "ro-mr" for c in cand.cells
               if c.change is not CellChange.UNCHANGED), moved
    assert proc.returncode == 1
