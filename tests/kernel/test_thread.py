"""Threads reduced to one revision of a series with b4 (offline), on real format-patch threads."""

import mailbox
import os
import shutil
import subprocess
from pathlib import Path

import b4
import pytest
from support.paths import FIXTURES

from rig.kernel import thread
from rig.kernel.thread import ThreadError

THREADS = FIXTURES / "thread"
THREE = THREADS / "three-revisions.mbox"
BASE = "d45f8f09ea42eb0b5cde6044b2a8c2615af1ed98"    # the scratch repository's base commit
UMEM = "drivers/infiniband/core/umem.c"


def message_ids(path: Path, subject_part: str) -> list[str]:
    return [str(m["Message-Id"]).strip("<>") for m in mailbox.mbox(path)
            if str(m["Subject"]).startswith(subject_part)]


def body(msg) -> str:
    return msg.get_payload(decode=True).decode()


def test_the_newest_revision_in_order_without_cover_and_replies():
    s = thread.reduce(THREE)
    assert (s.revision, s.revisions) == (3, (1, 2, 3))
    assert [str(p["Subject"]) for p in s.patches] == [
        "[PATCH v3 1/3] IB/umem: Choose the GUP flags in umem_gup_flags()",
        "[PATCH v3 2/3] IB/umem: Don't force write access for read-only MRs",
        "[PATCH v3 3/3] IB/umem: Note what a read-only pin of untouched memory pins"]
    assert s.subject == "IB/umem: Pin read-only MRs with the access userspace has"
    assert s.author == "umem-rig maintainers <maintainers@umem-rig.invalid>"
    assert [s.message_id] == message_ids(THREE, "[PATCH v3 0/3]")
    assert s.base_commit == BASE
    assert all("diff --git" in body(p) for p in s.patches)


def test_trailers_are_kept_and_reviewers_trailers_added():
    patches = thread.reduce(THREE).patches
    first, second = body(patches[0]), body(patches[1])
    assert "Signed-off-by: umem-rig maintainers <maintainers@umem-rig.invalid>" in first
    # given to v2's identical patch, carried over by b4 (same patch-id)
    assert "Reviewed-by: Jane Reviewer <jane@example.org>" in first
    assert "Tested-by: Tom Tester <tom@example.org>" in second
    assert "Reviewed-by" not in second                       # the v2 review was words only


def test_the_mbox_is_what_b4_am_writes():
    assert thread.reduce(THREE).mbox() == (THREADS / "three-revisions.b4-am.mbx").read_bytes()


def test_an_older_revision_on_request():
    s = thread.reduce(THREE, revision=2)
    assert s.revision == 2 and len(s.patches) == 2
    assert "Reviewed-by: Jane Reviewer" in body(s.patches[0])
    assert s.base_commit == BASE
    with pytest.raises(ThreadError, match=r"it holds no v4 of the series \(it holds v1, v2, v3\)"):
        thread.reduce(THREE, revision=4)


def test_a_missing_patch_is_named():
    with pytest.raises(ThreadError) as err:
        thread.reduce(THREADS / "missing-patch.mbox")
    assert str(err.value) == (f"{THREADS / 'missing-patch.mbox'}: v3 of the series is "
                              "incomplete: patch 2/3 is missing; v2 is complete: vet it with "
                              "--revision 2")


def test_a_partial_series_is_the_patches_that_came():
    s = thread.reduce(THREADS / "missing-patch.mbox", partial=True)
    assert (s.revision, s.missing) == (3, ("2/3",))
    assert [p["Subject"] for p in s.patches] == [
        "[PATCH v3 1/3] IB/umem: Choose the GUP flags in umem_gup_flags()",
        "[PATCH v3 3/3] IB/umem: Note what a read-only pin of untouched memory pins"]
    assert thread.reduce(THREE, partial=True).missing == ()


def test_without_a_cover_letter_the_first_patch_names_the_base():
    s = thread.reduce(THREADS / "no-cover.mbox")
    assert (s.revision, len(s.patches), s.base_commit) == (1, 1, BASE)
    assert s.subject == "IB/umem: Say why ib_umem_get() checks the range first"
    assert [s.message_id] == message_ids(THREADS / "no-cover.mbox", "[PATCH v1]")


@pytest.mark.parametrize("name, problem", [
    ("patches/plain.diff", "no mail messages in it (not an mbox?)"),
    ("patches/discussion.mbox", "no patches in it: 1 message, none with a diff"),
    ("patches/not-a-patch.txt", "no mail messages in it (not an mbox?)"),
    ("vet/cover-only.mbox", "no patches in it: 1 message, none with a diff"),
    ("patches/no-such.mbox", "no such file"),
])
def test_what_is_not_a_series_is_refused_with_the_reason(name, problem):
    with pytest.raises(ThreadError) as err:
        thread.reduce(FIXTURES / name)
    assert str(err.value) == f"{FIXTURES / name}: {problem}"


def test_reading_an_mbox_never_uses_the_network_nor_prints(monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("b4 went to the network")
    monkeypatch.setattr(b4, "get_lore_node", no_network)
    monkeypatch.setattr(b4, "get_requests_session", no_network)
    thread.reduce(THREE)
    with pytest.raises(ThreadError):
        thread.reduce(THREADS / "missing-patch.mbox")
    assert capsys.readouterr() == ("", "")
    assert b4.can_network is True                 # b4's own setting is left as it was


def test_the_series_applies_with_git_am_at_its_base(tmp_path):
    """The fixture's base is Debian 6.1's umem.c, as tests/fixtures/patches/tree holds it."""
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_DATE="2026-11-02T10:00:00Z", GIT_COMMITTER_DATE="2026-11-02T10:00:00Z")

    def git(*args, **kw):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=umem-rig maintainers",
                               "-c", "user.email=maintainers@umem-rig.invalid", *args],
                              env=env, check=True, capture_output=True, **kw).stdout
    (tmp_path / UMEM).parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "patches" / "tree" / UMEM, tmp_path / UMEM)
    git("init", "-q")
    git("add", UMEM)
    git("commit", "-q", "-m", "linux-source-6.1 umem.c")
    assert git("rev-parse", "HEAD").decode().strip() == BASE
    git("am", input=thread.reduce(THREE).mbox())
    log = git("log", "--format=%s%n%b", f"{BASE}..").decode()
    assert log.count("Signed-off-by:") == 3 and "Tested-by: Tom Tester" in log
    assert "return umem->writable ? FOLL_WRITE : 0;" in (tmp_path / UMEM).read_text()


def test_patches_without_message_ids_are_a_series_too():
    """`git format-patch --stdout` without --thread: no Message-Id, which b4 needs to thread."""
    s = thread.reduce(THREADS / "unthreaded.mbox")
    assert (s.revision, len(s.patches), s.message_id, s.base_commit) == (1, 2, "", BASE)
    assert [str(p["Subject"]) for p in s.patches] == [
        "[PATCH v1 1/2] IB/umem: Say why ib_umem_get() checks the range first",
        "[PATCH v1 2/2] IB/umem: Describe the access argument of ib_umem_get()"]
    assert b"Message-Id" not in s.mbox()                  # the stand-ins stay inside
