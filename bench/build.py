"""Build benchmark: the rig's kernel builds beside the in-place limit measured in the same run.

    python bench/build.py [--variant umem-rfc] [--repeat 3] [--cold]

Prints, for the base and a patched variant of the same source:
  cold base build          (with --cold: a fresh cache and ccache, so a full build)
  patched variant build    (the rig: switch the work tree to the patches, make, module, publish;
                            keyed by a driver nonce, so it builds and leaves a 24 MB entry)
  in-place limit           (the same tree back at base, `touch` the files the patches change,
                            make: the least any tool can do for that variant), median of --repeat
  unchanged rebuild        (the variant again: must be a cache hit)
  sandbox cost             (the variant's patched build, apply + make + driver, in the
                            sandbox and bare, alternately, median of --repeat each; and what
                            starting a step in the sandbox costs, which is all it adds)
and the ratios patched / limit and sandboxed / bare.  Figures, not assertions: the machine
is shared and noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rig.core.cache import Cache
from rig.core.progress import Progress
from rig.flows import config
from rig.kernel import patches, sandbox, sources
from rig.kernel.build import Builder, relocatable
from rig.kernel.kconfig import merge
from rig.kernel.worktree import WorkTree


def in_place_limit(builder: Builder, cache: Cache, variant, repeat: int) -> float:
    """Median time of `make` after touching the variant's files in the base work tree."""
    source = sources.prepare(variant.source, cache)
    cfg = merge(source, builder.settings.base_config, variant.fragments, cache)
    touched = sorted({f for p in variant.patches for f in patches.patch_files(p)})
    times = []
    with WorkTree(source, cache).lock() as work:
        work.checkout(())
        objdir = work.objdir(cfg.key)
        make = ["make", "-s", "-C", str(work.tree), f"O={objdir}",
                f"-j{builder.settings.jobs}", *builder._make_vars(), "bzImage", "modules"]
        subprocess.run(make, check=True, capture_output=True)     # settle at base first
        for _ in range(repeat):
            for rel in touched:
                (work.tree / rel).touch()
            start = time.monotonic()
            subprocess.run(make, check=True, capture_output=True)
            times.append(time.monotonic() - start)
    return statistics.median(times)


def settle_at_base(builder: Builder, cache: Cache, base, log: Path) -> None:
    """The work tree and its build directory at the base, whatever variant built last."""
    source = sources.prepare(base.source, cache)
    cfg = merge(source, builder.settings.base_config, base.fragments, cache)
    with WorkTree(source, cache).lock() as work, builder.cores.slot() as jobs:
        work.checkout(())
        tree, objdir = work.tree, work.objdir(cfg.key)
        builder._make(builder.steps(tree, objdir, objdir, relocated=relocatable(cfg.text))["build"],
                      log, base.name, None, jobs)


def sandbox_cost(builder: Builder, cache: Cache, variant, repeat: int) -> dict[bool, float]:
    """The variant's patched build (apply, make, driver), bare (False) and in the sandbox
    (True), alternately in the same work tree: the median wall seconds of each."""
    settings = sandbox.Settings.load()
    if why := sandbox.unavailable(settings):
        raise SystemExit(f"no sandbox here: {why}")
    source = sources.prepare(variant.source, cache)
    cfg = merge(source, builder.settings.base_config, variant.fragments, cache)
    times: dict[bool, list[float]] = {False: [], True: []}
    with WorkTree(source, cache).lock() as work, builder.cores.slot() as jobs, \
            tempfile.TemporaryDirectory(prefix="driver-", dir=work.root) as tmp:
        moddir = Path(tmp) / "driver"
        shutil.copytree(builder.settings.driver, moddir)
        steps = builder.steps(work.tree, work.objdir(cfg.key), moddir,
                              relocated=relocatable(cfg.text))
        for i in range(repeat):
            for confined in (False, True) if i % 2 == 0 else (True, False):
                box = settings if confined else None
                work.checkout(())
                start = time.monotonic()
                assert work.checkout(variant.patches, box).ok
                for step in (steps["build"], steps["driver"]):
                    builder._make(step, Path(tmp) / "build.log", variant.name, box, jobs)
                times[confined].append(time.monotonic() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def start_cost(runs: int = 21) -> float:
    """Median seconds the sandbox adds to starting one step (`true` in it, less bare)."""
    settings = sandbox.Settings.load()
    timed: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for confined in (False, True):
            argv = sandbox.command(settings, ["true"]) if confined else ["true"]
            start = time.monotonic()
            subprocess.run(argv, check=True)
            timed[confined].append(time.monotonic() - start)
    return statistics.median(timed[True]) - statistics.median(timed[False])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", default="umem-rfc")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true",
                    help="use a fresh cache and ccache (a full build; takes minutes)")
    args = ap.parse_args()
    cfg = config.load()
    base, variant = cfg.variant(cfg.base), cfg.variant(args.variant)
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        cache = Cache(Path(tmp)) if args.cold else Cache()
        progress = Progress(live=False)
        builder = Builder(cfg.build_settings, cache, progress)
        rows = []
        b = builder.build(base)
        rows.append(("base build" + (" (cold)" if args.cold else ""), b.seconds,
                     "cache hit" if b.cache_hit else "built"))
        # The variant must really build: a driver with this run's nonce gives it a key of its
        # own (the cache is shared: nothing in it is removed), from the tree settled at base.
        driver = Path(tmp) / "driver"
        shutil.copytree(cfg.build_settings.driver, driver)
        with open(driver / "umem_test.c", "a") as fh:
            fh.write(f"/* bench/build.py {time.time_ns()} */\n")
        fresh = Builder(dataclasses.replace(cfg.build_settings, driver=driver), cache, progress)
        settle_at_base(builder, cache, base, Path(tmp) / "settle.log")
        built = fresh.build(variant)
        if built.error:
            raise SystemExit(f"{variant.name} does not build: {built.error.message}")
        patched = built.seconds
        rows.append((f"{variant.name} build (rig)", patched,
                     "cache hit?!" if built.cache_hit else "incremental"))
        limit = in_place_limit(builder, cache, variant, args.repeat)
        rows.append((f"in-place limit (touch + make, median of {args.repeat})", limit, ""))
        again = fresh.build(variant)
        rows.append((f"{variant.name} unchanged rebuild", again.seconds,
                     "cache hit" if again.cache_hit else "REBUILT"))
        cost = sandbox_cost(builder, cache, variant, args.repeat)
        for confined, how in ((False, "bare"), (True, "in the sandbox")):
            rows.append((f"{variant.name} patched build {how} (median of {args.repeat})",
                         cost[confined], ""))
        start = start_cost()
        steps = 2 * len(variant.patches) + 2      # git apply --check and apply each, 2 makes
        rows.append(("sandbox start-up, per step (median of 21)", start,
                     f"{steps} steps in this build"))
        progress.close()
    width = max(len(r[0]) for r in rows)
    for name, secs, note in rows:
        print(f"{name:<{width}}  {secs:8.3f} s  {note}")
    print(f"{'patched / limit':<{width}}  {patched / limit:8.2f} x  (goal <= 1.5)")
    print(f"{'sandbox / bare':<{width}}  {cost[True] / cost[False]:8.3f} x  (goal <= 1.05; "
          f"start-up alone: {1 + steps * start / cost[False]:.4f} x; "
          f"{sandbox.decide(True, untrusted=True).how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
