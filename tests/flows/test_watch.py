"""`rig watch`: series as a list follower sees them, its state across a kill, its answers'
headers, and refusals of hostile input.  The mails are real: patches/umem-rfc's patch in a
thread (support/inbox.py) and the git format-patch threads of tests/fixtures/thread/."""

import dataclasses
import email
import email.policy
import gzip
import mailbox

import pytest
from aiosmtpd.controller import Controller
from support import inbox, mkthread, trees
from support.paths import FIXTURES
from support.sandboxes import needs_sandbox

from rig import cli
from rig.core.cache import Cache
from rig.core.progress import Progress
from rig.flows import config, watch
from rig.flows.vet import VetRequest
from rig.flows.watch import feed, reply
from rig.flows.watch.state import ATTEMPTS, State
from rig.guest.qemu import free_port
from rig.kernel import thread
from rig.kernel.tree import TreeError

THREADS = FIXTURES / "thread"
SENDER = "umem-rig <bot@umem-rig.invalid>"
# the check that a series applies runs git apply in the sandbox


def _parse(texts):
    return [email.message_from_string(t, policy=email.policy.default) for t in texts]


def _fixture(name):
    return feed.messages((THREADS / name).read_bytes(), name)


def _rfc():
    cover, patch = inbox.rfc_thread()
    return _parse([cover, patch, inbox.review(patch)])


def test_a_thread_is_its_newest_revision_and_replies_are_no_series():
    found = thread.arrival("rfc", _rfc())
    assert (found.revision, found.expected, found.missing) == (1, 1, ())
    assert f"<{found.message_id}>" == inbox.COVER_ID
    assert thread.arrival("review", _rfc()[2:]) is None
    assert thread.arrival("three", _fixture("three-revisions.mbox")).revision == 3


def test_a_partial_series_names_what_is_missing():
    found = thread.arrival("missing", _fixture("missing-patch.mbox"))
    assert (found.revision, found.missing) == (3, ("2/3",))


def test_the_files_followed_are_data():
    patterns = feed.Patterns.load()
    assert patterns.touches(_rfc()[1])
    assert not patterns.touches(_parse([inbox.UNRELATED])[0])
    assert not patterns.touches(_rfc()[0])                   # a cover letter has no diff
    assert "dfn:mm/gup.c" in patterns.query("20261101")


def _arrive(st, key, revision, missing=""):
    return st.arrive(key, "me subject", revision, "http://i/", f"{key}@x", "subject",
                     "me", missing, b"")


def test_a_newer_revision_supersedes_a_queued_one(tmp_path):
    st = State(tmp_path / "s.sqlite")
    assert _arrive(st, "v1", 1) == "queued"
    assert _arrive(st, "v2", 2, missing="2/2") == "waiting"
    assert st.get("v1").state == "superseded"
    assert _arrive(st, "v2", 2) == "queued"                  # the missing patch came
    assert _arrive(st, "v0", 0) == "superseded"              # an old one, late
    assert _arrive(st, "v2", 2) == "queued"                  # seen again: unchanged


def test_a_muted_thread_is_neither_vetted_nor_answered(tmp_path):
    st = State(tmp_path / "s.sqlite")
    _arrive(st, "v1", 1)
    assert st.mute("v1@x") == 1 and st.get("v1").state == "muted"
    # a later revision sent in reply to the muted cover letter: its thread names it
    assert st.arrive("v2", "me subject", 2, "http://i/", "v2@x", "subject", "me", "", b"",
                     st.muted({"v1@x", "v2@x"})) == "muted"
    assert not st.muted({"other@x"})


def test_answers_past_the_hours_limit_wait_for_a_later_poll(tmp_path):
    data = config.read(None)
    data["watch"]["per_hour"] = 1
    settings = watch.Settings.of(data, Cache(tmp_path / "cache"))
    st = _vetted(settings, _rfc())
    st.arrive("k2", "other", 1, "http://i/", "k2@x", "s", "me", "", watch.mboxrd(_rfc()))
    st.set("k2", state="vetted", summary="Result: no regression\n", status=0)
    st.close()
    poll = watch.once(settings, configure=None, cache=Cache(tmp_path / "cache"),
                      progress=Progress(live=False))
    assert len(poll.answered) == 1 and len(poll.held) == 1
    assert len(mailbox.Maildir(settings.outbox)) == 1


def test_a_vet_killed_midway_is_queued_again_and_given_up_after_attempts(tmp_path):
    st = State(tmp_path / "s.sqlite")
    _arrive(st, "a", 1)
    _arrive(st, "b", 1)
    st.set("a", state="vetting", attempts=1)
    st.set("b", state="vetting", attempts=ATTEMPTS)
    st.close()                                               # as a kill -9 leaves it
    again = State(tmp_path / "s.sqlite")
    assert sorted(r.key for r in again.recover()) == ["a", "b"]
    assert again.get("a").state == "queued" and again.get("b").state == "failed"


def test_the_answer_is_threaded_under_the_cover_letter_and_addressed_as_b4_reply():
    cover = _rfc()[0]
    body = "Result: REGRESSION: 6 fixed, 6 regressed\n" + "word " * 40 + "\n"
    msg = reply.compose(cover, body, SENDER, "<umem-rig-k@umem-rig.invalid>")
    assert msg["Subject"] == ("Re: [PATCH RFC 0/1] IB/umem: Don't force write access when "
                              "pinning read-only MRs")
    assert msg["In-Reply-To"] == inbox.COVER_ID
    assert msg["References"] == inbox.COVER_ID
    assert msg["To"] == "umem-rig maintainers <maintainers@umem-rig.invalid>"
    assert msg["Cc"] == f"{inbox.LIST}, {inbox.CC}"
    text = msg.get_content()
    assert text.startswith("Result: REGRESSION") and max(map(len, text.splitlines())) <= 80
    # a reply to the patch keeps the thread's References
    assert reply.compose(_rfc()[1], body, SENDER, "<x@y>")["References"] == \
        f"{inbox.COVER_ID} <umem-rfc.1.1@umem-rig.invalid>"


def test_a_header_from_the_list_cannot_add_headers():
    head = _rfc()[0]
    head.replace_header("Subject", "=?utf-8?q?x=0D=0ABcc:_evil@umem-rig.invalid?=")
    msg = reply.compose(head, "body\n", SENDER, "<x@y>")
    assert msg["Bcc"] is None and "\n" not in msg["Subject"]
    assert "evil" not in str(msg["Cc"]) + str(msg["To"])


def test_a_mail_without_an_author_is_refused_by_name():
    head = _rfc()[0]
    head.replace_header("From", "nobody")
    with pytest.raises(reply.ReplyError, match="cover.umem-rfc.1@umem-rig.invalid"):
        reply.compose(head, "x\n", SENDER, "<x@y>")


def test_hostile_responses_are_refused_naming_them():
    bomb = gzip.compress(b"From x\n" + b"\0" * (4 << 20))
    with pytest.raises(feed.FeedError, match="http://i/t.mbox.gz: more than 65536 bytes"):
        feed.unpack(bomb, "http://i/t.mbox.gz", 65536)
    with pytest.raises(feed.FeedError, match="src: not a readable gzip"):
        feed.unpack(b"\x1f\x8bnot gzip at all", "src", 65536)
    with pytest.raises(feed.FeedError, match="src: not an mbox"):
        feed.messages(b"<html>rate limited</html>", "src")
    with pytest.raises(feed.FeedError, match="'<..>' as its Message-Id"):
        feed.thread("http://127.0.0.1:9/i/", "<..>", 65536)
    with pytest.raises(feed.FeedError, match="an inbox is an http"):
        feed.search("file:///etc/", feed.Patterns.load(), "20261101", 65536)


def _settings(tmp_path):
    return watch.Settings.of(config.read(None), Cache(tmp_path / "cache"))


def _vetted(settings, messages):
    """A state holding one series vetted and not yet answered."""
    st = State(settings.database)
    _arrive(st, "k", 1)
    st.set("k", state="vetted", summary="Result: no regression\n", status=0,
           thread=watch.mboxrd(messages))
    return st


def test_an_answer_written_before_a_kill_is_not_written_again(tmp_path):
    settings = _settings(tmp_path)
    messages = _rfc()
    st = _vetted(settings, messages)
    # the kill came after the outbox got the answer, before the state recorded it
    answer = reply.compose(messages[0], "x\n", settings.sender,
                           reply.reply_id("k", settings.sender))
    reply.Outbox(settings.outbox).add(answer)
    st.close()
    poll = watch.once(settings, configure=None, cache=Cache(tmp_path / "cache"),
                      progress=Progress(live=False))
    assert poll.answered == ["k"] and not poll.errors
    assert len(mailbox.Maildir(settings.outbox)) == 1
    again = watch.once(settings, configure=None, cache=Cache(tmp_path / "cache"),
                       progress=Progress(live=False))
    assert again.answered == [] and len(mailbox.Maildir(settings.outbox)) == 1
    assert "answered" in watch.status(settings)


@needs_sandbox
def test_at_the_deadline_the_patches_that_came_are_tried_and_no_verdict_is_claimed(tmp_path):
    """v3 with 2/3 missing, on a tree at its base-commit: 3/3 needs 2/3, so the answer names
    what is missing and why there is no verdict, and nothing is built."""
    data = config.read(None)
    data["watch"]["deadline"] = 0
    settings = watch.Settings.of(data, Cache(tmp_path / "cache"))
    st = State(settings.database)
    st.arrive("p", "t", 3, "http://i/", "x@y", "IB/umem: read-only MRs", "me", "2/3",
              watch.mboxrd(_fixture("missing-patch.mbox")))
    st.close()
    cfg = config.load(None, out=tmp_path / "out")
    cfg.vet_tree = trees.umem_tree(tmp_path / "linux")
    poll = watch.once(settings, lambda out: dataclasses.replace(cfg, out=out),
                      Cache(tmp_path / "cache"), Progress(live=False))
    assert poll.vetted == poll.answered == ["p"]
    [answer] = mailbox.Maildir(settings.outbox)
    body = " ".join(answer.get_payload().split())
    assert ("could not vet this series: <x@y>: the patches of the series there are do not "
            "apply without patch 2/3 on the configured tree at d45f8f09ea42") in body, body
    assert "Result:" not in body and str(tmp_path) not in body
    assert not (tmp_path / "cache" / "kernel").exists()


def test_a_hostile_series_is_answered_with_the_refusal_and_nothing_is_built(tmp_path):
    settings = _settings(tmp_path)
    [mail] = _parse([inbox.HOSTILE])
    assert feed.Patterns.load().touches(mail)
    st = State(settings.database)
    st.arrive("h", "t", 1, "http://i/", "tidy.1@umem-rig.invalid", "IB/umem: Tidy up",
              "Mallory", "", watch.mboxrd([mail]))
    st.close()
    poll = watch.once(settings, lambda out: config.load(None, out=out),
                      Cache(tmp_path / "cache"), Progress(live=False))
    assert poll.vetted == poll.answered == ["h"]
    [answer] = mailbox.Maildir(settings.outbox)
    body = " ".join(answer.get_payload().split())
    assert "could not vet this series: <tidy.1@umem-rig.invalid>: refusing a patch that " \
           "reaches outside the tree with '..': b/../../../etc/rig-escape" in body, body
    assert str(tmp_path) not in body
    assert answer["To"] == "Mallory <mallory@umem-rig.invalid>"
    assert not (settings.state / "vets" / "h").exists()


class _Keep:
    def __init__(self):
        self.got = []

    async def handle_DATA(self, server, session, envelope):   # aiosmtpd calls it so
        self.got.append(envelope)
        return "250 OK"


def test_send_delivers_each_answer_once_to_a_real_smtp_server(tmp_path):
    port = free_port()
    keep = _Keep()
    server = Controller(keep, hostname="127.0.0.1", port=port)
    server.start()
    try:
        data = config.read(None)
        data["watch"]["smtp"].update(host="127.0.0.1", port=port, starttls=False)
        settings = watch.Settings.of(data, Cache(tmp_path / "cache"))
        _vetted(settings, _rfc()).close()
        for _ in range(2):
            watch.once(settings, configure=None, cache=Cache(tmp_path / "cache"),
                       progress=Progress(live=False), send=True)
    finally:
        server.stop()
    [sent] = keep.got
    assert " sent " in watch.status(settings)
    # a server that refuses: the answer stays in the outbox, said, and not sent again later
    _vetted(settings, _rfc()).set("k", state="vetted")
    poll = watch.once(settings, configure=None, cache=Cache(tmp_path / "cache"),
                      progress=Progress(live=False), send=True)
    assert f"127.0.0.1:{port}" in poll.errors[0] and "is in the outbox" in poll.errors[0]
    assert keep.got == [sent]
    assert sorted(sent.rcpt_tos) == sorted(["maintainers@umem-rig.invalid", inbox.LIST,
                                            "mm@umem-rig.invalid"])
    assert b"In-Reply-To: " + inbox.COVER_ID.encode() in sent.content


def test_watch_needs_an_inbox(capsys, tmp_path):
    assert cli.main(["watch", "--once", "--cache", str(tmp_path)]) == 2
    assert "no inbox to follow" in capsys.readouterr().err
    assert cli.main(["watch", "--status", "--cache", str(tmp_path)]) == 0
    assert "nothing watched yet" in capsys.readouterr().out
    assert cli.main(["watch", "--mute", "a b", "--cache", str(tmp_path)]) == 2
    assert "not a Message-Id" in capsys.readouterr().err
    assert cli.main(["watch", "--mute", "<x@y>", "--cache", str(tmp_path)]) == 0
    assert "<x@y> is muted (0 series" in capsys.readouterr().out


def test_the_vet_is_on_the_tree_only_at_a_base_commit_the_tree_has(tmp_path):
    """[vet] tree: the series' base-commit when the tree has it, else the base variant, and
    the answer says why (the fixture threads name the small tree's first commit)."""
    cache = Cache(tmp_path / "cache")
    named = VetRequest(series=FIXTURES / "thread" / "three-revisions.mbox")
    unnamed = VetRequest(series=FIXTURES / "vet" / "umem-rfc.mbox")
    cfg = config.load(out=tmp_path / "out")
    assert watch.where(cfg, named, cache) == (named, "")          # no tree configured

    cfg.vet_tree = trees.umem_tree(tmp_path / "linux")
    req, why = watch.where(cfg, named, cache)
    assert req.tree == cfg.vet_tree and why == ""
    req, why = watch.where(cfg, unnamed, cache)
    assert req.tree is None and "names no base-commit" in why

    other = tmp_path / "other"
    (other / "README").parent.mkdir()
    (other / "README").write_text("another tree\n")
    mkthread.git(other, "init", "-q")
    mkthread.git(other, "add", "README")
    mkthread.git(other, "commit", "-q", "-m", "another tree")
    cfg.vet_tree = other
    req, why = watch.where(cfg, named, cache)
    assert req.tree is None
    assert f"names base-commit {trees.BASE[:12]}, which the configured tree does not have" in why
    assert str(other) not in why                                  # the answer is public

    cfg.vet_tree = tmp_path / "nowhere"
    with pytest.raises(TreeError, match="nowhere: not a directory"):
        watch.where(cfg, named, cache)


def test_history_lists_each_vetted_series_with_the_verdict_of_each_revision(tmp_path, capsys):
    """Synthetic rows (what the vets said is cut to the lines history reads): two revisions
    of one series, a partial one refused, and one whose vet killed the rig each time."""
    settings = _settings(tmp_path)
    st = State(settings.database)
    for key, rev, subject in (("a1", 1, "IB/umem: a"), ("a2", 2, "IB/umem: a"),
                              ("b", 1, "mm/gup: b"), ("c", 1, "mm/gup: c"), ("q", 1, "q")):
        st.arrive(key, subject, rev, "http://i/", f"{key}@x", subject, "Me <me@x>", "", b"")
    st.set("a1", state="sent", answered=1796200000.0, status=1, summary=(
        "Vetted: IB/umem: a (v1)\n  Base: debian-6-1 6.1.192-3, the rig's base variant\n\n"
        "Result: REGRESSION: 6 fixed, 6 regressed, 64 changed, of 572 tests\n"))
    st.set("a2", state="answered", answered=1796300000.0, status=0, summary=(
        "Vetted: IB/umem: a (v2)\n  Base: debian-6-1 6.1.192-3, the rig's base variant\n\n"
        "Partial: patch 1/3 of the series was not there, and is not vetted: the\n"
        "  verdict below is on the patches above alone, applied without it.\n\n"
        "Result: no regression: 0 fixed, 0 regressed, 0 changed, of 572 tests\n"))
    st.set("b", state="answered", answered=1796250000.0, status=2, summary=(
        "umem-rig could not vet this series:\n  <b@x>: the patches of the series there are "
        "do not apply without patch 2/3 on the configured tree at d45f8f09ea42\n"))
    st.set("c", state="failed", attempts=3)
    st.close()
    assert cli.main(["history", "--series", "--cache", str(tmp_path / "cache")]) == 0
    said = capsys.readouterr().out
    assert said.index("IB/umem: a (Me <me@x>) <a2@x>") < said.index("mm/gup: b")  # newest first
    a = said[said.index("IB/umem: a"):said.index("mm/gup: b")]
    assert a.index("v2 2026-") < a.index("v1 2026-")
    assert "no regression: 0 fixed" in a and "REGRESSION: 6 fixed, 6 regressed" in a
    assert "Partial: patch 1/3 of the series was not there" in a and "answer sent" in a
    assert "base: debian-6-1 6.1.192-3, the rig's base variant" in a
    assert "no verdict: umem-rig could not vet this series:" in said
    assert "the vet ended the rig each time it was tried" in said
    assert " q " not in said                                  # queued: not vetted yet
    assert cli.main(["history", "--cache", str(tmp_path / "cache")]) == 2


def test_the_vets_go_to_the_lab_named_and_a_lab_not_configured_is_refused_at_once(
        tmp_path, capsys, monkeypatch):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[labs.rack]\nkind = "lava"\nurl = "http://127.0.0.1:9/"\n'
                    f'token_file = "{tmp_path}/t"\ndevice_type = "qemu"\n'
                    f'artefacts = "{tmp_path}/a"\nartefacts_url = "http://127.0.0.1:9/a/"\n'
                    '[watch]\ninboxes = ["http://127.0.0.1:9/i/"]\n')
    argv = ["watch", "--once", "--config", str(conf), "--cache", str(tmp_path / "cache")]
    assert cli.main([*argv, "--lab", "nope"]) == 2
    assert "no lab named 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "watch").exists()         # refused before any poll
    seen = []
    monkeypatch.setattr(watch, "once", lambda settings, configure, *rest: seen.append(
        configure(tmp_path / "vet").lab) or watch.Poll())
    assert cli.main([*argv, "--lab", "rack"]) == 0
    assert [lab.name for lab in seen] == ["rack"]
