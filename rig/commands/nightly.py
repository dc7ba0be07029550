"""`rig nightly NIGHTS --incoming SERIES`: one night of the nightly job (docs/nightly.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from rig.commands import settings
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.flows.nightly import NightlyOutput, NightlyRequest, nothing_incoming, run_night

OPTIONS = ("config", "build")


def add_parser(sub):
    p = sub.add_parser("nightly", help="one night: run with the newest series, bisect only "
                       "what is new since the night before, render the history",
                       description="Runs the matrix with INCOMING as a candidate into "
                       "NIGHTS/<date>/, compares every verdict with the night before, bisects "
                       "the series of each variant with news, and writes NIGHTS/history.html. "
                       "Exit status: 0 no news (or nothing incoming), 1 a new regression, "
                       "2 a variant newly without verdict or bad input.")
    p.add_argument("nights", type=Path, metavar="NIGHTS", help="one folder per night")
    p.add_argument("--incoming", type=Path, required=True, metavar="SERIES",
                   help="the newest series: an mbox, a .patch or a series folder")
    p.add_argument("--date", default=dt.date.today().isoformat(),
                   help="tonight's folder name (default: today, YYYY-MM-DD)")
    p.add_argument("--no-bisect", dest="bisect", action="store_false",
                   help="report the news without bisecting")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    return p


def run(args) -> ExitStatus:
    why = nothing_incoming(args.incoming)
    if why:
        print(f"nothing to do tonight: {printable(why)}")
        return ExitStatus.OK
    req = NightlyRequest(args.nights, args.incoming, args.date, args.bisect)
    cfg, cache = settings(args, extra_patches=[args.incoming], out=args.nights / args.date)
    with Progress() as progress:
        done: NightlyOutput = run_night(req, cfg, cache, progress)
    print(printable(done.message))
    for variant, folder in done.bisected.items():
        print(f"bisected {variant}: {(folder / 'summary.txt').resolve()}")
    print(f"history: {(args.nights / 'history.html').resolve()}")
    return done.exit_status
