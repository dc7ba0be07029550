"""Crash and hang benchmark: what one crash and one hang cost a variant's test stage, with the
guest restored (the default) and booted again ([run] restore = false), alternately.

    python bench/crash.py [--runs 3]

Two deliberately broken kernels of the end-to-end tests (tests/fixtures/build/): one BUGs in
rxe on an RDMA WRITE, one sleeps for ever in ib_umem_get() on a read-only registration.  On
each, the umem suite runs a selection with exactly one test that crashes (or hangs) and
one that runs after it, and then that second test alone: the difference is the cost of the
crash, as the rig pays it (the evidence, the restore or the boot, the suite started again).
The hang's limit is the test's own from the base's times, which this run records first.
Then what each kernel costs as a whole (--whole): the whole umem suite on it against the same
on the base, restored: the hanging kernel hangs on every read-only registration until the
crash patterns stop that kind (rig/runtime/crashes.py), the BUGging one on every RDMA WRITE.
Medians of alternating runs are printed, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from rig.core.cache import Cache
from rig.core.model import BootRequest
from rig.core.progress import Progress
from rig.flows import config
from rig.flows.matrix import Runner
from rig.runtime import hang_limits
from rig.runtime.base import TestRequest, TestStageResult
from rig.runtime.local import Local
from rig.runtime.suites.base import Limits, StageRequest
from rig.runtime.suites.umem import UmemSuite

FIXTURES = HERE.parent / "tests" / "fixtures" / "build"
# kernel -> (the test that crashes or hangs on it, a test that runs after it)
CASES = {
    "crash": ("bug-on-rdma-write.patch", "test_coherent_after_rdma_write[anon-written-rw-mr]",
              "test_registration[anon-written-rw-mr]"),
    "hang": ("sleep-on-readonly.patch", "test_registration[anon-written-ro-mr]",
             "test_registration[anon-written-rw-mr]"),
}


def stage(runner: Runner, cfg, variant, select: tuple[str, ...], restore: bool, tmp: Path,
          progress: Progress, *, project: Path | None = None,
          name: str | None = None) -> tuple[float, TestStageResult]:
    """One test stage of VARIANT running SELECT of the umem suite in PROJECT (the
    configuration's by default), its console logs under TMP as NAME: its wall time and its
    result."""
    built = runner.builder.build(variant)
    if built.error:
        raise SystemExit(f"bench: {variant.name} does not build: {built.error.message}")
    with runner.cache.scratch("bench") as scratch:
        staged = UmemSuite().stage(StageRequest(project or cfg.project, runner.cache, built,
                                                runner.image, {}, cfg.sources, select, scratch,
                                                progress.log))
        boot_req = BootRequest(built.boot_image, runner.image, runner.accel,
                               boot_timeout=cfg.timeouts.boot,
                               silence_timeout=cfg.timeouts.silence, workdir=scratch,
                               pytest_server=True)
        start = time.monotonic()
        ran = Local().run_tests(TestRequest(
            boot_req, ((UmemSuite(), staged),), name or variant.name, tmp,
            Limits(cfg.timeouts.test, cfg.timeouts.suite, hang_limits.load(runner.cache)),
            restore=restore), progress)
        took = time.monotonic() - start
    if ran.boot is not None:
        runner.accel = ran.boot.accelerator     # "auto" found out once
    return took, ran


def broken(patch: str, select: tuple[str, ...], cache: Cache, tmp: Path,
           progress: Progress) -> tuple[Runner, object, object]:
    """The runner, configuration and variant of the base with PATCH, the base's times of
    SELECT (the whole suite: ()) recorded for the hang limits, as a real run records them."""
    cfg = config.load(variants=["base"], extra_patches=[FIXTURES / patch],
                      out=tmp / "out", suites=["umem"])
    runner = Runner(cfg, cache, progress)
    runner.prepare_image()
    _, base = stage(runner, cfg, cfg.variant(cfg.base), select, True, tmp, progress)
    hang_limits.record(cache, base.test_times)
    return runner, cfg, next(v for v in cfg.variants if v.name != cfg.base)


def costs(cache: Cache, runs: int, tmp: Path, progress: Progress) -> dict[str, dict[str, list]]:
    """kind -> {"restore": [seconds...], "boot": [...]}: what one crash (hang) cost."""
    out: dict[str, dict[str, list]] = {}
    for kind, (patch, bad, after) in CASES.items():
        runner, cfg, variant = broken(patch, (bad, after), cache, tmp, progress)
        out[kind] = {"restore": [], "boot": []}
        for _ in range(runs):
            alone, _ = stage(runner, cfg, variant, (after,), True, tmp, progress)
            for how, restore in (("restore", True), ("boot", False)):
                took, ran = stage(runner, cfg, variant, (bad, after), restore, tmp, progress)
                verdicts = {t.id: t.verdict.value for t in ran.tests}
                if verdicts.get(bad) != "crashed" or verdicts.get(after) in (None, "crashed",
                                                                              "lost"):
                    raise SystemExit(f"bench: {variant.name} did not crash once as "
                                     f"expected: {verdicts}")
                out[kind][how].append(took - alone)
    return out


def whole(cache: Cache, runs: int, tmp: Path, progress: Progress) -> dict[str, dict]:
    """kind -> {"stage": [seconds...], "base": [...], "crashes": [crashed tests...]}: the
    whole umem suite's test stage on that kind's kernel, and on the base, alternately."""
    out: dict[str, dict] = {}
    for kind, (patch, _, _) in CASES.items():
        runner, cfg, variant = broken(patch, (), cache, tmp, progress)
        out[kind] = {"stage": [], "base": [], "crashes": []}
        for _ in range(runs):
            took, _ = stage(runner, cfg, cfg.variant(cfg.base), (), True, tmp, progress)
            out[kind]["base"].append(took)
            took, ran = stage(runner, cfg, variant, (), True, tmp, progress)
            crashed = sum(t.verdict.value == "crashed" for t in ran.tests)
            if not crashed:
                raise SystemExit(f"bench: {variant.name} did not crash: {ran.errors}")
            out[kind]["stage"].append(took)
            out[kind]["crashes"].append(crashed)
    return out


def report(found: dict[str, dict[str, list]], wholes: dict[str, dict]) -> None:
    print("what one crash or hang costs the test stage, restored / booted again; and the whole "
          "umem suite on a kernel that crashes (hangs) on every test of a kind, restored, "
          "beside the base (medians of alternating runs)")
    for kind, by in found.items():
        r, b = statistics.median(by["restore"]), statistics.median(by["boot"])
        print(f"  one {kind:<6} restored {r:6.1f} s   booted again {b:6.1f} s   "
              f"= {r / b:.2f}x   ({len(by['restore'])} runs)")
        if kind in wholes:
            w = wholes[kind]
            s, base = statistics.median(w["stage"]), statistics.median(w["base"])
            print(f"    every {kind:<6} {s:6.1f} s ({'/'.join(map(str, w['crashes']))} crashed)"
                  f"   base {base:6.1f} s   {s - base:6.1f} s more   ({len(w['stage'])} runs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each kind (default 3)")
    ap.add_argument("--whole", type=int, default=1,
                    help="runs of the whole suite on each kernel (default 1; 0: none)")
    args = ap.parse_args()
    progress = Progress(live=False)
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        found = costs(Cache(), args.runs, Path(tmp), progress)
        wholes = whole(Cache(), args.whole, Path(tmp), progress) if args.whole else None
    progress.close()
    report(found, wholes or {})
    return 0


if __name__ == "__main__":
    sys.exit(main())
