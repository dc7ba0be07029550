"""Build benchmark: the rig's kernel builds beside the in-place limit measured in the same run.

    python bench/build.py [--variant umem-rfc] [--repeat 3] [--cold]

Prints, for the base and a patched variant of the same source:
  cold base build          (with --cold: a fresh cache and ccache, so a full build)
  patched variant build    (the rig: switch the work tree to the patches, make, module, publish)
  in-place limit           (the same tree back at base, `touch` the files the patches change,
                            make: the least any tool can do for that variant), median of --repeat
  unchanged rebuild        (the variant again: must be a cache hit)
and the ratio patched / limit.  Figures, not assertions: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rig import config, patches, sources
from rig.build import Builder
from rig.cache import Cache
from rig.kconfig import merge
from rig.progress import Progress
from rig.worktree import WorkTree


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
        # Force the variant to build (not a cache hit) by dropping its entry first.
        key_probe = builder.build(variant)
        if key_probe.cache_hit:
            cache.clear(f"kernel/{key_probe.key}")
            with WorkTree(sources.prepare(base.source, cache), cache).lock() as work:
                work.checkout(())
            builder.build(base)                                    # tree back at base
            key_probe = builder.build(variant)
        patched = key_probe.seconds
        rows.append((f"{variant.name} build (rig)", patched, "incremental"))
        limit = in_place_limit(builder, cache, variant, args.repeat)
        rows.append((f"in-place limit (touch + make, median of {args.repeat})", limit, ""))
        again = builder.build(variant)
        rows.append((f"{variant.name} unchanged rebuild", again.seconds,
                     "cache hit" if again.cache_hit else "REBUILT"))
        progress.close()
    width = max(len(r[0]) for r in rows)
    for name, secs, note in rows:
        print(f"{name:<{width}}  {secs:8.2f} s  {note}")
    print(f"{'patched / limit':<{width}}  {patched / limit:8.2f} x  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
