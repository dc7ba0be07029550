"""`rig vet SERIES`: a patch or series from the list, against the base."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..progress import Progress
from ..status import ExitStatus
from ..vet import vet
from . import settings

OPTIONS = ("config", "build", "exec")


def add_parser(sub):
    p = sub.add_parser("vet", help="test a patch or series from the list against the base",
                       description="Apply a patch, series folder or mbox on top of the base "
                       "(or --onto VARIANT), run both, and write the report and a summary "
                       "for a reply on the list.")
    p.add_argument("patches", type=Path, metavar="FILE.mbox|FILE.patch|DIR")
    p.add_argument("--onto", metavar="VARIANT", help="apply on top of this variant, not the base")
    return p


def command_line(args) -> str:
    """The `rig vet` that reproduces this one, for the summary: options in one order."""
    words = ["rig", "vet", str(args.patches)]
    words += ["--onto", args.onto] if args.onto else []
    words += ["--debug"] if args.debug else []
    words += ["--no-sandbox"] if args.sandbox is False else []
    words += [w for s in args.select or () for w in ("--select", s)]
    return shlex.join(words)


def run(args) -> ExitStatus:
    cfg, cache = settings(args, onto=args.onto)
    with Progress() as progress:
        done = vet(cfg, cache, progress, args.patches, command_line(args))
    print(done.summary.read_text(), end="")
    print(f"report: {(done.run.out / 'report.html').resolve()}")
    print(f"summary: {done.summary.resolve()}")
    return done.run.exit_status
