"""`rig history DIR`: every night's verdicts on one page; `rig history --series`: every series
the list follower vetted, with its verdicts."""

from __future__ import annotations

import sys
from pathlib import Path

from rig.commands import cache_of
from rig.core.status import ExitStatus, RigError
from rig.core.text import printable
from rig.flows import config, watch
from rig.flows.watch import history as series_history
from rig.results import history

OPTIONS = ("config",)


def add_parser(sub):
    p = sub.add_parser("history", help="render the verdict history of nightly results",
                       description="One HTML page of every night's verdicts from a directory "
                       "of results.json files (results-YYYY-MM-DD.json, or <night>/"
                       "results.json); with --series, every series rig watch vetted.")
    p.add_argument("directory", type=Path, nargs="?")
    p.add_argument("--series", action="store_true",
                   help="list the series rig watch vetted ([watch] state), each revision "
                   "with its verdict, instead")
    p.add_argument("--out", type=Path, help="the page to write (default DIRECTORY/history.html)")
    p.add_argument("--last", type=int, default=0, metavar="N", help="only the last N nights")
    return p


def run(args) -> ExitStatus:
    if args.series:
        if args.directory is not None:
            raise RigError("--series reads [watch] state (from --config): give no directory")
        settings = watch.Settings.of(config.read(args.config), cache_of(args))
        print(series_history.text(settings.database), end="")
        return ExitStatus.OK
    if args.directory is None:
        raise RigError("give the directory of the nights' results (or --series)")
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
