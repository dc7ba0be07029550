"""`rig history DIR`: every night's verdicts on one page."""

from __future__ import annotations

import sys
from pathlib import Path

from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.results import history

OPTIONS = ()


def add_parser(sub):
    p = sub.add_parser("history", help="render the verdict history of nightly results",
                       description="One HTML page of every night's verdicts from a directory "
                       "of results.json files (results-YYYY-MM-DD.json, or <night>/"
                       "results.json).")
    p.add_argument("directory", type=Path)
    p.add_argument("--out", type=Path, help="the page to write (default DIRECTORY/history.html)")
    p.add_argument("--last", type=int, default=0, metavar="N", help="only the last N nights")
    return p


def run(args) -> ExitStatus:
    page, out = history.write(args.directory, args.out, args.last)
    for problem in page.problems:
        print(f"rig: skipped {printable(str(problem))}", file=sys.stderr)
    nights, events = page.nights, page.events
    print(f"{len(nights)} nights, {nights[0].label} .. {nights[-1].label}; "
          f"{len(events)} change(s)")
    for e in events[:10]:
        print(f"  {e.night} {e.variant} {e.what}: {e.was.label} -> {e.now.label}")
    print(f"history: {out.resolve()}")
    return ExitStatus.OK
