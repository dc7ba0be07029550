"""ccache across paths: does the same kernel source, built at another path, hit the cache?

    python bench/ccache_paths.py [--full]

A git tree made from a cached Debian source is a second copy of the same files at another
path (work/<source>/linux); kbuild hands gcc absolute paths (srctree is absolute for O=
builds), so ccache misses everything unless CCACHE_BASEDIR makes them relative.  This builds
the base config (mm/ and drivers/infiniband/, or with --full bzImage and modules) three times
with one fresh ccache, in copies of the cached 6.1 source laid out as the rig's work trees
are (DIR/linux beside DIR/obj):

  A  first build, CCACHE_BASEDIR set       (cold: every compile a miss)
  B  the same at another path, basedir set (the figure: hits, and its time beside A's)
  C  at a third path, no basedir           (what the rig did before: misses again)

and checks that the objects B got from the cache are the bytes gcc made for C (with basedir,
gcc sees ../linux/mm/gup.c, so __FILE__ would read that unless -fmacro-prefix-map maps
../linux/ away as kbuild's own map does for $(srctree)/).  Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rig.core.cache import Cache
from rig.core.progress import Progress
from rig.flows import config
from rig.kernel import sources
from rig.kernel.build import Builder
from rig.kernel.kconfig import merge

OBJECTS = ["mm/gup.o", "drivers/infiniband/core/umem.o", "mm/memory.o"]


def stats(env: dict) -> dict[str, int]:
    out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True, text=True,
                         check=True).stdout
    values = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    return {k: int(values.get(k, 0)) for k in ("direct_cache_hit", "preprocessed_cache_hit",
                                               "cache_miss")}


def build(root: Path, source: Path, config_text: str, targets: list[str], env: dict,
          make_vars: list[str], jobs: int) -> tuple[float, dict[str, int]]:
    tree, obj = root / "linux", root / "obj"
    root.mkdir()
    # hard links: a second copy of the files at another path, without the copying
    subprocess.run(["cp", "-al", str(source), str(tree)], check=True)
    obj.mkdir()
    (obj / ".config").write_text(config_text)
    make = ["make", "-s", "-C", str(tree), f"O={obj}", f"-j{jobs}", *make_vars]
    subprocess.run(["ccache", "-z"], env=env, check=True, capture_output=True)
    start = time.monotonic()
    subprocess.run(make + ["olddefconfig"], env=env, check=True, capture_output=True)
    subprocess.run(make + targets, env=env, check=True, capture_output=True)
    return time.monotonic() - start, stats(env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="bzImage and modules (minutes)")
    args = ap.parse_args()
    cfg = config.load()
    base = cfg.variant(cfg.base)
    cache = Cache()
    source = sources.prepare(base.source, cache)
    merged = merge(source, cfg.base_config, base.fragments, cache)
    builder = Builder(cfg.build_settings, cache, Progress(live=False))
    targets = ["bzImage", "modules"] if args.full else ["mm/", "drivers/infiniband/"]
    make_vars = builder._make_vars()
    mapped = [*make_vars, "KCFLAGS=-fmacro-prefix-map=../linux/="]
    rows = []
    # in the cache's file system, for the hard links; a dot name, so no listing shows it
    with tempfile.TemporaryDirectory(prefix=".bench-ccache-", dir=cache.root) as tmp:
        top = Path(tmp)
        env = dict(os.environ, CCACHE_DIR=str(top / "ccache"))
        with_base = dict(env, CCACHE_BASEDIR=str(top))
        for name, env_, vars_ in (("A", with_base, mapped), ("B", with_base, mapped),
                                  ("C", env, make_vars)):
            seconds, s = build(top / name, source.tree, merged.text, targets, env_, vars_,
                               cfg.jobs)
            rows.append((name, seconds, s))
        same = []
        for rel in OBJECTS:
            b, c = (top / "B" / "obj" / rel), (top / "C" / "obj" / rel)
            if b.exists() and c.exists():
                verdict = "identical" if b.read_bytes() == c.read_bytes() else "DIFFER"
                same.append(f"{rel}: {verdict}")
        file_names = subprocess.run(["strings", str(top / "B" / "obj" / "mm" / "gup.o")],
                                    capture_output=True, text=True, check=True).stdout
        leaked = sorted(set(re.findall(r"\S*\.\./linux/\S*", file_names)))
    version = subprocess.run(["ccache", "--version"], capture_output=True, check=True,
                             text=True).stdout.split()[2]
    print(f"targets: {' '.join(targets)}; ccache {version}")
    for name, seconds, s in rows:
        hits = s["direct_cache_hit"] + s["preprocessed_cache_hit"]
        print(f"  {name}  {seconds:7.1f} s   hits {hits:5d} (direct {s['direct_cache_hit']})"
              f"   misses {s['cache_miss']:5d}")
    a, b = rows[0][1], rows[1][1]
    print(f"  B / A = {b / a:.2f}  (B is the same source at another path, from the cache)")
    print("  objects B (cache) vs C (gcc): " + "; ".join(same))
    print(f"  '../linux/' in B's mm/gup.o strings: {leaked or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
