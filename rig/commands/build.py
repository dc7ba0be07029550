"""`rig build`: build the variants' kernels and the test driver module."""

from __future__ import annotations

from rig.commands import settings
from rig.core import hostdeps
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.kernel.build import Builder, build_variants

OPTIONS = ("config", "build")


def add_parser(sub):
    p = sub.add_parser("build", help="build the variants' kernels and the test driver module")
    p.add_argument("--variant", action="append", help="build only this variant (repeatable)")
    return p


def run(args) -> ExitStatus:
    cfg, cache = settings(args, variants=args.variant)
    hostdeps.ensure(["source", "build"], cfg.install_packages)
    with Progress() as progress:
        built = build_variants(Builder(cfg.build_settings, cache, progress), cfg.variants,
                               cfg.unloadable)
    status = ExitStatus.OK
    for result in built:
        if result.error:
            status = ExitStatus.NO_VERDICT
            print(printable(f"{result.variant}: {result.outcome.value}: {result.error.message}"))
            if result.error.excerpt:
                print(printable(result.error.excerpt))
        else:
            how = "cache hit" if result.cache_hit else "built"
            print(f"{result.variant}: {how} in {result.seconds:.1f}s -> {result.artefacts}")
    return status
