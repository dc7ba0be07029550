"""`rig boot VARIANT`: one guest for a person, with the suite and the driver already in it.

The suite lands in /root/guest_tests and the driver where the suite looks for it, so
`cd /root/guest_tests && python3 -m pytest` runs everything, driver tests included.  The
console log is kept under the cache (logs/boot/, the newest 20).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from rig.core.cache import Cache
from rig.core.model import BootRequest, BuildResult, ImageResult, Variant
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.flows.config import RunConfig
from rig.guest.image import ensure_image
from rig.guest.machine import BootError, Guest, GuestCrashed, boot
from rig.kernel.build import Builder
from rig.runtime.suites.umem import GUEST_DIR, GUEST_KO, stage_tests


def _interactive(guest: Guest, image: ImageResult, scratch: Path) -> int:
    """A real terminal through the system's ssh client, still pinned to the image's host key."""
    known = scratch / "known_hosts"
    known.write_text(f"[127.0.0.1]:{guest.ssh_port} {image.host_key_pub}\n")
    return subprocess.call([
        "ssh", "-p", str(guest.ssh_port), "-i", str(image.client_key),
        "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "root@127.0.0.1"])


def boot_variant(cfg: RunConfig, cache: Cache, variant: Variant, cmd: list[str]) -> int:
    """Boot VARIANT; CMD's exit status, or the interactive shell's."""
    progress = Progress()
    try:
        with progress.stage(variant.name, "build"):
            built = Builder(cfg.build_settings, cache, progress).build(variant)
        if built.error:
            progress.log(f"{variant.name}: {built.outcome.value}: {built.error.message}\n"
                         f"{built.error.excerpt}")
            return ExitStatus.NO_VERDICT
        image = ensure_image(cache, log=progress.log)
        for gone in cache.sweep():
            progress.log(f"removed {gone}, left behind by a rig that was killed")
        with cache.scratch("boot") as scratch:
            req = BootRequest(built.boot_image, image, cfg.accel, boot_timeout=cfg.timeouts.boot,
                              silence_timeout=cfg.timeouts.silence, workdir=scratch,
                              console_log=cache.rotated_log("boot", f"{variant.name}.log"))
            return _session(cfg, variant, built, req, cmd, progress, scratch)
    except (BootError, GuestCrashed) as exc:
        print(f"rig: {variant.name}: {printable(str(exc))}", file=sys.stderr)
        return ExitStatus.NO_VERDICT
    finally:
        progress.close()


def _session(cfg: RunConfig, variant: Variant, built: BuildResult, req: BootRequest,
             cmd: list[str], progress: Progress, scratch: Path) -> int:
    with boot(req, say=progress.log) as guest:
        progress.log(f"{variant.name}: ready over SSH in {guest.boot_seconds:.1f} s "
                     f"({guest.accel}, guest uptime {guest.ready_uptime:.1f} s); "
                     f"console log {guest.console_log}")
        guest.put(stage_tests(cfg.project / "guest_tests", scratch), GUEST_DIR)
        if built.module.exists():
            guest.put(built.module, GUEST_KO)
        progress.close()
        if not cmd:
            if shutil.which("ssh") is None:
                print("rig: no ssh client for an interactive shell; give a command after --",
                      file=sys.stderr)
                return ExitStatus.NO_VERDICT
            return _interactive(guest, req.image, scratch)
        res = guest.run(shlex.join(cmd) if len(cmd) > 1 else cmd[0], timeout=3600)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.status
