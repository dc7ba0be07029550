"""The `rig` command: the parser, built from shared option groups, and the one place that
turns what a command raised into an exit status.

Each subcommand lives in rig/commands/: it parses, builds a request, calls a library function
and maps the result to an ExitStatus.  Bad input (any RigError) ends in one line on stderr and
status 2; an error the rig did not expect is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from rig.commands import (
    bisect,
    boot,
    build,
    cache,
    export,
    history,
    image,
    nightly,
    report,
    run,
    vet,
    watch,
)
from rig.commands import sources as debsources
from rig.core.status import ExitStatus, RigError
from rig.core.text import printable
from rig.runtime.suites import SUITES

COMMANDS = (run, build, image, boot, report, vet, watch, bisect, nightly, history, export,
            cache, debsources)
DESCRIPTION = ("umem-rig: what ibv_reg_mr() does to a process's memory on a kernel, and what a "
               "patch changes about it.  Exit status: 0 no regression, 1 a candidate "
               "regressed, 2 some variant has no verdict or the input was refused, "
               "130 interrupted.")


def add_config_opts(p: argparse.ArgumentParser) -> None:
    """Where the settings and the cache are."""
    p.add_argument("--config", type=Path, help="TOML file merged over the embedded defaults")
    p.add_argument("--cache", type=Path, help="cache directory (default ~/.cache/umem-rig)")


def add_build_opts(p: argparse.ArgumentParser) -> None:
    """How kernels are built."""
    p.add_argument("--debug", action="store_true", default=None,
                   help="add kconfigs/debug.config (DEBUG_VM, lockdep, KASAN, debug info)")
    p.add_argument("--no-sandbox", dest="sandbox", action="store_false", default=None,
                   help="apply and build patch series outside the sandbox, where their "
                   "Makefiles and scripts can reach the host (only where none can be set up)")


def add_exec_opts(p: argparse.ArgumentParser) -> None:
    """How kernels are booted and tested, and where the results go."""
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--suite", action="append", choices=list(SUITES),
                   help="run this test suite (repeatable; default: [run] suites of the "
                   "configuration)")
    p.add_argument("--select", action="append", metavar="[SUITE:]EXPR",
                   help="run only the tests EXPR matches: for the umem suite a pytest -k "
                   "expression (e.g. 'zero-page', 'registration and not drv'); SUITE: for "
                   "another suite's tests (kselftest-mm:cow, rdma-core:test_mr.MRTest)")
    p.add_argument("--lab", metavar="NAME",
                   help="boot the variants on this lab ([labs.NAME] in the config; docs/lab.md)")


OPTION_GROUPS = {"config": add_config_opts, "build": add_build_opts, "exec": add_exec_opts}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rig", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = command.add_parser(sub)
        for group in command.OPTIONS:
            OPTION_GROUPS[group](p)
        p.set_defaults(func=command.run)
    return top


def parse(argv: list[str]) -> argparse.Namespace:
    """Everything after "--" is the guest command of `rig boot`, options and all."""
    cmd: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, cmd = argv[:at], argv[at + 1:]
    args = parser().parse_args(argv)
    args.cmd = cmd
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except RigError as exc:
        print(f"rig: {printable(str(exc))}", file=sys.stderr)
        return ExitStatus.NO_VERDICT
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except Exception:  # noqa: BLE001 - the one place a bug is reported as one
        traceback.print_exc()
        print("rig: internal error: this is a bug in umem-rig, not in your input; please "
              "report it with the traceback above", file=sys.stderr)
        return ExitStatus.NO_VERDICT


if __name__ == "__main__":
    sys.exit(main())
