"""Mail threads as a series arrives from a list, made with real `git format-patch`.

Used by tests/fixtures/thread/make_threads.py (the committed mboxes) and by the end-to-end
vetting test (a thread written against a kernel tree it makes).  Each revision's commits are
made with git plumbing on top of the base (a temporary index, no checkout, so a whole kernel
tree takes seconds and its working directory is never touched), then formatted with
`git format-patch --cover-letter --base=BASE --thread=shallow -vN`, in reply to the previous
revision's cover letter as `git send-email --in-reply-to` would send it.  Replies (reviews
with trailers, discussion) are written with Python's email package, as a mailer would.
"""

from __future__ import annotations

import datetime
import email.utils
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

AUTHOR = ("umem-rig maintainers", "maintainers@umem-rig.invalid")


@dataclass(frozen=True)
class Change:
    """One commit: (path, old text, new text) replacements, each matching exactly once."""

    subject: str
    body: str
    edits: tuple[tuple[str, str, str], ...]


def git(repo: Path, *args: str, date: str = "2026-11-02T10:00:00Z", stdin: str | None = None,
        index: Path | None = None) -> str:
    env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date,
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return subprocess.run(["git", "-C", str(repo), "-c", f"user.name={AUTHOR[0]}",
                           "-c", f"user.email={AUTHOR[1]}", *args], check=True, env=env,
                          input=stdin, capture_output=True, text=True).stdout


def commit(repo: Path, parent: str, change: Change, date: str) -> str:
    """The commit PARENT + CHANGE, made without touching the working directory."""
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        git(repo, "read-tree", parent, index=index)
        texts: dict[str, str] = {}
        for path, old, new in change.edits:
            text = texts.get(path) or git(repo, "show", f"{parent}:{path}")
            assert text.count(old) == 1, (change.subject, path, old)
            texts[path] = text.replace(old, new)
        for path, text in texts.items():
            blob = git(repo, "hash-object", "-w", "--stdin", stdin=text).strip()
            git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}", index=index)
        tree = git(repo, "write-tree", index=index).strip()
    message = f"{change.subject}\n\n{change.body}\n\nSigned-off-by: {AUTHOR[0]} <{AUTHOR[1]}>\n"
    return git(repo, "commit-tree", tree, "-p", parent, "-F", "-", stdin=message,
               date=date).strip()


def _next_second() -> None:
    # format-patch names a cover letter "cover.<unix time>.git.<email>": two revisions
    # formatted in the same second would share a Message-Id
    time.sleep(1.05 - time.time() % 1)


def revision(repo: Path, base: str, changes: list[Change], number: int, date: str,
             cover: str | None, in_reply_to: str = "", threaded: bool = True) -> list[str]:
    """Revision NUMBER of a series: its cover letter and patches.

    COVER is the cover letter's subject, a blank line and its blurb; None: no cover letter,
    so git puts the base-commit: line into the first patch.  THREADED False: no
    Message-Id headers, as `git format-patch --stdout` writes without --thread.
    """
    tip = base
    for change in changes:
        tip = commit(repo, tip, change, date)
    _next_second()
    args = ["format-patch", "--stdout", "--thread=shallow" if threaded else "--no-thread",
            f"-v{number}", f"--base={base}",
            "--no-signature", *(["--cover-letter"] if cover is not None else []),
            *([f"--in-reply-to={in_reply_to}"] if in_reply_to else []), f"{base}..{tip}"]
    text = git(repo, *args, date=date)
    if cover is not None:
        subject, blurb = cover.split("\n\n", 1)
        text = text.replace("*** SUBJECT HERE ***", subject).replace("*** BLURB HERE ***",
                                                                     blurb.rstrip())
    return split(text)


def split(mbox: str) -> list[str]:
    """The messages of an mbox text, as git format-patch --stdout writes one, unchanged."""
    return [p.split("\n", 1)[1] for p in ("\n" + mbox).split("\nFrom ")[1:]]


def header(message: str, name: str) -> str:
    """One header of MESSAGE, unfolded."""
    return " ".join(str(email.message_from_string(message)[name] or "").split())


def reply(to: str, who: tuple[str, str], date: str, text: str, number: int) -> str:
    """A reply to TO quoting its first lines, with TEXT below (a trailer, or words).

    Written out by hand, as a mailer would: re-serialising git's messages with Python's
    email package would fold and encode their long Message-Id headers.
    """
    body = email.message_from_string(to).get_payload().split("\n")
    quoted = "\n".join(f"> {line}".rstrip() for line in body[:6])
    references = " ".join(filter(None, [header(to, "References"), header(to, "Message-Id")]))
    when = email.utils.format_datetime(datetime.datetime.fromisoformat(
        date))
    return (f"From: {email.utils.formataddr(who)}\n"
            f"To: {header(to, 'From')}\n"
            f"Date: {when}\n"
            f"Subject: Re: {header(to, 'Subject')}\n"
            f"Message-Id: <reply-{number}.{who[1]}>\n"
            f"In-Reply-To: {header(to, 'Message-Id')}\n"
            f"References: {references}\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n"
            f"On {header(to, 'Date')}, {header(to, 'From')} wrote:\n{quoted}\n> ...\n\n"
            f"{text}\n")


def mbox(messages: list[str]) -> str:
    """MESSAGES as one mbox, in the order given (lore's t.mbox is in thread order)."""
    out = []
    for msg in messages:
        body = "\n".join(">" + line if line.startswith("From ") else line
                         for line in msg.rstrip("\n").split("\n"))
        out.append(f"From mboxrd@z Thu Jan  1 00:00:00 1970\n{body}\n\n")
    return "".join(out)
