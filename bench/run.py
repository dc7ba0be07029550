"""Whole-run benchmark: `rig run` of the default variants, split by stage, beside its limits.

    python bench/run.py [--cold] [--variant V ...] [--suite S ...] [--baseline REV]

Warm (default): everything is in the cache, so a run is boots and guest tests plus the rig's
own work (cache lookups, uploads, parsing, the report).  The unavoidable part of a variant is
its boot to a working SSH login plus its suites' time in the guest; the rest is overhead.
Each suite's time in the guest, and its build (a cache hit when warm), is printed per variant.
The umem suite's time per variant and per cell is printed beside today's: the suite as it was
at --baseline (git revision; default the last one with the 64-test suite).  After the main run
both run again on each variant's kernel, alternately (--suite-runs times each, medians), so
that the load of a shared machine falls on both alike.
Limits measured in the same run: the first-userspace boot of the base kernel (a trivial init,
bench/boot.py) and, with --cold, the in-place incremental build (bench/build.py).
Then the same run with the variants side by side (the default, parallel = "auto"), beside the
one-at-a-time run above; with --cold, a cold side-by-side run too, beside the sum of the
one-at-a-time run's builds (each had every core).  The time to the error of a stage every
variant needs (bench/failfast.py).  Last, what one crash and one hang cost, restored and booted again,
and what a kernel that crashes (hangs) on every test of a kind costs the whole suite, once
(bench/crash.py; --crash-runs 0 leaves both out).
Figures are printed, not asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import crash
import failfast
from boot import first_userspace
from build import in_place_limit

from rig.core import untar
from rig.core.cache import Cache
from rig.core.model import BootRequest
from rig.core.progress import Progress
from rig.flows import config
from rig.flows.matrix import Runner
from rig.runtime.base import suite_timing
from rig.runtime.suites import SUITES
from rig.runtime.suites.umem import UmemSuite

# The guest suite before the file, shmem, hugetlb, THP regions and the fork, madvise and rereg
# checks: 8 regions x 2 accesses, 64 tests.
BASELINE_SUITE = "2e4f891"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true",
                    help="a fresh cache: sources, builds and image from scratch (long)")
    ap.add_argument("--variant", action="append", help="only these variants (and the base)")
    ap.add_argument("--suite", action="append", choices=list(SUITES),
                    help="these suites (default: the configuration's)")
    ap.add_argument("--baseline", default=BASELINE_SUITE,
                    help="git revision whose umem suite is today's (default %(default)s)")
    ap.add_argument("--suite-runs", type=int, default=2,
                    help="runs of each umem suite per variant for the comparison (default 2)")
    ap.add_argument("--boots", type=int, default=3, help="first-userspace boots for the limit")
    ap.add_argument("--failfast-runs", type=int, default=5,
                    help="runs of bench/failfast.py's case and its limit (default 5)")
    ap.add_argument("--crash-runs", type=int, default=2,
                    help="runs of bench/crash.py's cases (default 2; 0: none)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        cache = Cache(Path(tmp) / "cache") if args.cold else Cache()
        cfg = config.load(variants=args.variant, out=Path(tmp) / "out", suites=args.suite)
        progress = Progress(live=False)
        # one variant at a time, so that each one's wall time is its own; the side-by-side
        # run (the default, parallel = "auto") comes after, for the speed-up
        runner = Runner(dataclasses.replace(cfg, parallel=1), cache, progress)
        walls: dict[str, float] = {}
        one_variant = runner.variant

        def timed(variant):
            t0 = time.monotonic()
            try:
                return one_variant(variant)
            finally:
                walls[variant.name] = time.monotonic() - t0

        runner.every_variant = lambda pool: [timed(v) for v in cfg.variants]
        start = time.monotonic()
        out = runner.run()
        total = time.monotonic() - start
        progress.close()

        base = out.results.variant(cfg.base)
        bz = runner.builder.build(cfg.variant(cfg.base)).boot_image    # a cache hit now
        accel = base.environment.accelerator or "tcg"
        firsts = [first_userspace(BootRequest(bz, runner.image, accel,
                                              console_log=Path(tmp) / f"first-{i}.log"))[0]
                  for i in range(args.boots)]
        limit_build = cold_side = None
        if args.cold:
            limit_build = in_place_limit(runner.builder, cache, cfg.variant("umem-rfc"), 1)
            cold_side = cold_side_by_side(cfg, cache, Path(tmp), progress)
        suites = compare_suites(runner, cfg, args.baseline, args.suite_runs, Path(tmp),
                                progress)
        start = time.monotonic()
        Runner(dataclasses.replace(cfg, out=Path(tmp) / "out-side-by-side"), cache,
               progress).run()
        side_by_side = time.monotonic() - start
        crash_costs = crash.costs(cache, args.crash_runs, Path(tmp), progress) \
            if args.crash_runs else None
        wholes = crash.whole(cache, 1, Path(tmp), progress) if args.crash_runs else None

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
    # the changed tests again on each variant that has any, a boot each: guest time too
    confirm = sum(v.timings.get("confirm", 0.0) for v in out.results.variants)
    unavoidable += confirm
    print(f"  image stage {runner.image_seconds:.1f} s; the confirming round {confirm:.1f} s; "
          f"the rest outside the variants {total - sum(walls.values()) - confirm:.1f} s "
          f"(host checks, image lookup, report)")
    print(f"limit: first userspace of the base kernel, median of {args.boots}: "
          f"{statistics.median(firsts):.2f} s wall")
    if limit_build is not None:
        print(f"limit: in-place incremental build for umem-rfc: {limit_build:.1f} s")
    if cold_side is not None:
        builds = sum(t for v in out.results.variants for k, t in v.timings.items()
                     if k == "build" or k.startswith("build:"))
        print(f"cold, side by side (parallel = {cfg.parallel}), sources and image at hand: "
              f"{cold_side:.1f} s against its builds one at a time above, each with every "
              f"core, summed: {builds:.1f} s = {cold_side / builds:.2f}x (the limit: 1, less "
              f"the boots and tests that overlap builds)")
    ff = failfast.figures(args.failfast_runs)
    failfast.report(ff)
    if not args.cold:      # cold, the one-at-a-time run built what this one finds
        print(f"side by side (parallel = {cfg.parallel}, the default \"auto\" here): "
              f"{side_by_side:.1f} s against one at a time {total:.1f} s = "
              f"{side_by_side / total:.2f}x")
    print(f"unavoidable (boots to SSH + guest tests, the confirming round's too): "
          f"{unavoidable:.1f} s; "
          f"whole run {total:.1f} s = {total / unavoidable:.2f}x (goal <= 1.5 warm)")
    print_suites(out.results.variants, suites, args.baseline)
    if crash_costs:
        crash.report(crash_costs, wholes)
    return 0


def cold_side_by_side(cfg, first: Cache, tmp: Path, progress: Progress) -> float:
    """The cold run again with the variants side by side, in a fresh cache and ccache that
    hold only the first run's kernel sources and guest image (no download, no image build
    in the figure): its wall time."""
    cache = Cache(tmp / "cache-cold-side-by-side")
    for kind in ("apt", "source", "image", "keys"):
        if (first.root / kind).is_dir():
            shutil.copytree(first.root / kind, cache.root / kind, symlinks=True)
    start = time.monotonic()
    Runner(dataclasses.replace(cfg, out=tmp / "out-cold-side-by-side"), cache, progress).run()
    return time.monotonic() - start


def compare_suites(runner: Runner, cfg, rev: str, runs: int, tmp: Path,
                   progress: Progress) -> dict[str, dict[str, list]]:
    """Today's suite (guest_tests/ at REV) and the current one, run alternately on each
    variant's kernel: name -> {"today": [(timings, tests)...], "now": [...]}."""
    archive = subprocess.run(["git", "-C", str(cfg.project), "archive", rev, "guest_tests"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        untar.extract(tar, tmp / "baseline", f"git archive {rev} guest_tests")
    projects = {"today": tmp / "baseline", "now": cfg.project}
    suites: dict[str, dict[str, list]] = {}
    for variant in cfg.variants:
        if runner.builder.build(variant).error:              # a cache hit now
            continue
        suites[variant.name] = {"today": [], "now": []}
        for run in range(runs):
            for which, project in projects.items():
                _, ran = crash.stage(runner, cfg, variant, (), cfg.restore, tmp, progress,
                                     project=project, name=f"{variant.name}-{which}-{run}")
                suites[variant.name][which].append((ran.timings, ran.tests))
    return suites


def suite_figures(runs: list) -> tuple[float, float, int, int]:
    """Medians over RUNS of the tests stage (upload, pytest, download) and of the tests' own
    time; the number of tests and of cells."""
    stage = statistics.median(t.get(suite_timing(UmemSuite.name), 0.0) for t, _ in runs)
    own = statistics.median(sum(x.duration for x in tests) for _, tests in runs)
    tests = runs[0][1]
    return stage, own, len(tests), len({t.cell for t in tests})


def print_suites(variants, suites: dict, rev: str) -> None:
    runs = len(next(iter(suites.values()), {}).get("now", []))
    print(f"guest suite per variant, now beside today's (the suite at {rev}), on the same "
          f"kernel, alternately, median of {runs}")
    print(f"  {'variant':<16} {'tests':>6} {'cells':>6} {'stage':>7} {'in tests':>9} "
          f"{'per cell':>9} | {'today':>6} {'stage':>7} {'in tests':>9} {'per cell':>9} | "
          f"{'stage x':>7} {'tests x':>7}")
    for v in variants:
        if v.name not in suites or not suites[v.name]["now"]:
            print(f"  {v.name:<16} (no suite runs to compare)")
            continue
        stage, own, ntests, ncells = suite_figures(suites[v.name]["now"])
        t_stage, t_own, t_tests, t_cells = suite_figures(suites[v.name]["today"])
        print(f"  {v.name:<16} {ntests:6} {ncells:6} {stage:7.1f} {own:9.1f} "
              f"{own / ncells * 1000:7.0f}ms | {t_tests:6} {t_stage:7.1f} {t_own:9.1f} "
              f"{t_own / t_cells * 1000:7.0f}ms | {stage / t_stage:6.2f}x {own / t_own:6.2f}x")
    print("  (stage: upload, pytest and download, as the rig times it; in tests: the sum of "
          "the tests' own times; goal: stage <= 2x today's)")
    base = next((v for v in variants if v.is_base and v.name in suites), None)
    if base is None:
        return
    print(f"per cell on {base.name}: seconds in its tests, now and today (first runs)")
    now, before = defaultdict(float), defaultdict(float)
    for t in suites[base.name]["now"][0][1]:
        now[t.cell] += t.duration
    for t in suites[base.name]["today"][0][1]:
        before[t.cell] += t.duration
    for cell, seconds in sorted(now.items(), key=lambda kv: -kv[1]):
        was = f"{before[cell]:6.2f}" if cell in before else "     -"
        print(f"  {cell:<28} {seconds:6.2f} {was}")



if __name__ == "__main__":
    sys.exit(main())
