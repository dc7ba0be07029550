"""`rig report`: re-render the reports from a results.json alone."""

from __future__ import annotations

from pathlib import Path

from rig.commands import print_outcome
from rig.core.status import ExitStatus
from rig.flows.matrix import write_outputs
from rig.results import schema as resultslib

OPTIONS = ()


def add_parser(sub):
    p = sub.add_parser("report", help="re-render the reports from a results.json")
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, help="where to write (default: beside results.json)")
    return p


def run(args) -> ExitStatus:
    out = write_outputs(resultslib.load(args.results), args.out or args.results.parent)
    print_outcome(out.comparison.explained_headline(), out.out, out.exit_status)
    return out.exit_status
