"""Fail-fast benchmark: how soon `rig run` stops when a stage every variant needs cannot be
done, beside the rig's start alone, measured in the same run.

    python bench/failfast.py [--runs 5]

The case: a fresh cache whose image/ cannot be made (a file stands in its place), so the
image stage fails and the rig must exit 2 before any source is fetched or kernel built.  Its
limit: `rig --help`, the interpreter and the rig's imports.  Medians of alternating runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def _timed(argv: list[str], status: int) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rig.cli", *argv], cwd=PROJECT,
                          capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode != status:
        raise SystemExit(f"rig {' '.join(argv)}: exit {proc.returncode}, not {status}:\n"
                         f"{proc.stderr[-2000:]}")
    return took


def figures(runs: int) -> dict[str, list[float]]:
    """RUNS of the failing run and of the rig's start, alternately: name -> seconds."""
    got: dict[str, list[float]] = {"image stage fails": [], "rig --help": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="rig-failfast-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            (cache / "image").write_text("not a folder: the image cannot be stored\n")
            got["image stage fails"].append(_timed(
                ["run", "--out", str(Path(tmp) / "out"), "--cache", str(cache)], 2))
            if any((cache / kind).exists() for kind in ("source", "kernel", "work")):
                raise SystemExit("the failing run fetched a source or built before it stopped")
        got["rig --help"].append(_timed(["--help"], 0))
    return got


def report(got: dict[str, list[float]]) -> None:
    runs = len(got["rig --help"])
    fails, start = (statistics.median(got[k]) for k in ("image stage fails", "rig --help"))
    print(f"fail fast, median of {runs}: a run whose image stage cannot be done stops (exit 2, "
          f"nothing fetched or built) after {fails:.2f} s; limit: the rig's start (rig --help) "
          f"{start:.2f} s = {fails / start:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    report(figures(ap.parse_args().runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
