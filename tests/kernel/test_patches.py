"""Reading patch sets and applying them, on real git/b4/diff output (tests/fixtures/patches)."""

from __future__ import annotations

import gzip
import hashlib
import mailbox
import shutil
import subprocess
from pathlib import Path

import pytest
from support.paths import FIXTURES, PROJECT

from rig.core.model import Patch
from rig.kernel.patches import IncompleteSeries, PatchError, apply, gaps, load, patch_files

FX = FIXTURES / "patches"
SUBJECTS = ["IB/umem: Don't force write access when pinning read-only MRs",
            "IB/umem: Document the access ib_umem_get() asks for",
            "Documentation: infiniband: Describe how MRs are pinned"]
MAINTAINERS = "umem-rig maintainers <maintainers@umem-rig.invalid>"
UMEM = "drivers/infiniband/core/umem.c"


def snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(tree).parts}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the pristine 6.1 files the fixture patches were made against."""
    return Path(shutil.copytree(FX / "tree", tmp_path / "linux"))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


# --- reading --------------------------------------------------------------------------------

def test_series_folder_in_series_order():
    patches = load(FX / "series-ok")
    assert [p.subject for p in patches] == SUBJECTS
    assert [p.index for p in patches] == [1, 2, 3]
    assert [p.prefix for p in patches] == ["[PATCH 1/3]", "[PATCH 2/3]", "[PATCH 3/3]"]
    assert [p.origin.name[:4] for p in patches] == ["0001", "0002", "0003"]
    # patch 2 was sent by the maintainers for another author: git's in-body From: line
    assert [p.author for p in patches] == [MAINTAINERS, "A. U. Thor <author@umem-rig.invalid>",
                                           MAINTAINERS]
    for p in patches:
        assert p.sha256 == hashlib.sha256(p.diff.encode()).hexdigest()
        assert p.diff.startswith("diff --git ")
        assert "\n-- \n" not in p.diff          # the format-patch signature is not diff


def test_folder_without_series_file_takes_its_patches_and_skips_the_cover_letter(tmp_path):
    folder = Path(shutil.copytree(FX / "series-ok", tmp_path / "out"))
    (folder / "series").unlink()
    assert (folder / "0000-cover-letter.patch").exists()
    assert [p.sha256 for p in load(folder)] == [p.sha256 for p in load(FX / "series-ok")]


@pytest.mark.parametrize("name", ["series.mbox", "b4-am.mbx"])
def test_mbox_gives_the_same_patches_with_message_ids(name):
    patches = load(FX / name)
    assert [p.subject for p in patches] == SUBJECTS     # the folded first subject is unfolded
    assert [p.sha256 for p in patches] == [p.sha256 for p in load(FX / "series-ok")]
    assert patches[1].author == "A. U. Thor <author@umem-rig.invalid>"
    assert all(p.origin == FX / name for p in patches)
    ids = [p.message_id for p in patches]
    assert all(i.endswith(".git.maintainers@umem-rig.invalid") and "<" not in i for i in ids)
    assert len(set(ids)) == 3


def _mbox_of(tmp_path: Path, order: list[int]) -> Path:
    """series.mbox's messages (0 is the cover letter) rewritten in ORDER."""
    src = mailbox.mbox(FX / "series.mbox", create=False)
    messages = list(src)
    src.close()
    out = mailbox.mbox(tmp_path / "t.mbox")
    for k in order:
        out.add(messages[k])
    out.flush()
    out.close()
    return tmp_path / "t.mbox"


def test_mbox_out_of_order_is_sorted_by_numbering(tmp_path):
    patches = load(_mbox_of(tmp_path, [3, 0, 1, 2]))
    assert [p.subject for p in patches] == SUBJECTS
    assert [p.index for p in patches] == [1, 2, 3]


def test_mbox_with_a_patch_missing_is_refused(tmp_path):
    with pytest.raises(PatchError, match=r"incomplete series: 2/3 missing"):
        load(_mbox_of(tmp_path, [0, 1, 3]))


def test_a_patch_saved_alone_from_a_numbered_series_is_refused_unless_partial(tmp_path):
    """Patch 2/3 saved from a mail as a .patch: without 1/3 and 3/3 it is not the series."""
    alone = _mbox_of(tmp_path, [2])
    with pytest.raises(IncompleteSeries, match=r"incomplete series: 1/3, 3/3 missing"):
        load(alone)
    [patch] = load(alone, partial=True)
    assert gaps([patch]) == ("1/3", "3/3")
    (tmp_path / "whole").mkdir()
    assert gaps(load(_mbox_of(tmp_path / "whole", [0, 1, 2, 3]))) == ()


def test_mbox_with_the_same_patch_twice_is_refused(tmp_path):
    with pytest.raises(PatchError, match=r"two patches numbered 2/3"):
        load(_mbox_of(tmp_path, [1, 2, 2, 3]))


def test_plain_diff_without_mail_headers():
    [p] = load(FX / "plain.diff")
    assert (p.subject, p.author, p.message_id, p.prefix) == ("plain.diff", "", "", "")
    assert p.sha256 == load(FX / "series-ok")[0].sha256     # the same change, the same key


def test_diff_ruN_output_is_a_patch_too(tree):
    [p] = load(FX / "diff-ruN.diff")
    assert patch_files(p) == [UMEM]
    assert apply(tree, [p]).ok
    assert "\tif (umem->writable)\n\t\tgup_flags |= FOLL_WRITE;\n" in (tree / UMEM).read_text()


def test_patch_files_names_both_sides_of_a_rename_and_new_files():
    [rename] = load(FX / "rename.patch")
    assert patch_files(rename) == ["include/rdma/ib_umem.h", "include/rdma/umem.h"]
    assert [patch_files(p) for p in load(FX / "series-ok")] == [
        [UMEM], ["include/rdma/ib_umem.h"], ["Documentation/infiniband/umem.rst"]]


def test_the_projects_own_patch_sets_load():
    rfc = load(PROJECT / "patches" / "umem-rfc")
    assert [patch_files(p) for p in rfc] == [[UMEM]]
    wia = load(PROJECT / "patches" / "umem-write-if-able")
    assert [p.prefix for p in wia] == ["[PATCH 1/2]", "[PATCH 2/2]"]
    assert [patch_files(p) for p in wia] == [["include/linux/mm.h", "mm/gup.c"], [UMEM]]


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "problem"), [
    ("empty.patch", "empty file, not a patch"),
    ("gzipped.patch", "binary data, not a patch"),
    ("not-a-patch.txt", "not a patch: it has no diff"),
    ("discussion.mbox", "no patches in it: 1 message"),
    ("series-ok/0000-cover-letter.patch", "no patches in it"),
    ("traversal.diff", "reaches outside the tree with '..': a/../../etc/ssh/sshd_config"),
    ("absolute.diff", "touches an absolute path: /tmp/"),
    ("no-such.patch", "no such file"),
    ("tree", "no series file and no *.patch files"),
])
def test_bad_input_is_refused_naming_the_file_and_the_problem(name, problem):
    with pytest.raises(PatchError) as err:
        load(FX / name)
    assert str(err.value).startswith(f"{FX / name}: ")
    assert problem in err.value.problem


def test_series_naming_a_missing_patch(tmp_path):
    folder = Path(shutil.copytree(FX / "series-ok", tmp_path / "set"))
    (folder / "0002-IB-umem-Document-the-access-ib_umem_get-asks-for.patch").unlink()
    with pytest.raises(PatchError, match=r"/series: line 4 names 0002-IB-umem-Document-the-access"
                                         r"-ib_umem_get-asks-for.patch, which is not a file"):
        load(folder)


def test_series_option_other_than_p1_is_refused(tmp_path):
    folder = Path(shutil.copytree(FX / "series-ok", tmp_path / "set"))
    series = folder / "series"
    series.write_text(series.read_text().replace(".patch -p1", ".patch -p0"))
    with pytest.raises(PatchError, match=r"line 4: option '-p0' for 0002-.*only -p1"):
        load(folder)


def test_mbox_message_without_diff_that_is_no_cover_letter(tmp_path):
    src = mailbox.mbox(FX / "series.mbox", create=False)
    first = src[1]
    src.close()
    first.set_payload("This patch lost its diff on the way.\n")
    out = mailbox.mbox(tmp_path / "t.mbox")
    out.add(first)
    out.close()
    with pytest.raises(PatchError, match="not a patch: it has no diff"):
        load(tmp_path / "t.mbox")


# --- applying -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["plain", "git-repo", "inside-another-repo"])
def test_series_applies_in_any_directory(tmp_path, layout):
    tree = tmp_path / "linux"
    shutil.copytree(FX / "tree", tree)
    repo = {"plain": None, "git-repo": tree, "inside-another-repo": tmp_path}[layout]
    if repo is not None:
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "base")
    result = apply(tree, load(FX / "series.mbox"))
    assert (result.ok, result.applied, result.message) == (True, 3, "")
    assert "\tif (umem->writable)\n\t\tgup_flags |= FOLL_WRITE;\n" in (tree / UMEM).read_text()
    assert "never\n * forces access" in (tree / "include/rdma/ib_umem.h").read_text()
    assert (tree / "Documentation/infiniband/umem.rst").is_file()
    if repo is not None:  # the working tree only: nothing staged behind the caller's back
        assert git(repo, "diff", "--cached", "--name-only") == ""


def test_patch_for_another_tree_names_patch_file_and_hunk(tree):
    before = snapshot(tree)
    [patch] = load(FX / "other-tree.patch")
    result = apply(tree, [patch])
    assert not result.ok and result.applied == 0 and result.failed == patch
    assert (result.file, result.hunk, result.line) == (UMEM, 3, 236)
    assert result.message == (f"patch 1 (IB/umem: Set FOLL_LONGTERM with the other GUP flags) "
                               f"does not apply: hunk #3 of {UMEM} (at line 236) does not match")
    assert f"error: patch failed: {UMEM}:236" in result.detail
    assert snapshot(tree) == before     # hunks 1 and 2 would apply; none was written


def test_failure_leaves_the_patches_before_it_applied(tree, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    doc = "0002-IB-umem-Document-the-access-ib_umem_get-asks-for.patch"
    shutil.copy(FX / "series-ok" / doc, folder)
    shutil.copy(FX / "other-tree.patch", folder)
    (folder / "series").write_text(f"{doc}\nother-tree.patch\n")
    pristine = snapshot(tree)
    result = apply(tree, load(folder))
    assert (result.applied, result.failed.index, result.hunk) == (1, 2, 3)
    after = snapshot(tree)
    assert after[UMEM] == pristine[UMEM]
    assert after["include/rdma/ib_umem.h"] != pristine["include/rdma/ib_umem.h"]


def test_rename_applies(tree):
    assert apply(tree, load(FX / "rename.patch")).ok
    assert not (tree / "include/rdma/ib_umem.h").exists()
    assert "#define RDMA_UMEM_H" in (tree / "include/rdma/umem.h").read_text()


def test_binary_patch_applies_without_the_mail_signature(tree):
    [p] = load(FX / "binary.patch")
    assert patch_files(p) == ["Documentation/infiniband/Makefile.gz"]
    assert p.diff.endswith("literal 0\nHcmV?d00001\n\n")
    assert apply(tree, [p]).ok
    packed = (tree / "Documentation/infiniband/Makefile.gz").read_bytes()
    assert gzip.decompress(packed) == (tree / "drivers/infiniband/core/Makefile").read_bytes()


def test_new_file_that_exists_already_names_the_file(tree):
    patches = load(FX / "series-ok")
    assert apply(tree, patches[2:]).ok
    result = apply(tree, patches[2:])
    assert (result.applied, result.file, result.hunk) == (0, "Documentation/infiniband/umem.rst",
                                                          None)
    assert result.reason == "already exists in working directory"


def test_unsafe_patch_is_refused_before_any_patch_is_applied(tree):
    text = (FX / "traversal.diff").read_text()
    bad = Patch(FX / "traversal.diff", 2, "sshd", "", "", text,
                hashlib.sha256(text.encode()).hexdigest())
    before = snapshot(tree)
    with pytest.raises(PatchError, match=r"traversal.diff: refusing .* '\.\.'"):
        apply(tree, [load(FX / "plain.diff")[0], bad])
    assert snapshot(tree) == before
    assert not (tree.parent.parent / "etc").exists()
