"""`rig boot VARIANT`: one guest for a person, with the suite and the driver already in it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import Builder, BuildSettings
from .cache import Cache
from .config import RunConfig
from .guest import BootError, GuestCrashed, boot
from .image import ensure_image
from .model import BootRequest, Variant
from .progress import Progress
from .suites.umem import GUEST_DIR, GUEST_KO, stage_tests


def _interactive(guest, image) -> int:
    """A real terminal through the system's ssh client, still pinned to the image's host key."""
    with tempfile.TemporaryDirectory(prefix="rig-ssh-") as tmp:
        known = Path(tmp) / "known_hosts"
        known.write_text(f"[127.0.0.1]:{guest.ssh_port} {image.host_key_pub}\n")
        return subprocess.call([
            "ssh", "-p", str(guest.ssh_port), "-i", str(image.client_key),
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "root@127.0.0.1"])


def boot_variant(cfg: RunConfig, cache: Cache, variant: Variant, cmd: list[str]) -> int:
    progress = Progress()
    try:
        with progress.stage(variant.name, "build"):
            built = Builder(BuildSettings(cfg.project / "guest_tests" / "driver",
                                          cfg.base_config, cfg.jobs), cache,
                            progress).build(variant)
        if built.error:
            progress.log(f"{variant.name}: {built.outcome.value}: {built.error.message}\n"
                         f"{built.error.excerpt}")
            return 2
        image = ensure_image(cache, log=progress.log)
        req = BootRequest(built.bzimage, image, cfg.accel, boot_timeout=cfg.timeouts.boot,
                          silence_timeout=cfg.timeouts.silence)
        with tempfile.TemporaryDirectory(prefix="rig-boot-") as tmp, \
                boot(req, say=progress.log) as guest:
            progress.log(f"{variant.name}: ready over SSH in {guest.boot_seconds:.1f} s "
                         f"({guest.accel}, guest uptime {guest.ready_uptime:.1f} s); "
                         f"console log {guest.console_log}")
            guest.put(stage_tests(cfg.project / "guest_tests", Path(tmp)), GUEST_DIR)
            if built.module.exists():
                guest.put(built.module, GUEST_KO)
            progress.close()
            if not cmd:
                if shutil.which("ssh") is None:
                    print("rig: no ssh client for an interactive shell; give a command "
                          "after --", file=sys.stderr)
                    return 2
                return _interactive(guest, image)
            res = guest.run(shlex.join(cmd) if len(cmd) > 1 else cmd[0], timeout=3600)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.status
    except (BootError, GuestCrashed) as exc:
        print(f"rig: {variant.name}: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
