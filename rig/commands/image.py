"""`rig image`: build the guest image, or show the cached one."""

from __future__ import annotations

from rig.commands import cache_of
from rig.core import hostdeps
from rig.core.status import ExitStatus
from rig.flows.config import load as load_config
from rig.guest.image import ensure_image

OPTIONS = ("config",)


def add_parser(sub):
    return sub.add_parser("image", help="build the guest image, or show the cached one")


def run(args) -> ExitStatus:
    hostdeps.ensure(["image"], load_config(args.config).install_packages)
    img = ensure_image(cache_of(args))
    print(f"image {img.key[:16]}: {img.path} ({img.path.stat().st_size >> 20} MiB)")
    print(f"host key (pinned): {img.host_key_pub}")
    return ExitStatus.OK
