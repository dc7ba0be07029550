"""The maintainer's tree: which commit a series is vetted on and why, and every way a tree or a
base can be wrong, refused before anything is built, with the tree left as it was.

The trees are small real git repositories holding Debian 6.1's umem.c (tests/fixtures/patches/
tree), committed as tests/fixtures/thread/make_threads.py commits it, so that the threads
there name this tree's first commit as their base.
"""

import hashlib
import shutil
from pathlib import Path

import pytest
from support import mkthread
from support.paths import FIXTURES
from support.sandboxes import needs_sandbox
from support.trees import BASE, UMEM, umem_tree

from rig import cli
from rig.core import hostdeps
from rig.kernel import tree
from rig.kernel.tree import TreeError

THREADS = FIXTURES / "thread"


def git(repo: Path, *args: str, date: str = "2026-11-02T10:00:00Z") -> str:
    return mkthread.git(repo, *args, date=date).strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    return umem_tree(tmp_path / "linux")


def state(path: Path) -> dict[str, str]:
    """Every file of the tree, .git included, by content and mtime: what 'untouched' means."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            + f"@{p.stat().st_mtime_ns}" for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_series_base_commit_when_the_tree_has_it(repo):
    head = git(repo, "rev-parse", "HEAD")
    b = tree.base(tree.open_tree(repo), BASE[:12])
    assert (b.commit, b.source.kind, b.source.ref, b.source.path) == (BASE, "git", BASE, repo)
    assert b.reason == f"the series' base-commit: line (HEAD is {head[:12]})"
    assert b.name == f"linux-{BASE[:12]}"
    assert b.described == BASE[:12]                       # no tags to describe it by


def test_head_when_the_series_names_no_base(repo):
    b = tree.base(tree.open_tree(repo))
    assert b.commit == git(repo, "rev-parse", "HEAD")
    assert b.reason == "the tree's HEAD: the series names no base-commit"


def test_base_given_over_the_series(repo):
    b = tree.base(tree.open_tree(repo), BASE, "HEAD")
    assert b.commit == git(repo, "rev-parse", "HEAD")
    assert b.reason == f"given with --base HEAD; the series names base-commit {BASE[:12]}"
    with pytest.raises(TreeError, match=r"--base v9\.9: no such commit in the tree"):
        tree.base(tree.open_tree(repo), "", "v9.9")


def test_a_base_commit_the_tree_lacks_is_refused(repo):
    with pytest.raises(TreeError) as err:
        tree.base(tree.open_tree(repo), "0123456789ab" * 3 + "0123")
    assert str(err.value) == (f"{repo}: the series names base-commit {'0123456789ab' * 3}0123, "
                              "which is not in the tree: fetch the branch it was written for, "
                              "or give --base REV to vet it on another commit")


def test_a_subdirectory_means_its_tree(repo):
    assert tree.open_tree(repo / "drivers" / "infiniband") == repo


def test_what_is_not_a_clean_git_tree_is_refused(repo, tmp_path):
    with pytest.raises(TreeError, match="not a directory"):
        tree.open_tree(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(TreeError, match=r"plain: not a git repository \(fatal: not a git"):
        tree.open_tree(tmp_path / "plain")
    git(tmp_path / "plain", "init", "-q")
    with pytest.raises(TreeError, match="the repository has no commits"):
        tree.open_tree(tmp_path / "plain")
    (repo / "notes.txt").write_text("untracked files are not tested, nor in the way\n")
    assert tree.open_tree(repo) == repo
    with open(repo / UMEM, "a") as fh:
        fh.write("/* work in progress */\n")
    with pytest.raises(TreeError) as err:
        tree.open_tree(repo)
    assert str(err.value) == (f"{repo}: uncommitted changes to tracked files ({UMEM}): commit "
                              "or stash them; the rig tests commits, never the working "
                              "directory")


def test_reading_the_tree_writes_nothing(repo):
    (repo / UMEM).touch()            # stat data the index has not seen: status would refresh
    before = state(repo)
    tree.base(tree.open_tree(repo), BASE)
    assert state(repo) == before


def test_the_https_remote_without_credentials(repo):
    assert tree.base(repo).repository == ""
    git(repo, "remote", "add", "origin", "git@example.org:linux.git")
    assert tree.base(repo).repository == ""               # not https: KCIDB takes https only
    git(repo, "remote", "set-url", "origin", "https://me:secret@git.example.org/linux.git")
    assert tree.base(repo).repository == "https://git.example.org/linux.git"


# --- rig vet --tree with bad input: exit 2, one line, nothing built, the tree untouched ------

def vet(tmp_path: Path, *argv: str, capsys) -> tuple[int, str]:
    status = cli.main(["vet", *argv, "--out", str(tmp_path / "out"),
                       "--cache", str(tmp_path / "cache")])
    return status, capsys.readouterr().err


# the check that a series applies runs git apply in the sandbox


@pytest.mark.parametrize("thread, extra, says", [
    pytest.param("three-revisions.mbox", ["--base", "HEAD"],
                 ("the series does not apply on {repo} at {head}: patch 1 (IB/umem: Choose the "
                  "GUP flags in umem_gup_flags()) does not apply: hunk #2 of "
                  "drivers/infiniband/core/umem.c (at line 173) does not match"),
                 marks=needs_sandbox),
    ("missing-patch.mbox", [],
     ("v3 of the series is incomplete: patch 2/3 is missing; v2 is complete: vet it with "
     "--revision 2")),
    # 3/3 edits the comment 2/3 writes: the patches that came do not stand alone
    pytest.param("missing-patch.mbox", ["--partial"],
                 ("the patches of the series there are do not apply without patch 2/3 on "
                  "{repo} at {base}: patch 2 (IB/umem: Note what a read-only pin of untouched "
                  "memory pins) does not apply: hunk #1 of drivers/infiniband/core/umem.c (at "
                  "line 156) does not match"),
                 marks=needs_sandbox),
])
def test_vet_refuses_before_building(repo, tmp_path, capsys, thread, extra, says):
    head = git(repo, "rev-parse", "HEAD")
    before = state(repo)
    status, err = vet(tmp_path, str(THREADS / thread), "--tree", str(repo), *extra,
                      capsys=capsys)
    assert status == 2
    assert err == f"rig: {THREADS / thread}: " + says.format(repo=repo, head=head[:12],
                                                             base=BASE[:12]) + "\n"
    assert state(repo) == before and not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "kernel").exists()       # nothing was built


@needs_sandbox
def test_a_series_that_does_not_apply_is_refused_before_the_build_packages(
        repo, tmp_path, capsys, monkeypatch):
    """As on a host without the build packages: their check (as root, apt-get) comes after
    the refusal, so it never runs."""
    required = hostdeps.required
    monkeypatch.setattr(hostdeps, "required", lambda stages: required(stages) + (
        ["umem-rig-no-such-package"] if "build" in stages else []))
    status, err = vet(tmp_path, str(THREADS / "three-revisions.mbox"), "--tree", str(repo),
                      "--base", "HEAD", capsys=capsys)
    assert status == 2 and "the series does not apply on" in err, err


def test_vet_refuses_a_tree_that_lacks_the_base(tmp_path, capsys):
    other = tmp_path / "other"
    (other / UMEM).parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "patches" / "tree" / UMEM, other / UMEM)
    git(other, "init", "-q")
    git(other, "add", UMEM)
    git(other, "commit", "-q", "-m", "the same file, another commit")
    status, err = vet(tmp_path, str(THREADS / "three-revisions.mbox"), "--tree", str(other),
                      capsys=capsys)
    assert (status, err) == (2, (f"rig: {other}: the series names base-commit {BASE}, which is "
                                 "not in the tree: fetch the branch it was written for, or give "
                                 "--base REV to vet it on another commit\n"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, says", [
    (lambda repo: (repo / UMEM).write_text("dirty\n"), "uncommitted changes to tracked files"),
    (lambda repo: shutil.rmtree(repo / ".git"), "not a git repository"),
])
def test_vet_refuses_a_dirty_tree_or_no_repository(repo, tmp_path, capsys, make, says):
    make(repo)
    status, err = vet(tmp_path, str(THREADS / "three-revisions.mbox"), "--tree", str(repo),
                      capsys=capsys)
    assert status == 2 and err.startswith(f"rig: {repo}: {says}"), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_base_without_a_tree_is_refused(tmp_path, capsys):
    status, err = vet(tmp_path, str(THREADS / "three-revisions.mbox"), "--base", "HEAD",
                      capsys=capsys)
    assert (status, err) == (2, ("rig: --base names a commit of a tree: give the tree with "
                                 "--tree (or set [vet] tree)\n"))
