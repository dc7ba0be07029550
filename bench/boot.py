"""Boot benchmark: the rig's SSH-ready time beside virtme-ng's boot and the first-userspace
limit, side by side in one run.

    python bench/boot.py [--kernel VMLINUX] [--boots 5] [--accel auto] [--no-vng]

The rig's boot is the real one, up to a working SSH login.  The limit is a boot of the same
kernel and image whose init is a one-line shell script (it prints a line, then exits).
virtme-ng (from PyPI: `tox -e bench` installs it) boots the same configuration plus what it
needs (bench/virtme-ng.config: 9p and virtio-fs for the host's root, its console) and runs
`true`, to its exit: its fastest way to a command in a guest.  It boots both that kernel's
bzImage (what `vng` boots from a tree) and its vmlinux (PVH, as the rig does), and its best
of the two is the figure.  Boots alternate, so all see the same machine load; medians are
printed, not asserted.

Without --kernel the default configuration's base variant is built (a cache hit once built),
and virtme-ng's kernel beside it.  Guest uptime comes from the console: the printk timestamp
of "Run ... as init process", and the uptime rig-init prints in its ready line.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runs from a checkout without installing the rig.
sys.path.insert(0, str(HERE.parent))

from rig.core.cache import Cache
from rig.core.model import GUEST_MEMORY_MB, BootRequest
from rig.core.progress import Progress
from rig.flows import config
from rig.guest import qemu
from rig.guest.image import ensure_image
from rig.guest.machine import BootError, boot, launch
from rig.kernel.build import Builder

RUN_INIT = re.compile(r"\[\s*(\d+\.\d+)\] Run \S+ as init process")
# Kernel command-line quoting: the -c script reaches /bin/sh as one argument.
TRIVIAL_INIT = ("/bin/sh", ("-c", '"echo rig-first-userspace:{nonce}"'),
                r"^rig-first-userspace:{nonce}$")
VNG_FRAGMENT = HERE / "virtme-ng.config"


def init_uptime(log: Path) -> float:
    m = RUN_INIT.search(log.read_text(errors="replace"))
    return float(m.group(1)) if m else float("nan")


def first_userspace(req: BootRequest) -> tuple[float, float, str]:
    """(wall seconds to the trivial init's line, guest uptime at its exec, accel)."""
    init, args, ready = TRIVIAL_INIT
    with launch(req, say=_quiet, init=init, init_args=args, ready=ready) as up:
        return up.ready.seconds, init_uptime(up.console_log), up.accel


def ssh_ready(req: BootRequest) -> tuple[float, float, float]:
    """(wall seconds to a working SSH login, guest uptime at the ready line, at init exec)."""
    with boot(req, say=_quiet) as guest:
        guest.run("true", timeout=30)
        return guest.boot_seconds, guest.ready_uptime, init_uptime(guest.console_log)


def virtme_ng(vng: str, kernel: Path, accel: str, memory_mb: int) -> float:
    """Wall seconds from starting `vng --run KERNEL --exec true` to its exit."""
    argv = [vng, "--run", str(kernel), "--memory", f"{memory_mb}M", "--cpus", "1",
            "--verbose", "--exec", "true", *(["--disable-kvm"] if accel == "tcg" else [])]
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    took = time.monotonic() - start
    # Where the host has no udevd, virtme-ng-init makes no /dev/virtio-ports links, runs the
    # command on the console instead and says how it exited there; vng, with no exit status
    # sent back, then exits 255.  The console's word is the command's.
    ran = done.returncode == 0 or (done.returncode == 255 and
                                   "script exited with code 0" in done.stdout + done.stderr)
    if not ran:
        raise SystemExit(f"bench: {' '.join(argv)} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return took


def _quiet(msg: str) -> None:
    print(f"  ({msg})", file=sys.stderr)


def row(name: str, values: list[float]) -> str:
    return (f"  {name:<36} {statistics.median(values):6.2f} s   "
            f"(min {min(values):.2f}, max {max(values):.2f})")


def kernels(cache: Cache, want_vng: bool) -> tuple[Path, Path | None]:
    """The base variant's boot image, and virtme-ng's build (the same with VNG_FRAGMENT): its
    folder of artefacts."""
    cfg = config.load()
    base = cfg.variant(cfg.base)
    builder = Builder(cfg.build_settings, cache, Progress(live=False))
    built = [base] + ([dataclasses.replace(base, name=f"{base.name}+virtme-ng",
                                           fragments=(*base.fragments, VNG_FRAGMENT))]
                      if want_vng else [])
    out = []
    for variant in built:
        b = builder.build(variant)
        if b.error:
            raise SystemExit(f"bench: {variant.name} does not build: {b.error.message}")
        out.append(b)
    return out[0].boot_image, out[1].artefacts if want_vng else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, help="the kernel to boot (default: the base's vmlinux)")
    ap.add_argument("--vng-build", type=Path,
                    help="a folder with virtme-ng's bzImage and vmlinux (default: built here)")
    ap.add_argument("--no-vng", action="store_true", help="leave virtme-ng out")
    ap.add_argument("--boots", type=int, default=5, help="boots of each kind (default 5)")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--cache", type=Path, default=None, help="the rig's cache (for the image)")
    args = ap.parse_args()

    cache = Cache(args.cache)
    vng = None if args.no_vng else shutil.which("vng") or \
        shutil.which("vng", path=str(Path(sys.executable).parent))
    if not args.no_vng and vng is None:
        raise SystemExit("bench: virtme-ng's vng is not installed (tox -e bench installs it; "
                         "or --no-vng)")
    kernel, vng_build = args.kernel, args.vng_build
    if kernel is None or (vng and vng_build is None):
        built, built_vng = kernels(cache, vng is not None and vng_build is None)
        kernel, vng_build = kernel or built, vng_build or built_vng
    image = ensure_image(cache)
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        def request(i: int, kind: str, accel: str) -> BootRequest:
            return BootRequest(kernel=kernel, image=image, accel=accel,
                               console_log=Path(tmp) / f"{kind}-{i}.log")

        try:
            # Resolve "auto" once, so no measured boot pays for the KVM probe.
            _, _, accel = first_userspace(request(0, "probe", args.accel))
            first: list[tuple[float, float, str]] = []
            ready: list[tuple[float, float, float]] = []
            theirs: dict[str, list[float]] = {"bzImage": [], "vmlinux": []}
            for i in range(1, args.boots + 1):
                first.append(first_userspace(request(i, "first", accel)))
                ready.append(ssh_ready(request(i, "ssh", accel)))
                for name, times in theirs.items() if vng else ():
                    times.append(virtme_ng(vng, vng_build / name, accel, GUEST_MEMORY_MB))
                print(f"boot {i}: first userspace {first[-1][0]:.2f} s wall, "
                      f"SSH ready {ready[-1][0]:.2f} s wall" + "".join(
                          f", virtme-ng {name} {times[-1]:.2f} s"
                          for name, times in theirs.items() if vng), file=sys.stderr)
        except BootError as e:
            print(f"bench: boot failed ({e.outcome.value}): {e}", file=sys.stderr)
            if e.report:
                print(e.report.excerpt, file=sys.stderr)
            return 1

    fw, fu = [f[0] for f in first], [f[1] for f in first]
    rw, ru, ri = [r[0] for r in ready], [r[1] for r in ready], [r[2] for r in ready]
    print(f"kernel {kernel}, accel {accel}, QEMU {qemu.version(qemu.Settings.load().binary)}, "
          f"{args.boots} boots of each kind, alternating (medians)")
    print("first userspace (init = a one-line script):")
    print(row("wall, QEMU start to its line", fw))
    print(row("guest uptime at init exec", fu))
    print("SSH ready (rig-init):")
    print(row("wall, QEMU start to SSH login", rw))
    print(row("guest uptime at init exec", ri))
    print(row("guest uptime at the ready line", ru))
    wall = statistics.median(rw) / statistics.median(fw)
    uptime = statistics.median(ru) / statistics.median(fu)
    print(f"ratio SSH ready / first userspace: wall {wall:.2f}x, guest uptime {uptime:.2f}x "
          "(goal: 1.5x)")
    if vng:
        print(f"virtme-ng ({vng_build}):")
        for name, times in theirs.items():
            print(row(f"wall, vng --run {name} to `true` done", times))
        best = min(statistics.median(times) for times in theirs.values())
        print(f"ratio rig SSH ready / virtme-ng's best: {statistics.median(rw) / best:.2f}x "
              "(goal: at most 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
