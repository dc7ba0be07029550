"""End to end: `rig vet THREAD.mbox --tree TREE` on a maintainer's git tree, and its KCIDB export.

The tree is made from the Debian 6.1 source the rig caches: its first commit is that source
(every file, so the exported tree is the source the rig builds as "base"), its second (HEAD)
changes the very lines the series changes, so the series applies only at the first.  The
thread holds two revisions written with git format-patch against the first commit, each
naming it in base-commit: v1 changes a comment, v2 is patches/umem-rfc's change.  The rig
must build at the first commit, vet v2, name the cells the RFC fixes and regresses (the same
as tests/e2e/test_e2e.py, from the same source), and leave the tree exactly as it was.

Commits are made with fixed names and dates, so the tree's commits, and with them the rig's
cache keys, are the same from run to run: a warm run builds nothing.  Cold, the base build at
the tree's commit is a full build unless ccache has this source already (CCACHE_BASEDIR lets a
build of Debian's tree at its own path serve this one).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kcidb_io
import pytest
from support.mkthread import Change, git, header, mbox, revision
from support.rfc import EXPECT_FIXED, EXPECT_REGRESSED

from rig.core.cache import Cache
from rig.flows import config, vet
from rig.kernel import sources
from rig.results import compare
from rig.results import schema as results
from rig.results.compare import Change as CellChange

UMEM = "drivers/infiniband/core/umem.c"
COMMENT = Change(
    "IB/umem: Say why ib_umem_get() checks the range first",
    "Overflowing ranges must be refused before anything is pinned.",
    ((UMEM, "\t * region causes an integer overflow, return error.\n",
      ("\t * region causes an integer overflow, return error before anything\n"
       "\t * is pinned.\n")),))
UMEM_RFC = Change(                               # patches/umem-rfc, as a thread's v2
    "IB/umem: Don't force write access when pinning read-only MRs",
    "A read-only MR asks GUP for write access with FOLL_FORCE: ask for the access the MR\n"
    "grants the device and no more.",
    ((UMEM, "\tunsigned int gup_flags = FOLL_WRITE;\n", "\tunsigned int gup_flags = 0;\n"),
     (UMEM, "\tif (!umem->writable)\n\t\tgup_flags |= FOLL_FORCE;\n",
      ("\t/*\n"
       "\t * Ask for the access the MR grants the device and no more: write\n"
       "\t * access only for a writable MR, and never FOLL_FORCE, so the device\n"
       "\t * cannot get access to memory that the process itself lacks.\n"
       "\t */\n"
       "\tif (umem->writable)\n"
       "\t\tgup_flags |= FOLL_WRITE;\n"))))
HEAD_EDIT = ("\tunsigned int gup_flags = FOLL_WRITE;\n",
             "\tunsigned int gup_flags = FOLL_WRITE;\t/* FOLL_FORCE added below */\n")


class Tree:
    def __init__(self, path: Path, base: str, head: str, thread: Path, cover: str):
        self.path, self.base, self.head, self.thread, self.cover = path, base, head, thread, cover

    def state(self) -> str:
        """What 'untouched' means: no file changed, added (ignored ones too) or removed, and
        the same refs and worktrees."""
        return "\n".join(git(self.path, *args) for args in (
            ["status", "--porcelain", "--ignored", "--untracked-files=all"],
            ["for-each-ref"], ["rev-parse", "HEAD"], ["worktree", "list", "--porcelain"],
            ["stash", "list"]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    cfg = config.load()
    source = sources.prepare(cfg.variant(cfg.base).source, Cache())
    path = tmp_path_factory.mktemp("maintainer") / "linux"
    subprocess.run(["cp", "-a", "--reflink=auto", str(source.tree), str(path)], check=True)
    git(path, "init", "-q", "-b", "master")
    # -f: Debian's linux-source .gitignore ignores everything at the top (its packaging repo)
    git(path, "add", "-A", "-f")
    git(path, "commit", "-q", "-m", f"Debian linux-source-6.1 {source.version}")
    base = git(path, "rev-parse", "HEAD").strip()
    text = (path / UMEM).read_text()
    (path / UMEM).write_text(text.replace(*HEAD_EDIT))
    git(path, "commit", "-q", "-a", "-m", "IB/umem: Say where FOLL_FORCE comes from",
        date="2026-11-20T10:00:00Z")
    head = git(path, "rev-parse", "HEAD").strip()
    v1 = revision(path, base, [COMMENT], 1, "2026-11-02T10:00:00Z",
                  "IB/umem: Say why the range is checked first\n\nA comment.\n")
    v2 = revision(path, base, [UMEM_RFC], 2, "2026-11-09T10:00:00Z",
                  "IB/umem: Pin read-only MRs with the access userspace has\n\nThe 2012 RFC.\n",
                  header(v1[0], "Message-Id"))
    thread = path.parent / "umem-rfc-thread.mbox"
    thread.write_text(mbox(v1 + v2))
    return Tree(path, base, head, thread, header(v2[0], "Message-Id").strip("<>"))


def rig(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rig.cli", *argv], capture_output=True,
                          text=True, timeout=4500, check=False)
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-4000:])
    return proc


def base_builds(commit: str) -> list[Path]:
    """The kernel cache entries of the base variant at COMMIT (named linux-<commit>)."""
    found = []
    for meta in (Cache().root / "kernel").glob("*/meta.json"):
        data = json.loads(meta.read_text())         # older rigs wrote other fields
        if (data.get("variant"), data.get("environment", {}).get("source_version")) == \
                (f"linux-{commit[:12]}", commit):
            found.append(meta.parent)
    return found


@pytest.fixture(scope="module")
def vetted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("vet")
    before, cached = tree.state(), base_builds(tree.base)
    proc = rig("vet", str(tree.thread), "--tree", str(tree.path), "--out", str(out))
    assert (out / "results.json").exists(), proc.stderr[-3000:]
    return proc, out, results.load(out / "results.json"), before, cached


def test_the_newest_revision_is_vetted_at_the_base_commit(tree, vetted):
    _, out, res, _, cached = vetted
    text = (out / vet.SUMMARY).read_text()
    assert text.startswith(
        "Vetted: IB/umem: Pin read-only MRs with the access userspace has (v2; the thread also "
        "has v1)\n"
        "  From: umem-rig maintainers <maintainers@umem-rig.invalid>\n"
        f"  Message-Id: <{tree.cover}>\n"
        f"  Base: linux {tree.base[:12]}, from the series' base-commit: line "
        f"(HEAD is {tree.head[:12]})\n"), text
    assert [v.environment.source_version for v in res.variants] == [tree.base, tree.base]
    cand = res.variants[1]
    assert [p.subject for p in cand.environment.patches] == [UMEM_RFC.subject]
    assert cand.environment.message_id == tree.cover
    assert cand.environment.base_commit_from.startswith("the series' base-commit: line")
    assert (out / vet.SERIES).read_text().count("\nSubject: [PATCH v2 1/1] ") == 1
    assert text.endswith(f"Reproduce with umem-rig: rig vet {tree.thread} --tree {tree.path} "
                         "--revision 2\n")
    # the base is built once, or found: a cache kept from runs of older rigs (another
    # configuration, another driver) may hold other builds at this commit
    assert len(set(base_builds(tree.base)) - set(cached)) <= 1


def test_the_summary_names_the_fixed_and_regressed_cells(vetted):
    proc, out, res, *_ = vetted
    for v in res.variants:
        assert v.outcome.value == "ok", (v.name, v.errors)
    cand = next(v for v in compare.compare(res).variants if not v.variant.is_base)
    assert {c.id for c in cand.cells if c.change is CellChange.FIXED} == EXPECT_FIXED
    assert {c.id for c in cand.cells if c.change is CellChange.REGRESSED} == EXPECT_REGRESSED
    assert proc.returncode == 1, "a regression must give exit status 1"
    text = (out / vet.SUMMARY).read_text()
    fixed, regressed = text.index("\nFixed:\n"), text.index("\nRegressed:\n")
    assert "  registration [drv-shared-ro ro-mr]: failed -> passed\n" in text[fixed:]
    assert "  coherent_after_cpu_write [zero-page ro-mr]: passed -> failed\n" in \
        text[regressed:fixed]


def test_the_tree_is_untouched(tree, vetted):
    _, _, _, before, _ = vetted
    assert tree.state() == before
    assert git(tree.path, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""


def test_the_kcidb_export_of_the_run_validates(tree, vetted, tmp_path):
    _, out, res, *_ = vetted
    proc = rig("export", "--kcidb", str(out / "results.json"), "-o", str(tmp_path / "k.json"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "k.json").read_text())
    kcidb_io.schema.LATEST.validate(doc)
    cand = res.variants[1].name
    checkout = next(c for c in doc["checkouts"] if c["misc"]["variant"] == cand)
    assert checkout["git_commit_hash"] == tree.base and checkout["message_id"] == tree.cover
    files = sorted((out / results.PATCHES / cand).iterdir())
    sums = "".join(hashlib.sha256(f.read_bytes()).hexdigest() + "\n" for f in files)
    assert checkout["patchset_hash"] == hashlib.sha256(sums.encode()).hexdigest()
    assert [f["name"] for f in checkout["patchset_files"]] == [f.name for f in files]
    numstat = subprocess.run(["git", "apply", "--numstat", "-"], input=files[0].read_bytes(),
                             capture_output=True, check=True).stdout.decode()
    assert numstat.split("\t")[2].strip() == UMEM              # a file git apply takes
    paths = {t["path"] for t in doc["tests"]}
    assert {"umem.boot", "umem.registration.drv-shared-ro.ro-mr"} <= paths


def test_the_next_series_on_the_same_base_reuses_its_build(tree, vetted, tmp_path):
    """v1 (a comment) on the same commit: the base kernel is not built again."""
    built = base_builds(tree.base)
    stamp = [(p / "meta.json").stat().st_mtime_ns for p in built]
    proc = rig("vet", str(tree.thread), "--tree", str(tree.path), "--revision", "1",
               "--select", "registration", "--out", str(tmp_path / "v1"))
    text = (tmp_path / "v1" / vet.SUMMARY).read_text()
    assert proc.returncode == 0, text
    assert "Result: no regression: 0 fixed, 0 regressed" in text
    assert "Vetted: IB/umem: Say why the range is checked first (v1; the thread also has v2)" \
        in text
    assert base_builds(tree.base) == built
    assert [(p / "meta.json").stat().st_mtime_ns for p in built] == stamp
    shutil.rmtree(tmp_path / "v1")
