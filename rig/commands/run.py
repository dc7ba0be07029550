"""`rig run`: the whole matrix: build, boot, test, compare, report."""

from __future__ import annotations

from pathlib import Path

from rig.commands import print_outcome, settings
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.flows.matrix import Runner

OPTIONS = ("config", "build", "exec")


def add_parser(sub):
    p = sub.add_parser("run", help="the whole matrix: build, boot, test, compare, report")
    p.add_argument("--variant", action="append", help="run only this variant and the base "
                   "(repeatable)")
    p.add_argument("--patch", action="append", type=Path, metavar="FILE|DIR",
                   help="add a candidate variant: the base plus this patch, series or mbox")
    return p


def run(args) -> ExitStatus:
    cfg, cache = settings(args, variants=args.variant, extra_patches=args.patch)
    with Progress() as progress:
        out = Runner(cfg, cache, progress).run()
    print_outcome(out.comparison.explained_headline(), out.out, out.exit_status)
    return out.exit_status
