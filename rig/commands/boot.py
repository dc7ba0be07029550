"""`rig boot V [-- CMD]`: one guest for a person, with the suite and driver in it."""

from __future__ import annotations

from rig.commands import settings
from rig.core import hostdeps
from rig.core.status import ExitStatus, RigError
from rig.flows.shell import boot_variant

OPTIONS = ("config", "build")


def add_parser(sub):
    p = sub.add_parser("boot", help="boot one variant; a shell, or run CMD and return its "
                       "status (everything after -- is CMD)")
    p.add_argument("variant")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"])
    return p


def run(args) -> ExitStatus | int:
    cfg, cache = settings(args, variants=[args.variant])
    variant = cfg.variant(args.variant)
    if variant.name in cfg.unloadable:
        # as `rig run` reports it, rather than booting the kernel without its patches
        raise RigError(f"{variant.name}: patch-failed: {cfg.unloadable[variant.name]}")
    hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages)
    return boot_variant(cfg, cache, variant, args.cmd)
