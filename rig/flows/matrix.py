"""The whole job: build what is missing, boot every variant, run the suite, write the report.

Each variant goes through its stages on its own (build -> boot -> tests), so one variant's
failure is that variant's verdict while the others go on, and a shard can run one variant
alone; the report stage works from the results document only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from rig.core import hostdeps
from rig.core.cache import Cache
from rig.core.model import BootRequest, BuildResult, ImageResult, Outcome, StageError, Variant
from rig.core.paths import remove_tree
from rig.core.progress import Progress
from rig.core.status import ExitStatus, RigError
from rig.flows.config import ConfigFileError, RunConfig
from rig.guest.image import ensure_image
from rig.kernel import decode, machinery, sandbox, sources
from rig.kernel.build import Builder
from rig.kernel.worktree import WorkTree
from rig.results import compare, junit, report
from rig.results.compare import Change
from rig.results.schema import (
    PATCHES,
    Environment,
    PatchInfo,
    Results,
    RunInfo,
    SuiteInfo,
    VariantResult,
    Verdict,
    patch_file,
)
from rig.runtime import hang_limits
from rig.runtime import suites as suitelib
from rig.runtime.base import KERNEL_LOG, Runtime, TestRequest
from rig.runtime.lab import Lab, LabError
from rig.runtime.local import Local
from rig.runtime.suites.base import Limits, Staged, StageRequest, Suite, SuiteError


class StageFailed(RigError):
    """A stage every variant needs failed: the run ends before any kernel is built."""

    def __init__(self, stage: str, cause: str):
        self.stage = stage
        super().__init__(f"{stage} failed, which every variant needs (stopped before building "
                         f"any kernel): {cause}")


@dataclass
class RunOutput:
    results: Results
    comparison: compare.Comparison
    out: Path

    @property
    def exit_status(self) -> ExitStatus:
        return self.comparison.exit_status()


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def rig_version() -> str:
    try:
        return metadata.version("umem-rig")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Prepared:
    suites: list[tuple[Suite, Staged]] = field(default_factory=list)
    failed: list[SuiteInfo] = field(default_factory=list)     # suites that could not be built
    errors: list[StageError] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def prepare_suites(cfg: RunConfig, cache: Cache, built: BuildResult, image: ImageResult,
                   select: dict[str, tuple[str, ...]], scratch: Path, progress: Progress,
                   who: str) -> Prepared:
    """Build (or find in the cache) what each suite SELECT names needs for one variant."""
    out = Prepared()
    for name in select:
        suite = suitelib.get(name)
        req = StageRequest(cfg.project, cache, built, image, cfg.suite_settings.get(name, {}),
                           cfg.sources, select.get(name, ()), scratch, progress.log)
        with progress.stage(who, f"build {name}") as timing:
            try:
                out.suites.append((suite, suite.stage(req)))
            except SuiteError as exc:
                out.failed.append(SuiteInfo(name, Outcome.BUILD_FAILED))
                out.errors.append(StageError(f"build {name}", str(exc)))
        out.timings[f"build:{name}"] = timing["seconds"]
    return out


class Runner:
    def __init__(self, cfg: RunConfig, cache: Cache, progress: Progress):
        self.cfg = cfg
        self.cache = cache
        self.progress = progress
        try:
            self.select = suitelib.split_select(cfg.select, cfg.suites)
            for name, chosen in self.select.items():
                suitelib.get(name).validate(chosen)
        except suitelib.SuiteError as exc:
            raise ConfigFileError(str(exc)) from None
        self.builder = Builder(cfg.build_settings, cache, progress)
        self.accel = cfg.accel           # "auto" until a boot has found out what works
        self.image: ImageResult | None = None
        self.image_seconds = 0.0
        # With a lab the boots are the lab's jobs, and run_tests() submits one and waits.
        self.lab = Lab(cfg.lab) if cfg.lab else None
        self.runtime: Runtime = self.lab or Local()

    def prepare_image(self) -> None:
        """The guest image every variant boots, before any kernel is built: without it no
        variant can get a verdict, so its failure ends the run at once (StageFailed)."""
        try:
            with self.progress.stage("image", "image") as t:
                self.image = ensure_image(self.cache, log=self.progress.log,
                                          detail=lambda line: self.progress.detail("image", line))
            self.image_seconds = t["seconds"]
        except RigError as exc:
            raise StageFailed("image", str(exc)) from None
        except OSError as exc:
            raise StageFailed("image", f"{exc.filename}: {exc.strerror}") from None

    def check_sandbox(self) -> None:
        """A series is built only in the sandbox: where none can be set up, say so before
        any kernel is built, not after the base's build."""
        if not self.cfg.sandbox or not any(v.patches for v in self.cfg.variants):
            return
        hostdeps.check_namespaces("the sandbox a series is built in (bubblewrap)",
                                  subids=False)
        try:
            sandbox.decide(self.cfg.sandbox, untrusted=True)
        except sandbox.SandboxUnavailable as exc:
            raise StageFailed("sandbox", str(exc)) from None

    def variant(self, variant: Variant, select: dict[str, tuple[str, ...]] | None = None,
                console: str = "console") -> VariantResult:
        """VARIANT built, booted and tested: the suites and tests of SELECT (the run's by
        default), console logs under OUT/CONSOLE."""
        return self._tested(*self.build(variant), variant, select, console)

    def build(self, variant: Variant) -> tuple[VariantResult, BuildResult | None]:
        """VARIANT's result so far and its build; no build when the variant ends here."""
        cfg = self.cfg
        config_name = " + ".join([cfg.base_config, *(f.name for f in variant.fragments)])
        patches = [PatchInfo(p.subject, p.sha256, str(p.origin), p.message_id)
                   for p in variant.patches]
        vr = VariantResult(variant.name, variant.name == cfg.base, Outcome.INFRA_ERROR,
                           Environment(source=variant.source.name, series=variant.series,
                                       patches=patches, config_name=config_name,
                                       build_machinery=machinery.files(variant.patches)))
        save_patches(cfg.out, variant)
        if variant.name in cfg.unloadable:
            vr.outcome = Outcome.PATCH_FAILED
            vr.errors.append(StageError("patch", cfg.unloadable[variant.name]))
            return vr, None
        with self.progress.stage(variant.name, "build"):
            built = self.builder.build(variant)
        vr.timings["build"] = round(built.seconds, 3)
        if built.environment is not None:
            vr.environment.record_build(built.environment)
        if built.error:
            vr.outcome = built.outcome
            vr.errors.append(built.error)
            return vr, None
        if self.image is None:
            vr.errors.append(StageError("image", "no guest image"))
            return vr, None
        vr.environment.image_hash = self.image.key
        return vr, built

    def every_variant(self, pool: ThreadPoolExecutor) -> list[VariantResult]:
        """Every variant built and tested, in the configuration's order.  A source's variants
        are built one after the other (they share its work tree), each source's in a thread
        of its own, and each variant is tested in POOL once built: a variant waiting for its
        tree holds no test slot, and the other sources build meanwhile."""
        chains: dict[str, list[Variant]] = {}
        for v in self.cfg.variants:
            chains.setdefault(v.source.name, []).append(v)
        tested: dict[str, Future[VariantResult]] = {}

        def chain(variants: list[Variant]) -> None:
            for v in variants:
                vr, built = self.build(v)
                tested[v.name] = pool.submit(self._tested, vr, built, v)

        with ThreadPoolExecutor(max_workers=max(len(chains), 1)) as builders:
            for started in [builders.submit(chain, vs) for vs in chains.values()]:
                started.result()
        return [tested[v.name].result() for v in self.cfg.variants]

    def _tested(self, vr: VariantResult, built: BuildResult | None, variant: Variant,
                select: dict[str, tuple[str, ...]] | None = None,
                console: str = "console") -> VariantResult:
        if built is not None:
            self._test(vr, variant, built, self.select if select is None else select, console)
        return vr

    def _test(self, vr: VariantResult, variant: Variant, built: BuildResult,
              select: dict[str, tuple[str, ...]], console: str) -> None:
        """The test stage of VARIANT, built (BUILT), into VR: its suites staged, the kernel
        booted and the suites run (locally or on the lab)."""
        cfg = self.cfg
        console_dir = cfg.out / console
        console_dir.mkdir(parents=True, exist_ok=True)
        with self.cache.scratch("suites") as scratch:
            prepared = prepare_suites(cfg, self.cache, built, self.image, select, scratch,
                                      self.progress, variant.name)
            vr.errors += prepared.errors
            vr.timings.update(prepared.timings)
            vr.suites = list(prepared.failed)
            if not prepared.suites:
                vr.outcome = Outcome.BUILD_FAILED
                return
            # a lab boots the bzImage its QEMU or board knows; here QEMU's PVH entry
            kernel = built.bzimage if self.lab else built.boot_image
            boot_req = BootRequest(kernel, self.image, self.accel,
                                   boot_timeout=cfg.timeouts.boot,
                                   silence_timeout=cfg.timeouts.silence, workdir=scratch,
                                   pytest_server=any(s.runs_pytest for s, _ in prepared.suites))
            ran = self.runtime.run_tests(TestRequest(boot_req, tuple(prepared.suites), variant.name,
                                             console_dir,
                                             Limits(cfg.timeouts.test, cfg.timeouts.suite,
                                                    hang_limits.load(self.cache)),
                                             restore=cfg.restore),
                                 self.progress)
        if vr.is_base:
            hang_limits.record(self.cache, ran.test_times)
        # a suite that could not be built leaves the variant with only part of its verdicts
        vr.outcome = Outcome.TESTS_RAN if prepared.failed and ran.outcome is Outcome.OK \
            else ran.outcome
        vr.tests = ran.tests
        vr.errors += ran.errors
        vr.timings.update(ran.timings)
        vr.console = ran.console.strip()
        self._decode(vr, built.artefacts / "vmlinux", variant)
        order = {name: i for i, name in enumerate(cfg.suites)}
        vr.suites = sorted(vr.suites + ran.suites, key=lambda s: order[s.name])
        vr.environment.record_boot(ran.boot, ran.kernel_release, ran.lab, ran.lab_jobs)
        if ran.boot is not None:
            self.accel = ran.boot.accelerator

    def _decode(self, vr: VariantResult, vmlinux: Path, variant: Variant) -> None:
        """Crash evidence decoded to file:line where the build has debug information."""
        crashed = [t for t in vr.tests if t.verdict is Verdict.CRASHED]
        if not (crashed or vr.console) or not decode.has_debug_info(vmlinux):
            return
        try:
            confine = sandbox.decide(self.cfg.sandbox, untrusted=bool(variant.patches))
        except sandbox.SandboxUnavailable:
            return                  # the series' script runs nowhere but in a sandbox
        tree = WorkTree(sources.prepare(variant.source, self.cache), self.cache).tree
        for t in crashed:
            t.details = decode.decode(t.details, vmlinux, tree, confine.settings)
        vr.console = decode.decode(vr.console, vmlinux, tree, confine.settings)

    def run(self) -> RunOutput:
        """Every variant, then the reports from the results."""
        return write_outputs(self.results(), self.cfg.out)

    def results(self) -> Results:
        """Every variant built, booted and tested; results.json and the reports not yet
        written (a caller may add to the results first: see write_outputs)."""
        cfg = self.cfg
        started = now()
        hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages,
                        log=self.progress.log)
        cfg.out.mkdir(parents=True, exist_ok=True)
        for gone in self.cache.sweep():
            self.progress.log(f"removed {gone}, left behind by a rig that was killed")
        if self.lab:    # a lab that is down or refuses the token is said at once
            with contextlib.suppress(LabError):
                self.lab.check(self.progress)
        self.check_sandbox()
        self.prepare_image()
        # A lab runs as many jobs at once as it has devices: submit every variant's at once.
        width = max(len(cfg.variants), 1) if self.lab else cfg.parallel
        with ThreadPoolExecutor(max_workers=width) as pool:
            variants = self.every_variant(pool)
            self.confirm(variants, pool)
        results = Results([RunInfo(started, now(), rig_version(), platform.node(),
                                   sys.argv)], variants)
        if self.image_seconds:
            for v in variants:
                v.timings.setdefault("image", self.image_seconds)
        return results


    def confirm(self, variants: list[VariantResult], pool: ThreadPoolExecutor) -> None:
        """Run again, on the base and on the candidate, each test whose verdict a candidate
        changed ([run] confirm times, one boot each): a re-run's verdicts go with the test
        (TestResult.reruns), and one that changed its mind is flaky, neither fixed nor
        regressed (rig/results/compare.py)."""
        wanted: dict[str, set[tuple[str, str]]] = {}
        for vc in compare.compare(Results([], variants)).variants:
            # a splat is the boot's, not one test's; a crash has its splat for evidence and
            # costs a boot to see again
            keys = {c.key for c in vc.cells if c.change in (Change.FIXED, Change.REGRESSED)
                    and c.id != KERNEL_LOG and Verdict.CRASHED not in
                    {t.verdict for t in (c.base, c.other) if t}}
            if keys:
                wanted.setdefault(vc.name, set()).update(keys)
                wanted.setdefault(vc.base.name, set()).update(keys)
        by_name = {v.name: v for v in variants}
        if wanted and self.cfg.confirm:
            self.progress.log(f"confirming {len(set().union(*wanted.values()))} changed "
                              f"test(s) on {', '.join(wanted)}, {self.cfg.confirm} time(s)")
        for round_ in range(1, self.cfg.confirm + 1):
            jobs = {name: pool.submit(self.variant, self.cfg.variant(name),
                                      _select(by_name[name], keys), f"console/confirm-{round_}")
                    for name, keys in wanted.items()}
            for name, job in jobs.items():
                rerun = job.result()
                mine = by_name[name]
                mine.timings["confirm"] = round(mine.timings.get("confirm", 0.0)
                                                + sum(rerun.timings.values()), 3)
                again = {t.key: t for t in rerun.tests}
                for t in mine.tests:
                    if t.key in wanted[name] and t.key in again:
                        t.reruns.append(again[t.key].verdict)


def _select(variant: VariantResult, keys: set[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """The --select, per suite, that runs exactly the tests KEYS of VARIANT."""
    chosen: dict[str, list[str]] = {}
    for t in variant.tests:
        if t.key in keys:
            chosen.setdefault(t.suite, []).append(suitelib.get(t.suite).select_for(t))
    return {suite: tuple(dict.fromkeys(names)) for suite, names in chosen.items()}


def save_patches(out: Path, variant: Variant) -> None:
    """The diffs VARIANT applies, one a file under OUT (for KCIDB's patchset files)."""
    remove_tree(out / PATCHES / variant.name, out)   # an earlier run's
    for index, p in enumerate(variant.patches, 1):
        path = patch_file(out, variant.name, index, p.subject)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(p.diff.encode("utf-8", "surrogateescape"))


def write_outputs(results: Results, out: Path) -> RunOutput:
    """results.json, the HTML and text reports and one JUnit file per variant, into OUT."""
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / "results.json")
    (out / "junit").mkdir(exist_ok=True)
    for v in results.variants:
        junit.write(v, out / "junit" / f"{v.name}.xml")
    (out / "report.html").write_text(report.render(results))
    (out / "report.txt").write_text(report.render_text(results))
    return RunOutput(results, compare.compare(results), out)
