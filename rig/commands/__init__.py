"""One module per `rig` subcommand.  Each has OPTIONS (the shared option groups it takes,
see rig/cli.py), add_parser(sub) and run(args) -> ExitStatus, and stays thin: it parses,
builds a request, calls a library function and maps the result to an exit status."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rig.core.cache import Cache
from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.flows.config import RunConfig
from rig.flows.config import load as load_config


def settings(args: argparse.Namespace, **overrides) -> tuple[RunConfig, Cache]:
    """The run configuration the options ask for, and the cache.  OVERRIDES name load()'s
    keywords; the shared options (--config, --accel, --out, --debug, --select, --lab,
    --no-sandbox, --suite) are read here."""
    for option, keyword in (("accel", "accel"), ("out", "out"), ("debug", "debug"),
                            ("select", "select"), ("lab", "lab"), ("sandbox", "sandbox"),
                            ("suite", "suites")):
        if keyword not in overrides and hasattr(args, option):
            overrides[keyword] = getattr(args, option)
    cfg = load_config(args.config, **overrides)
    return cfg, cache_of(args)


def cache_of(args: argparse.Namespace) -> Cache:
    return Cache(args.cache) if getattr(args, "cache", None) else Cache()


def command_line() -> str:
    """The command as typed, to reproduce a run."""
    return shlex.join(["rig", *sys.argv[1:]])


def print_outcome(lines: list[str], out: Path, status: ExitStatus) -> None:
    print(printable("\n".join(lines)))
    print(f"report: {(out / 'report.html').resolve()}")
    print(f"exit {int(status)}: {status.meaning}")
