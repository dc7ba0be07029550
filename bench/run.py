"""Whole-run benchmark: `rig run` of the default variants, split by stage, beside its limits.

    python bench/run.py [--cold] [--variant V ...] [--suite S ...]

Warm (default): everything is in the cache, so a run is boots and guest tests plus the rig's
own work (cache lookups, uploads, parsing, the report).  The unavoidable part of a variant is
its boot to a working SSH login plus its suites' time in the guest; the rest is overhead.
Each suite's time in the guest, and its build (a cache hit when warm), is printed per variant.
Limits measured in the same run: the first-userspace boot of the base kernel (a trivial init,
bench/boot.py) and, with --cold, the in-place incremental build (bench/build.py).
Figures are printed, not asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from boot import first_userspace
from build import in_place_limit

from rig import config
from rig.cache import Cache
from rig.model import BootRequest
from rig.progress import Progress
from rig.run import Runner
from rig.suites import SUITES
from rig.testrun import suite_timing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true",
                    help="a fresh cache: sources, builds and image from scratch (long)")
    ap.add_argument("--variant", action="append", help="only these variants (and the base)")
    ap.add_argument("--suite", action="append", choices=list(SUITES),
                    help="these suites (default: the configuration's)")
    ap.add_argument("--boots", type=int, default=3, help="first-userspace boots for the limit")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        cache = Cache(Path(tmp) / "cache") if args.cold else Cache()
        cfg = config.load(variants=args.variant, out=Path(tmp) / "out", suites=args.suite)
        progress = Progress(live=False)
        runner = Runner(cfg, cache, progress)
        walls: dict[str, float] = {}
        one_variant = runner.variant

        def timed(variant):
            t0 = time.monotonic()
            try:
                return one_variant(variant)
            finally:
                walls[variant.name] = time.monotonic() - t0

        runner.variant = timed
        start = time.monotonic()
        out = runner.run()
        total = time.monotonic() - start
        progress.close()

        base = out.results.variant(cfg.base)
        bz = runner.builder.build(cfg.variant(cfg.base)).bzimage       # a cache hit now
        accel = base.environment.accelerator or "tcg"
        firsts = [first_userspace(BootRequest(bz, runner.image, accel,
                                              console_log=Path(tmp) / f"first-{i}.log"))[0]
                  for i in range(args.boots)]
        limit_build = None
        if args.cold:
            limit_build = in_place_limit(runner.builder, cache, cfg.variant("umem-rfc"), 1)

    print(f"rig run of {len(out.results.variants)} variants ({'cold' if args.cold else 'warm'}),"
          f" accel {accel}: {total:.1f} s wall")
    print(f"  {'variant':<16} {'wall':>7} {'build':>7} {'boot':>7} {'tests':>7} "
          f"{'overhead':>9}  outcome")
    unavoidable = 0.0
    for v in out.results.variants:
        t = v.timings
        tests = sum(t.get(suite_timing(s), 0.0) for s in cfg.suites)
        boots_tests = t.get("boot", 0.0) + tests
        unavoidable += boots_tests
        print(f"  {v.name:<16} {walls[v.name]:7.1f} {t.get('build', 0):7.1f} "
              f"{t.get('boot', 0):7.1f} {tests:7.1f} "
              f"{walls[v.name] - boots_tests:9.1f}  {v.outcome.value}")
    print("  (boot: QEMU start to SSH login; tests: every suite's upload, run in the guest and "
          "download; overhead: the rest of the variant's wall time)")
    print(f"  {'suite, per variant':<24} " + " ".join(f"{v.name:>14}" for v in out.results.variants))
    for suite in cfg.suites:
        for label, key in (("in the guest", suite_timing(suite)), ("build", f"build:{suite}")):
            print(f"  {suite + ' ' + label:<24} " + " ".join(
                f"{v.timings[key]:12.1f} s" if key in v.timings else f"{'-':>14}"
                for v in out.results.variants))
    print(f"  image stage {runner.image_seconds:.1f} s; outside the variants "
          f"{total - sum(walls.values()):.1f} s (host checks, image lookup, report)")
    print(f"limit: first userspace of the base kernel, median of {args.boots}: "
          f"{statistics.median(firsts):.2f} s wall")
    if limit_build is not None:
        print(f"limit: in-place incremental build for umem-rfc: {limit_build:.1f} s")
    print(f"unavoidable (boots to SSH + guest tests): {unavoidable:.1f} s; "
          f"whole run {total:.1f} s = {total / unavoidable:.2f}x (goal <= 1.5 warm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
