"""`rig vet SERIES`: a patch or series from the list, against the base or on the maintainer's
own tree at the commit the series was written for."""

from __future__ import annotations

import argparse
from pathlib import Path

from rig.commands import settings
from rig.core.progress import Progress
from rig.core.status import ExitStatus, RigError
from rig.flows.vet import VetRequest, vet

OPTIONS = ("config", "build", "exec")


def add_parser(sub):
    p = sub.add_parser("vet", help="test a patch or series from the list against the base",
                       description="Apply a patch, series folder or mbox (a thread: its newest "
                       "complete revision) on top of the base (or --onto VARIANT, or a commit "
                       "of your kernel tree with --tree), run both, and write the report and "
                       "a summary for a reply on the list.")
    p.add_argument("patches", type=Path, nargs="?", metavar="FILE.mbox|FILE.patch|DIR")
    p.add_argument("--msgid", metavar="MESSAGE-ID",
                   help="fetch the thread from lore.kernel.org with b4 instead (needs network)")
    p.add_argument("--revision", type=int, metavar="N",
                   help="vet revision N of the thread (default: the newest)")
    p.add_argument("--tree", type=Path, metavar="PATH",
                   help="your kernel git tree: vet at the commit the series' base-commit: "
                   "names, else at HEAD (default: the [vet] tree setting)")
    p.add_argument("--base", metavar="REV",
                   help="with --tree: vet on this commit, whatever the series names")
    p.add_argument("--onto", metavar="VARIANT", help="apply on top of this variant, not the base")
    p.add_argument("--partial", action="store_true",
                   help="when patches of the series never came (you were Cc'd on some): vet "
                   "the ones there are, if they apply without the others")
    return p


def command_words(args: argparse.Namespace, tree: Path | None) -> tuple[str, ...]:
    """The `rig vet` that reproduces this one, for the summary: options in one order."""
    words = ["rig", "vet", *([str(args.patches)] if args.patches else [])]
    words += ["--msgid", args.msgid] if args.msgid else []
    words += ["--revision", str(args.revision)] if args.revision is not None else []
    words += ["--tree", str(tree)] if tree else []
    words += ["--base", args.base] if args.base else []
    words += ["--onto", args.onto] if args.onto else []
    words += ["--partial"] if args.partial else []
    words += ["--debug"] if args.debug else []
    words += ["--no-sandbox"] if args.sandbox is False else []
    words += [w for s in args.select or () for w in ("--select", s)]
    return tuple(words)


def request(args: argparse.Namespace, configured_tree: Path | None) -> VetRequest:
    if (args.patches is None) == (not args.msgid):
        raise RigError("give the series to vet: a file or folder, or --msgid MESSAGE-ID")
    tree = args.tree or (None if args.onto else configured_tree)
    if tree is not None and args.onto:
        raise RigError("--onto and --tree both say what to vet on: give one")
    return VetRequest(args.patches, args.msgid or "", args.revision, tree, args.base or "",
                      command_words(args, tree), args.partial)


def run(args) -> ExitStatus:
    cfg, cache = settings(args, onto=args.onto)
    req = request(args, cfg.vet_tree)
    with Progress() as progress:
        done = vet(cfg, cache, progress, req)
    print(done.summary.read_text(), end="")
    print(f"report: {(done.run.out / 'report.html').resolve()}")
    print(f"summary: {done.summary.resolve()}")
    return done.run.exit_status
