"""Boot benchmark: SSH-ready time beside the first-userspace limit, same kernel, same run.

The limit is a boot of the same kernel and image whose init is a one-line shell script
(it prints a line, then exits); the rig's boot is the real one, up to a working SSH login.
Boots alternate, so both see the same machine load.  Figures are printed, not asserted.

    python bench/boot.py --kernel /path/to/bzImage [--boots 5] [--accel auto]

Guest uptime comes from the console: the printk timestamp of "Run ... as init process"
for the first userspace process, and the uptime rig-init prints in its ready line.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

# Runs from a checkout without installing the rig.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rig.core.cache import Cache
from rig.core.model import BootRequest
from rig.guest.image import ensure_image
from rig.guest.machine import BootError, boot, launch

RUN_INIT = re.compile(r"\[\s*(\d+\.\d+)\] Run \S+ as init process")
# Kernel command-line quoting: the -c script reaches /bin/sh as one argument.
TRIVIAL_INIT = ("/bin/sh", ("-c", '"echo rig-first-userspace:{nonce}"'),
                r"^rig-first-userspace:{nonce}$")


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


def _quiet(msg: str) -> None:
    print(f"  ({msg})", file=sys.stderr)


def row(name: str, values: list[float]) -> str:
    return (f"  {name:<36} {statistics.median(values):6.2f} s   "
            f"(min {min(values):.2f}, max {max(values):.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", type=Path, required=True, help="the bzImage to boot")
    ap.add_argument("--boots", type=int, default=5, help="boots of each kind (default 5)")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--cache", type=Path, default=None, help="the rig's cache (for the image)")
    args = ap.parse_args()

    image = ensure_image(Cache(args.cache))
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        def request(i: int, kind: str, accel: str) -> BootRequest:
            return BootRequest(kernel=args.kernel, image=image, accel=accel,
                               console_log=Path(tmp) / f"{kind}-{i}.log")

        try:
            # Resolve "auto" once, so no measured boot pays for the KVM probe.
            _, _, accel = first_userspace(request(0, "probe", args.accel))
            first: list[tuple[float, float, str]] = []
            ready: list[tuple[float, float, float]] = []
            for i in range(1, args.boots + 1):
                first.append(first_userspace(request(i, "first", accel)))
                ready.append(ssh_ready(request(i, "ssh", accel)))
                print(f"boot {i}: first userspace {first[-1][0]:.2f} s wall, "
                      f"SSH ready {ready[-1][0]:.2f} s wall", file=sys.stderr)
        except BootError as e:
            print(f"bench: boot failed ({e.outcome.value}): {e}", file=sys.stderr)
            if e.report:
                print(e.report.excerpt, file=sys.stderr)
            return 1

    fw, fu = [f[0] for f in first], [f[1] for f in first]
    rw, ru, ri = [r[0] for r in ready], [r[1] for r in ready], [r[2] for r in ready]
    print(f"kernel {args.kernel}, accel {accel}, {args.boots} boots of each kind (medians)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
