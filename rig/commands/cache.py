"""`rig cache [--clear [KIND]]`: show the cache, or clear it, kind by kind."""

from __future__ import annotations

from pathlib import Path

from rig.commands import cache_of
from rig.core.cache import KINDS
from rig.core.status import ExitStatus

OPTIONS = ()


def add_parser(sub):
    p = sub.add_parser("cache", help="show the cache, or clear it")
    p.add_argument("--cache", type=Path, help="cache directory")
    p.add_argument("--clear", nargs="?", const=True, metavar="KIND",
                   help=f"remove everything, or one kind ({', '.join(sorted(KINDS))})")
    return p


def run(args) -> ExitStatus:
    cache = cache_of(args)
    if args.clear is not None:
        removed = cache.clear(None if args.clear is True else args.clear)
        print("cleared " + (", ".join(str(p) for p in removed) or f"nothing in {cache.root}"))
        return ExitStatus.OK
    print(cache.root)
    for kind in sorted(KINDS):
        path = cache.root / kind
        if path.is_dir():
            entries = [e for e in path.iterdir() if not e.name.startswith(".")]
            print(f"  {kind:<8} {len(entries)} entries   {KINDS[kind]}")
    return ExitStatus.OK
