"""An answer on the thread: an RFC 5322 reply to the cover letter (or the single patch), as
`b4 reply` would address it, kept in an outbox maildir and, when asked, sent over SMTP.

The reply's Message-Id is fixed by the series (its key), so that whether an answer was
already written is a question the outbox answers, even after a kill between writing it and
recording it.
"""

from __future__ import annotations

import email.policy
import email.utils
import mailbox
import os
import re
import smtplib
import ssl
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from rig.core.status import RigError

WIDTH = 80
_MSGID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReplyError(RigError):
    """A message that cannot be answered (no author to write to): names it."""


def _clean(text: str) -> str:
    """A header's text on one line, control characters gone (a header from the list could
    otherwise carry a line break and with it headers of its own)."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _addresses(*values: str) -> list[tuple[str, str]]:
    pairs = email.utils.getaddresses([_clean(v) for v in values if v])
    return [(name, addr) for name, addr in pairs
            if re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+", addr)]


def wrap(text: str) -> str:
    """TEXT within WIDTH columns: a longer line is broken at spaces (a word longer than a
    line at WIDTH), its continuation indented under it."""
    out = []
    for line in text.splitlines():
        if len(line) <= WIDTH:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False)
    return "\n".join(out) + "\n"


def compose(head: EmailMessage, body: str, sender: str, message_id: str) -> EmailMessage:
    """The reply to HEAD (the cover letter or single patch) from SENDER: Re: its subject, To
    its author, Cc whoever it was sent to, threaded under it; BODY wrapped to WIDTH."""
    where = _clean(str(head.get("Message-Id", ""))) or "without a Message-Id"
    authors = _addresses(str(head.get("From", "")))
    if not authors:
        raise ReplyError(f"message {where}: no address in its From: to answer")
    me = {a.lower() for _, a in _addresses(sender)}
    if not me:
        raise ReplyError(f"[watch] from = {sender!r}: not an address")
    author = authors[0]
    skip = me | {author[1].lower()}
    cc, seen = [], set(skip)
    for name, addr in _addresses(str(head.get("To", "")), str(head.get("Cc", ""))):
        if addr.lower() not in seen:
            seen.add(addr.lower())
            cc.append((name, addr))
    parent = _MSGID.findall(_clean(str(head.get("Message-Id", ""))))
    if not parent:
        raise ReplyError(f"a message from {author[1]}: no Message-Id to answer")
    references = _MSGID.findall(_clean(str(head.get("References", ""))))
    subject = _clean(str(head.get("Subject", "")))
    reply = EmailMessage(policy=email.policy.SMTP)
    reply["From"] = sender
    reply["To"] = email.utils.formataddr(author)
    if cc:
        reply["Cc"] = ", ".join(email.utils.formataddr(a) for a in cc)
    reply["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    reply["Date"] = email.utils.formatdate()
    reply["Message-Id"] = message_id
    reply["In-Reply-To"] = parent[0]
    reply["References"] = " ".join(dict.fromkeys([*references, parent[0]]))
    reply.set_content(wrap(body), cte="quoted-printable" if not body.isascii() else "7bit")
    return reply


def reply_id(key: str, sender: str) -> str:
    domain = _addresses(sender)[0][1].split("@", 1)[1]
    return f"<umem-rig-{key}@{domain}>"


class Outbox:
    """A maildir of answers, for a human to read and send (or for --send to have sent)."""

    def __init__(self, path: Path):
        self.path = path
        self.box = mailbox.Maildir(path, create=True)

    def has(self, message_id: str) -> bool:
        return any(msg.get("Message-Id") == message_id for msg in self.box)

    def add(self, msg: EmailMessage) -> None:
        if not self.has(str(msg["Message-Id"])):
            self.box.add(msg)


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    starttls: bool
    user: str = ""
    password_file: str = ""

    def password(self) -> str:
        """From the file named, else $RIG_SMTP_PASSWORD; never from the command line."""
        if self.password_file:
            try:
                return Path(self.password_file).expanduser().read_text().strip()
            except OSError as exc:
                raise RigError(f"[watch] smtp password_file: cannot read it: {exc}") from None
        return os.environ.get("RIG_SMTP_PASSWORD", "")

    def send(self, msg: EmailMessage) -> None:
        if not self.host:
            raise RigError("--send: no SMTP server: set [watch] smtp host in the config")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=60) as server:
                if self.starttls:
                    server.starttls(context=ssl.create_default_context())
                if self.user:
                    server.login(self.user, self.password())
                server.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise RigError(f"--send: {self.host}:{self.port}: {exc}") from None
