"""A series is input: a series file naming a patch twice or outside its folder, a removed line
"- " that reads as a signature, a thread on two bases (issue 19, class 8, the series parts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.mkthread import git as _git
from support.paths import FIXTURES

from rig.kernel import patches, thread
from rig.kernel.patches import PatchError
from rig.kernel.thread import ThreadError

SERIES_OK = FIXTURES / "patches" / "series-ok"
FIRST = "0001-IB-umem-Don-t-force-write-access-when-pinning-read-o.patch"


@pytest.fixture
def folder(tmp_path) -> Path:
    copy = tmp_path / "series-ok"
    shutil.copytree(SERIES_OK, copy)
    return copy


@pytest.mark.parametrize("entries, problem", [
    ([FIRST, FIRST], f"line 2 names {FIRST} again (first on line 1): each patch is"),
    ([FIRST, f"./{FIRST}"], f"line 2 names ./{FIRST} again (first on line 1)"),
    ([f"../outside/{FIRST}"], f"line 1 names ../outside/{FIRST}, which is outside"),
    (["/etc/passwd"], "line 1 names /etc/passwd, which is outside"),
    (["linked.patch"], "line 1 names linked.patch, which is a symbolic link or on one"),
    ([f"sub/{FIRST}"], f"line 1 names sub/{FIRST}, which is a symbolic link or on one"),
])
def test_a_series_file_names_each_of_its_own_plain_files_once(folder, tmp_path, entries,
                                                              problem):
    outside = tmp_path / "outside"
    shutil.copytree(SERIES_OK, outside)
    (folder / "linked.patch").symlink_to(outside / FIRST)
    (folder / "sub").symlink_to(outside)
    (folder / "series").write_text("\n".join(entries) + "\n")
    with pytest.raises(PatchError) as err:
        patches.load(folder)
    assert str(err.value).startswith(f"{folder / 'series'}: ")
    assert problem in str(err.value)



@pytest.mark.parametrize("signature", [["--no-signature"], []])
def test_a_removed_dash_line_is_not_the_signature(tmp_path, signature):
    """A real git format-patch whose hunks remove the list item "- " (the line "-- " in the
    diff), with and without format-patch's own signature after the last hunk."""
    repo = tmp_path / "repo"
    repo.mkdir()
    notes = repo / "notes.txt"
    notes.write_text("items:\n- \nmiddle\n" + "".join(f"line {n}\n" for n in range(20))
                     + "- \nend\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    notes.write_text(notes.read_text().replace("- \n", ""))
    _git(repo, "commit", "-qam", "notes: drop the empty items")
    _git(repo, "format-patch", "-q", *signature, "-o", str(tmp_path / "out"), "HEAD~1")
    (patch,) = patches.load(tmp_path / "out")
    assert patch.diff.count("\n-- \n") == 2 and patch.diff.rstrip().endswith(" end")
    tree = tmp_path / "tree"
    _git(repo, "worktree", "add", "-q", str(tree), "HEAD~1")
    assert patches.apply(tree, [patch]).ok
    assert (tree / "notes.txt").read_text() == notes.read_text()


def test_a_thread_on_two_bases_is_refused_naming_both(tmp_path):
    """The real three-revisions thread, its v3 patch 3/3 given a base-commit: line of another
    tree (a synthetic edit, made here), as a patch resent from elsewhere would carry."""
    other = "0123456789abcdef0123456789abcdef01234567"
    text = (FIXTURES / "thread" / "three-revisions.mbox").read_text()
    subject = "Subject: [PATCH v3 3/3]"
    at = text.index(subject)
    end = text.find("\nFrom ", at)
    end = len(text) if end < 0 else end
    edited = text[:end].rstrip("\n") + f"\n\nbase-commit: {other}\n" + text[end:]
    mbox = tmp_path / "two-bases.synthetic.mbox"
    mbox.write_text(edited)
    with pytest.raises(ThreadError) as err:
        thread.reduce(mbox)
    assert str(err.value) == (
        f"{mbox}: its messages name different base commits: "
        "d45f8f09ea42eb0b5cde6044b2a8c2615af1ed98 (the cover letter); "
        f"{other} (patch 3/3): a series written against two trees has no one base to be "
        "vetted at")
