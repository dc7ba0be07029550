"""End to end: `rig watch --once` on a real public-inbox-httpd on loopback, whose inbox holds
the RFC (patches/umem-rfc, its exact bytes: the kernel the other e2e tests build) as a thread
with a Reviewed-by reply, and a patch touching no file followed; and `--send` to a real SMTP
server on loopback that hands what it gets to public-inbox-mda, as the list's server would,
so the answer shows in the thread; and the daemon, polling until it is stopped."""

import contextlib
import email
import email.policy
import gzip
import mailbox
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from aiosmtpd.controller import Controller
from support import inbox
from support.rfc import EXPECT_FIXED, EXPECT_REGRESSED

from rig import cli
from rig.core import hostdeps
from rig.flows.watch.state import State
from rig.guest.qemu import free_port


@contextlib.contextmanager
def _served(tmp_path, messages):
    """A real inbox holding MESSAGES, served on loopback: the inbox and its URL."""
    try:
        hostdeps.ensure(["inbox"])
    except hostdeps.MissingPackages as exc:
        pytest.skip(str(exc))
    box = inbox.Inbox(tmp_path / "pi")
    for message in messages:
        box.deliver(message)
    with box.serve() as url:
        yield box, url


def _conf(tmp_path, url, more=""):
    """A configuration following URL, with the state under TMP_PATH and MORE [watch] lines."""
    conf = tmp_path / "watch.toml"
    conf.write_text(f'[watch]\nstate = "{tmp_path / "state"}"\n{more}'
                    f'from = "umem-rig <bot@umem-rig.invalid>"\ninboxes = ["{url}"]\n')
    return conf


@pytest.fixture
def public_inbox(tmp_path):
    cover, patch = inbox.rfc_thread()
    with _served(tmp_path, (cover, patch, inbox.review(patch), inbox.UNRELATED)) as served:
        yield served


def _cell(test_id: str) -> str:
    """How the summary writes a cell: test_registration[drv-shared-ro-ro-mr] is
    registration [drv-shared-ro ro-mr]."""
    check, where = test_id.removeprefix("test_").rstrip("]").split("[")
    region, access = where.rsplit("-", 2)[0], "-".join(where.rsplit("-", 2)[1:])
    return f"{check} [{region} {access}]"


def test_watch_answers_the_rfc_once(public_inbox, tmp_path, capsys):
    _, url = public_inbox
    state = tmp_path / "state"
    conf = _conf(tmp_path, url)
    status = cli.main(["watch", "--once", "--config", str(conf)])
    said = capsys.readouterr().out
    assert status == 0 and "1 vetted, 1 answered" in said, said
    answers = list(mailbox.Maildir(state / "outbox"))
    assert len(answers) == 1
    raw = answers[0].as_bytes()
    # kept beside the test's output for a reader (the CI log names the folder)
    shutil.copy(state / "outbox" / "new" / next((state / "outbox" / "new").iterdir()),
                tmp_path / "answer.eml")
    answer = email.message_from_bytes(raw, policy=email.policy.default)
    assert answer["Subject"] == ("Re: [PATCH RFC 0/1] IB/umem: Don't force write access when "
                                 "pinning read-only MRs")
    assert answer["In-Reply-To"] == answer["References"] == inbox.COVER_ID
    assert answer["To"] == "umem-rig maintainers <maintainers@umem-rig.invalid>"
    assert answer["Cc"] == f"{inbox.LIST}, {inbox.CC}"
    body = answer.get_content()
    assert max(map(len, body.splitlines())) <= 80
    assert f"{len(EXPECT_FIXED)} fixed, {len(EXPECT_REGRESSED)} regressed" in body, body
    for test_id in EXPECT_FIXED | EXPECT_REGRESSED:
        assert _cell(test_id) in body, (test_id, body)
    assert str(state) not in body              # no path of the bot's machine in a reply
    # a second poll sees the thread again and neither vets nor answers it
    assert cli.main(["watch", "--once", "--config", str(conf)]) == 0
    assert "0 arrived, 0 vetted, 0 answered" in capsys.readouterr().out
    assert len(mailbox.Maildir(state / "outbox")) == 1
    assert cli.main(["watch", "--status", "--config", str(conf)]) == 0
    assert "Result: REGRESSION" in capsys.readouterr().out
    assert cli.main(["history", "--series", "--config", str(conf)]) == 0
    said = capsys.readouterr().out
    assert "vetted series (1):" in said and "v1 " in said, said
    assert (f"REGRESSION: {len(EXPECT_FIXED)} fixed, {len(EXPECT_REGRESSED)} regressed"
            in said and "answer in the outbox" in said and "report: " in said), said


def test_the_patch_that_came_of_a_partial_series_is_vetted_alone(tmp_path, capsys):
    """At the deadline (0 here) the patch the list got, 2/3, is vetted alone: it applies
    without 1/3 and 3/3, and the answer names them and gives the verdict of 2/3 alone."""
    state = tmp_path / "state"
    with _served(tmp_path, inbox.partial_thread()) as (_, url):
        conf = _conf(tmp_path, url, "deadline = 0\n")
        status = cli.main(["watch", "--once", "--config", str(conf)])
    said = capsys.readouterr().out
    assert status == 0 and "1 vetted, 1 answered" in said, said
    [answer] = mailbox.Maildir(state / "outbox")
    assert answer["In-Reply-To"] == inbox.PARTIAL_COVER_ID
    body = answer.get_payload()
    flat = " ".join(body.split())
    assert ("Partial: patch 1/3, 3/3 of the series were not there, and are not vetted: the "
            "verdict below is on the patches above alone") in flat, body
    assert f"{len(EXPECT_FIXED)} fixed, {len(EXPECT_REGRESSED)} regressed" in body, body
    assert "Series (1 patch):" in body and "[PATCH 2/3]" in body
    assert "--partial" in body                 # the command that reproduces it
    assert max(map(len, body.splitlines())) <= 80


class _ToTheList:
    """An SMTP server's delivery to the list: each message into the inbox."""

    def __init__(self, box: inbox.Inbox):
        self.box, self.got = box, []

    async def handle_DATA(self, server, session, envelope):
        self.got.append(envelope)
        self.box.deliver(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


def test_an_answer_sent_shows_in_the_thread_once(public_inbox, tmp_path, capsys):
    box, url = public_inbox
    port = free_port()
    mta = _ToTheList(box)
    server = Controller(mta, hostname="127.0.0.1", port=port)
    conf = _conf(tmp_path, url)
    conf.write_text(conf.read_text() + f'[watch.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
                    'starttls = false\n')
    server.start()
    try:
        assert cli.main(["watch", "--once", "--send", "--config", str(conf)]) == 0
        assert cli.main(["watch", "--once", "--send", "--config", str(conf)]) == 0
    finally:
        server.stop()
    assert len(mta.got) == 1, capsys.readouterr().out      # nothing is sent twice
    sent = email.message_from_bytes(mta.got[0].content, policy=email.policy.default)
    thread = mailbox.mbox(tmp_path / "thread.mbox")
    with urllib.request.urlopen(f"{url}{inbox.COVER_ID.strip('<>')}/t.mbox.gz") as got:
        (tmp_path / "thread.mbox").write_bytes(gzip.decompress(got.read()))
    ids = [m["Message-Id"] for m in thread]
    assert sent["Message-Id"] in ids and inbox.COVER_ID in ids, ids
    [back] = [m for m in thread if m["Message-Id"] == sent["Message-Id"]]
    assert back["In-Reply-To"] == inbox.COVER_ID


def _until(what, seconds=60):
    end = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < end, f"not within {seconds} s: {what.__doc__}"
        time.sleep(0.2)


def test_the_daemon_answers_a_series_sent_while_it_runs_once_and_stops_on_sigterm(tmp_path):
    """`rig watch` without --once, polling every 10 s ([watch] interval's least): a series
    delivered after its first poll is answered (a hostile one: refused by name, so no kernel is built), a later poll
    answers nothing more, and SIGTERM (a service manager's stop) ends it as Ctrl-C does."""
    state = tmp_path / "state"
    with _served(tmp_path, [inbox.UNRELATED]) as (box, url):
        conf = _conf(tmp_path, url, "interval = 10\nlookback_days = 90\n")
        daemon = subprocess.Popen(
            [sys.executable, "-c", "import sys; from rig import cli; sys.exit(cli.main())",
             "watch", "--config", str(conf), "--cache", str(tmp_path / "cache")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            def polls():
                """the daemon polled"""
                assert daemon.poll() is None, daemon.communicate()[0]
                if not (state / "state.sqlite").exists():
                    return 0.0
                st = State(state / "state.sqlite")
                try:
                    return st.last_poll(url) or 0.0
                finally:
                    st.close()
            _until(polls)
            box.deliver(inbox.HOSTILE)
            outbox = state / "outbox"

            def answered():
                """the hostile series was answered"""
                return outbox.exists() and len(mailbox.Maildir(outbox)) > 0
            _until(answered)
            after = time.time()
            _until(lambda: polls() > after)                        # one more poll
            daemon.send_signal(signal.SIGTERM)
            said, _ = daemon.communicate(timeout=60)
        finally:
            daemon.kill()
    assert daemon.returncode == 130 and "rig: interrupted" in said, said
    [answer] = mailbox.Maildir(outbox)
    assert answer["In-Reply-To"] == "<tidy.1@umem-rig.invalid>"
    assert "could not vet this series" in answer.get_payload()
