"""What an inbox holds: public-inbox's HTTP interface, as lore.kernel.org serves it.

A search (`?q=...&x=m`, POSTed, as public-inbox wants for an mbox of results) finds the
messages touching the files followed; each hit's whole thread (`MSGID/t.mbox.gz`) is fetched,
so the cover letter, every patch and the replies are read together.  Fetched here with urllib
rather than b4's fetchers: those have no bound on what they unpack and read b4's global
configuration, and everything from a list is untrusted.  A response is refused past a size
(after gunzip too), and a message is matched by the files its diff names, not by what the
server's search thought.
"""

from __future__ import annotations

import email.parser
import fnmatch
import re
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from email.message import EmailMessage

import b4

from rig.core import datafiles
from rig.core.status import RigError

TIMEOUT = 60                     # seconds for one HTTP request
_DIFF_FILE = re.compile(rb"^(?:\+\+\+ b/|--- a/|diff --git a/)(\S+)", re.MULTILINE)
_MBOXRD_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


class FeedError(RigError):
    """An inbox that cannot be read, or that sent something unusable: names the URL."""


@dataclass(frozen=True)
class Patterns:
    files: tuple[str, ...]           # fnmatch patterns of the paths followed
    terms: tuple[str, ...]           # the search's terms, OR-ed

    @classmethod
    def load(cls) -> Patterns:
        data = datafiles.toml("watch-patterns.toml")
        return cls(tuple(data["files"]["patterns"]), tuple(data["query"]["terms"]))

    def query(self, since: str) -> str:
        return f"({' OR '.join(self.terms)}) AND rt:{since}.."

    def touches(self, msg: EmailMessage) -> bool:
        """Whether MSG's diff names a file followed."""
        return any(fnmatch.fnmatchcase(name, p) for name in diff_files(msg)
                   for p in self.files)


def diff_files(msg: EmailMessage) -> set[str]:
    part = msg.get_body(("plain",)) if msg.is_multipart() else msg
    payload = part.get_payload(decode=True) if part is not None else None
    if not isinstance(payload, bytes):
        return set()
    return {m.decode("utf-8", "replace") for m in _DIFF_FILE.findall(payload)}


def unpack(data: bytes, source: str, limit: int) -> bytes:
    """DATA gunzipped, refused past LIMIT bytes (a gzip bomb is a few KiB on the wire)."""
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise FeedError(f"{source}: not a readable gzip stream: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise FeedError(f"{source}: more than {limit} bytes once unpacked: refused")
    return out


def messages(mbox: bytes, source: str) -> list[EmailMessage]:
    """The messages of an mboxrd text as public-inbox writes one."""
    if mbox and not mbox.startswith(b"From "):
        raise FeedError(f"{source}: not an mbox (it starts {mbox[:20]!r})")
    parser = email.parser.BytesParser(policy=b4.emlpolicy)
    found = []
    for chunk in re.split(rb"(?m)^From [^\n]*\n", mbox)[1:]:
        try:
            found.append(parser.parsebytes(_MBOXRD_FROM.sub(rb"\1", chunk)))
        except (ValueError, TypeError, IndexError) as exc:
            raise FeedError(f"{source}: a message that cannot be parsed: {exc}") from None
    return found


def _get(url: str, limit: int, post: bool = False) -> bytes:
    request = urllib.request.Request(url, data=b"" if post else None,
                                     headers={"User-Agent": "umem-rig watch"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return b""                     # public-inbox: no match, or no such thread
        raise FeedError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FeedError(f"{url}: cannot fetch it: {exc}") from None
    if len(data) > limit:
        raise FeedError(f"{url}: more than {limit} bytes: refused")
    return unpack(data, url, limit)


def _inbox(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FeedError(f"{url}: an inbox is an http(s) URL of a public-inbox")
    return url.rstrip("/") + "/"


def search(inbox: str, patterns: Patterns, since: str, limit: int) -> list[EmailMessage]:
    """The messages of INBOX received since SINCE (YYYYMMDD) whose diff touches PATTERNS."""
    url = _inbox(inbox) + "?" + urllib.parse.urlencode({"q": patterns.query(since), "x": "m"})
    return [m for m in messages(_get(url, limit, post=True), url) if patterns.touches(m)]


def thread(inbox: str, message_id: str, limit: int) -> list[EmailMessage]:
    """The whole thread of MESSAGE_ID in INBOX."""
    msgid = message_id.strip("<>")
    if msgid in ("", ".", ".."):
        raise FeedError(f"{inbox}: a message names {message_id!r} as its Message-Id: refused")
    quoted = urllib.parse.quote(msgid, safe="@!$&'()*+,;=:~-._")
    url = f"{_inbox(inbox)}{quoted}/t.mbox.gz"
    return messages(_get(url, limit), url)
