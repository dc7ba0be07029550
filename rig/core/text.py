"""Small wording rules shared by the stages' messages and file names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rig.core.status import RigError


def few(items: Sequence[str], shown: int = 3) -> str:
    """"a, b, c and 4 more": a list in a sentence, cut short."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def one_line(text: str) -> str:
    """TEXT with its lines and runs of blanks joined: for a log line or a headline."""
    return " ".join(text.split())


# A variant's or a suite's name becomes a file name under OUT (junit/NAME.xml, patches/NAME/):
# never a separator, never "." or ".." or a hidden file, short enough for a file system.
_NAME = re.compile(r"[A-Za-z0-9_+@-][A-Za-z0-9._+@-]{0,199}")


def variant_name(text: str) -> str:
    """TEXT made fit to name a variant: the name becomes part of file names."""
    return re.sub(r"^\.|[^A-Za-z0-9._-]", "_", text)[:200]


def check_name(name: object, what: str, error: type[RigError]) -> str:
    """NAME if it can name a variant or a suite; ERROR naming WHAT it is (and where) if not."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    raise error(f"{what} {name!r} cannot be a name: use letters, digits and . _ + @ - "
                  "(not first: .), at most 200")


# What a terminal, a mail or a page must not receive from a series, a console or a guest:
# C0 and C1 controls (ESC, CSI and OSC start escape sequences: OSC 52 writes the clipboard),
# DEL, and the bidirectional overrides that reorder or hide the rest of a line.  Newlines and
# tabs are layout; a carriage return (CRLF consoles) is dropped.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """TEXT fit to print: every control character shown escaped (ESC as \\x1b), never sent."""
    return _CONTROL.sub(lambda m: "" if m[0] == "\r" else m[0].encode(
        "unicode_escape").decode("ascii"), text)
