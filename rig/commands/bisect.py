"""`rig bisect`: the first patch of a series that changes the verdicts of the chosen tests."""

from __future__ import annotations

from pathlib import Path

from rig.commands import command_line, settings
from rig.core import hostdeps
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.flows.bisect.executor import BisectRequest, execute, plan
from rig.flows.bisect.search import Bisection
from rig.flows.matrix import Runner

OPTIONS = ("config", "build", "exec")


def add_parser(sub):
    p = sub.add_parser("bisect", help="find the first patch of a series that changes verdicts",
                       description="Bisect a patch series (or a git range) to the first patch "
                       "that changes the verdicts of the chosen tests (--select: those that "
                       "run; by default every test whose verdict differs between the base "
                       "and the whole series).")
    p.add_argument("target", nargs="?", metavar="SERIES|A..B",
                   help="a patch file, mbox or series folder on top of the base (or --onto); "
                   "with --git, a commit range A..B of that tree")
    p.add_argument("--variant", help="bisect this configured variant's patch series")
    p.add_argument("--onto", metavar="VARIANT", help="apply SERIES on top of this variant")
    p.add_argument("--git", type=Path, metavar="TREE",
                   help="bisect the commits A..B of this local kernel git tree")
    p.add_argument("--retries", type=int, default=0, metavar="R",
                   help="rerun a step up to R times until its verdicts repeat (flaky tests)")
    return p


def request(args) -> BisectRequest:
    return BisectRequest(args.target, args.variant, args.git, args.onto, retries=args.retries)


def run(args) -> ExitStatus:
    cfg, cache = settings(args, out=args.out or Path("rig-out") / "bisect", onto=args.onto)
    req = request(args)
    the_plan = plan(req, cfg)        # bad input is refused before anything runs
    bisection = Bisection(len(the_plan.series), req.tests, req.retries)
    hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages)
    with Progress() as progress:
        runner = Runner(cfg, cache, progress)
        runner.prepare_image()
        done = execute(runner, the_plan, bisection, cfg.out, command_line())
    print((done.out / "summary.txt").read_text(), end="")
    print(f"log: {(done.out / 'bisect.log').resolve()}")
    return done.exit_status
