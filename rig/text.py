"""Small wording rules shared by the stages' messages and file names."""

from __future__ import annotations

import re
from collections.abc import Sequence


def few(items: Sequence[str], shown: int = 3) -> str:
    """"a, b, c and 4 more": a list in a sentence, cut short."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def one_line(text: str) -> str:
    """TEXT with its lines and runs of blanks joined: for a log line or a headline."""
    return " ".join(text.split())


def variant_name(text: str) -> str:
    """TEXT made fit to name a variant: the name becomes part of file names."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
