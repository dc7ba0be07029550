"""A series as it arrives from a list: a thread reduced with b4 to one revision, ready for git am.

An mbox saved from a thread may hold several revisions of a series (v1, v2, v3), their cover
letters and the replies.  b4, the kernel community's tool, used here as a library, sorts the
messages into revisions, picks the newest (by date, as `b4 am` does) or the one asked for, and
writes each patch as `git am` wants it: in order, without the cover letter and the replies,
with its own trailers and those reviewers sent in reply (Reviewed-by, Tested-by, ...; carried
over from an earlier revision when the patch did not change).  A revision with a patch
missing is refused, naming the patch, unless it is asked for as partial: then, as `b4 am`
does with a thread it calls incomplete, it is the patches that came, and which did not (a
maintainer Cc'd on 10/20 of a tree-wide series has that one).  Reading an mbox never uses
the network (b4's offline mode); `fetch` gets a thread from lore by Message-Id, which needs
it.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import io
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import b4

from rig.core.status import RigError

_BASE_COMMIT = re.compile(r"^base-commit: .*?([\da-f]{7,40})\s*$", re.IGNORECASE | re.MULTILINE)


class ThreadError(RigError):
    """A thread that holds no usable series; the message names the input and the problem."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass(frozen=True)
class Series:
    """One revision of a series (complete, unless read as partial: then MISSING names what
    it lacks), its patches ready for `git am`, in order."""

    source: str                      # the mbox or Message-Id it came from
    revision: int
    revisions: tuple[int, ...]       # every revision the thread holds
    subject: str                     # the cover letter's, else the first patch's, no [PATCH]
    author: str                      # "Name <address>"
    message_id: str                  # the cover letter's, else the first patch's, without <>
    base_commit: str                 # from its base-commit: line; "" when it names none
    patches: tuple[EmailMessage, ...]
    notes: tuple[str, ...] = ()      # what b4 warned about while reading the thread
    missing: tuple[str, ...] = ()    # "2/3", ...: patches of a partial series not in PATCHES

    def mbox(self) -> bytes:
        """The patches as one mbox, as `b4 am` writes it for `git am`."""
        out = io.BytesIO()
        b4.save_git_am_mbox(list(self.patches), out)
        return out.getvalue()


@contextlib.contextmanager
def _b4(network: bool) -> Iterator[list[logging.LogRecord]]:
    """b4 with or without the network, its log kept from the terminal and handed back."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append                # type: ignore[method-assign]
    logger = b4.logger
    saved = (b4.can_network, logger.propagate, logger.level)
    b4.can_network = network
    # Attestation (DKIM, patatt) says who sent a patch, not what it does: off, so that a
    # user's hardfail policy cannot end the rig from inside b4 (it calls sys.exit).
    b4.setup_config(argparse.Namespace(config={"b4.attestation-policy": "off"}))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        b4.can_network, logger.propagate, _ = saved
        logger.setLevel(saved[2])


def _base_commit(source: str, series: b4.LoreSeries) -> str:
    """The series' base-commit: line, from its cover letter or else its first patch.

    b4 0.16 reads it only from a message it took for the cover letter or patch 1 when adding
    it; a cover letter sent in reply to the previous revision's (git send-email
    --in-reply-to) it takes for a follow-up because of that very line, and never reads it.
    Messages naming two different commits are refused: at either one, some patch is built on
    a tree it was not written for, and its verdict would blame the patch for the base.
    """
    named: dict[str, list[str]] = {}
    for n, lmsg in enumerate(series.patches):
        if lmsg is not None and (m := _BASE_COMMIT.search(lmsg.body)):
            named.setdefault(m[1], []).append(
                "the cover letter" if n == 0 else f"patch {n}/{series.expected}")
    commits = sorted(named, key=len, reverse=True)       # the full id over an abbreviation
    if any(not a.startswith(b) for a in commits for b in commits if len(b) <= len(a)):
        raise ThreadError(source, "its messages name different base commits: " + "; ".join(
            f"{c} ({', '.join(who)})" for c, who in named.items())
            + ": a series written against two trees has no one base to be vetted at")
    if series.base_commit:
        return series.base_commit
    return commits[0] if commits else ""


def _missing(series: b4.LoreSeries) -> list[str]:
    return [f"{n}/{series.expected}" for n, lmsg in enumerate(series.patches[1:], 1)
            if lmsg is None]


def _pick(source: str, messages: Sequence[EmailMessage], revision: int | None,
          records: list[logging.LogRecord], partial: bool) -> Series:
    mailbox = b4.LoreMailbox()
    # b4 threads by Message-Id and refuses a message without one, but `git format-patch
    # --stdout` without --thread writes none: such a message gets a stand-in for b4 only.
    stand_ins = set()
    for msg in messages:
        if not b4.LoreMessage.get_clean_msgid(msg):
            digest = hashlib.sha256(msg.as_bytes()).hexdigest()[:20]
            msg["Message-Id"] = f"<{digest}@stand-in.umem-rig.invalid>"
            stand_ins.add(f"{digest}@stand-in.umem-rig.invalid")
        mailbox.add_message(msg)
    revisions = tuple(sorted(mailbox.series))
    if not revisions:
        n = len(messages)
        raise ThreadError(source, f"no patches in it: {n} message{'s' * (n != 1)}, none with "
                                  "a diff")
    chosen = revision if revision is not None else mailbox.get_latest_revision()
    if chosen not in mailbox.series:
        have = ", ".join(f"v{r}" for r in revisions)
        raise ThreadError(source, f"it holds no v{chosen} of the series (it holds {have})")
    series = mailbox.get_series(chosen, codereview_trailers=False)
    if series is None:
        raise ThreadError(source, f"v{chosen} of the series has no patches")
    missing = _missing(series)
    came = [lmsg for lmsg in series.patches[1:] if lmsg is not None]
    if missing and not came:
        raise ThreadError(source, f"no patch of v{chosen} of the series is in it: "
                                  f"patch {', '.join(missing)} is missing")
    if missing and not partial:
        complete = [r for r in revisions if r != chosen and not _missing(mailbox.series[r])]
        hint = (f"; v{complete[-1]} is complete: vet it with --revision {complete[-1]}"
                if complete else "; --partial vets the patches that came, without it")
        raise ThreadError(source, f"v{chosen} of the series is incomplete: patch "
                                  f"{', '.join(missing)} is missing{hint}")
    patches = tuple(series.get_am_ready(addlink=False))
    for msg in patches:
        if b4.LoreMessage.get_clean_msgid(msg) in stand_ins:
            del msg["Message-Id"]
    first = series.patches[0] or came[0]
    name, address = first.fromname or "", first.fromemail or ""
    notes = tuple(dict.fromkeys(r.getMessage().strip() for r in records
                                if r.levelno >= logging.WARNING))
    return Series(source, chosen, revisions, first.subject,
                  email.utils.formataddr((name, address)) if name else address,
                  "" if first.msgid in stand_ins else first.msgid,
                  _base_commit(source, series), patches, notes, tuple(missing))


def reduce(path: Path, revision: int | None = None, partial: bool = False) -> Series:
    """The newest revision (or REVISION) of the series in the mbox or maildir at PATH;
    PARTIAL: the patches of it that came, when some did not."""
    if not path.exists():
        raise ThreadError(str(path), "no such file")
    with _b4(network=False) as records:
        try:
            messages = b4.get_msgs_from_mailbox_or_maildir(str(path))
        except (OSError, UnicodeError) as exc:
            raise ThreadError(str(path), f"cannot read it as a mailbox: {exc}") from None
        if not messages:
            raise ThreadError(str(path), "no mail messages in it (not an mbox?)")
        return _pick(str(path), messages, revision, records, partial)


def fetch(message_id: str, revision: int | None = None,
          partial: bool = False) -> tuple[Series, bytes]:
    """The thread of MESSAGE_ID from lore (needs the network), and the thread itself as an
    mbox, to keep beside the report."""
    msgid = message_id.strip().strip("<>")
    with _b4(network=True) as records:
        messages = b4.get_pi_thread_by_msgid(msgid, nocache=True)
        if not messages:
            said = "; ".join(r.getMessage() for r in records if r.levelno >= logging.ERROR)
            raise ThreadError(f"<{msgid}>", "cannot fetch the thread from lore"
                                            + (f": {said}" if said else ""))
        thread = io.BytesIO()
        b4.save_mboxrd_mbox(messages, thread)
        return (_pick(f"<{msgid}>", messages, revision, records, partial),
                thread.getvalue())


@dataclass(frozen=True)
class Arrival:
    """The newest revision of a series as a thread shows it so far, complete or not: what a
    list follower needs to decide whether to wait, vet or answer."""

    revision: int
    expected: int                    # patches the series says it has
    missing: tuple[str, ...]         # "2/3", ... not (yet) in the thread
    subject: str                     # without [PATCH ...]
    author: str                      # "Name <address>"
    message_id: str                  # the cover letter's, else the first patch's (no <>)
    head: EmailMessage               # that message: the one an answer replies to
    revisions: tuple[int, ...]


def arrival(source: str, messages: Sequence[EmailMessage]) -> Arrival | None:
    """The newest revision of a series in MESSAGES (a thread), None when it holds no patch
    (replies, reviews, discussion).  No network."""
    with _b4(network=False):
        mailbox = b4.LoreMailbox()
        for msg in messages:
            if b4.LoreMessage.get_clean_msgid(msg):      # one without an id threads nowhere
                mailbox.add_message(msg)
        revisions = tuple(sorted(mailbox.series))
        if not revisions:
            return None
        newest = mailbox.get_latest_revision()
        series = mailbox.get_series(newest, codereview_trailers=False)
        if series is None:
            return None
        head = series.patches[0] or next((p for p in series.patches[1:] if p is not None), None)
        if head is None:
            return None
        name, address = head.fromname or "", head.fromemail or ""
        return Arrival(newest, series.expected, tuple(_missing(series)), head.subject,
                       email.utils.formataddr((name, address)) if name else address,
                       head.msgid, head.msg, revisions)
