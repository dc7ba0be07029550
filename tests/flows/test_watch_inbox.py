"""`rig watch`'s poll against a real public-inbox-httpd on loopback (support/inbox.py), up to
the queue: no kernel is vetted here (tests/e2e/test_watch_e2e.py vets one).  The series are
real `git format-patch` threads (support/mkthread.py) of a one-file tree: a v1 and its v2
sent in reply to it, a series with its patch 2/3 never sent, a review alone, and a patch
touching no file followed.  Skipped where public-inbox is not installed (the e2e test
installs it as root)."""

import shutil

import pytest
from support import inbox, mkthread

from rig.core.cache import Cache
from rig.flows import config, watch
from rig.flows.watch import feed
from rig.flows.watch.state import State

pytestmark = pytest.mark.skipif(shutil.which("public-inbox-httpd") is None,
                                reason="public-inbox is not installed")

UMEM = "drivers/infiniband/core/umem.c"


def _series(repo, base, number, cover, in_reply_to="", n=2):
    changes = [mkthread.Change(f"IB/umem: step {i} of {cover}", "Why.",
                               ((UMEM, f"/* {i} */", f"/* {i} v{number} */"),))
               for i in range(1, n + 1)]
    sent = mkthread.revision(repo, base, changes, number, f"2026-11-0{number}T10:00:00Z",
                             f"{cover}\n\nBlurb.", in_reply_to)
    return [f"To: {inbox.LIST}\n{message}" for message in sent]     # as git send-email --to


def test_a_poll_queues_the_newest_revision_and_waits_for_missing_patches(tmp_path):
    repo = tmp_path / "linux"
    repo.mkdir()
    mkthread.git(repo, "init", "-q")
    (repo / "drivers/infiniband/core").mkdir(parents=True)
    (repo / UMEM).write_text("".join(f"/* {i} */\n" for i in range(1, 4)))
    mkthread.git(repo, "add", ".")
    mkthread.git(repo, "commit", "-q", "-m", "base")
    base = mkthread.git(repo, "rev-parse", "HEAD").strip()
    v1 = _series(repo, base, 1, "IB/umem: the series")
    v2 = _series(repo, base, 2, "IB/umem: the series", mkthread.header(v1[0], "Message-Id"))
    partial = _series(repo, base, 1, "IB/umem: the partial one", n=3)
    box = inbox.Inbox(tmp_path / "pi")
    for message in [*v1, *v2, inbox.review(v2[1]), partial[0], partial[1], partial[3],
                    inbox.UNRELATED]:
        box.deliver(message)
    with box.serve() as url:
        data = config.read(None)
        # public-inbox-mda takes the received time from the Date: of a mail without a
        # Received: line, and these are dated November
        data["watch"].update(inboxes=[url], lookback_days=90)
        settings = watch.Settings.of(data, Cache(tmp_path / "cache"))
        st = State(tmp_path / "state.sqlite")
        poll = watch.Poll()
        watch._poll(st, settings, feed.Patterns.load(), poll)
        again = watch.Poll()
        watch._poll(st, settings, feed.Patterns.load(), again)
    assert not poll.errors and not again.errors and not again.arrived
    rows = {(r.subject, r.revision): r for r in st.all()}
    assert set(rows) == {("IB/umem: the series", 2), ("IB/umem: the partial one", 1)}
    v2_row = rows["IB/umem: the series", 2]
    assert v2_row.state == "queued"
    assert f"<{v2_row.message_id}>" == mkthread.header(v2[0], "Message-Id")
    waiting = rows["IB/umem: the partial one", 1]
    assert (waiting.state, waiting.missing) == ("waiting", "2/3")

