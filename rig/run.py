"""The whole job: build what is missing, boot every variant, run the suite, write the report.

Each variant goes through its stages on its own (build -> boot -> tests), so one variant's
failure is that variant's verdict while the others go on, and a shard can run one variant
alone; the report stage works from the results document only.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from . import compare, hostdeps, junit, report
from . import suites as suitelib
from .build import Builder, BuildSettings
from .cache import Cache
from .config import ConfigFileError, RunConfig
from .image import ensure_image
from .model import BootRequest, ImageResult, Outcome, StageError, Variant
from .progress import Progress
from .results import Environment, PatchInfo, Results, RunInfo, VariantResult
from .suites.base import Limits
from .testrun import TestRequest, prepare_suites, run_tests


@dataclass
class RunOutput:
    results: Results
    comparison: compare.Comparison
    out: Path

    @property
    def exit_status(self) -> int:
        return self.comparison.exit_status()


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def rig_version() -> str:
    try:
        return metadata.version("umem-rig")
    except metadata.PackageNotFoundError:
        return "unknown"


class Runner:
    def __init__(self, cfg: RunConfig, cache: Cache, progress: Progress,
                 select: tuple[str, ...] = ()):
        self.cfg = cfg
        self.cache = cache
        self.progress = progress
        try:
            self.select = suitelib.split_select(select, cfg.suites)
            for name, chosen in self.select.items():
                suitelib.get(name).validate(chosen)
        except suitelib.SuiteError as exc:
            raise ConfigFileError(str(exc)) from None
        self.builder = Builder(BuildSettings(cfg.project / "guest_tests" / "driver",
                                             cfg.base_config, cfg.jobs), cache, progress)
        self.accel = cfg.accel           # "auto" until a boot has found out what works
        self.image: ImageResult | None = None
        self.image_error: StageError | None = None
        self.image_seconds = 0.0

    def prepare_image(self) -> None:
        try:
            with self.progress.stage("image", "image") as t:
                self.image = ensure_image(self.cache, log=self.progress.log)
            self.image_seconds = t["seconds"]
        except Exception as exc:  # noqa: BLE001 - any image failure is every variant's
            self.image_error = StageError("image", f"guest image: {exc}")

    def variant(self, variant: Variant) -> VariantResult:
        cfg = self.cfg
        vr = VariantResult(variant.name, variant.name == cfg.base, Outcome.INFRA_ERROR,
                           Environment(source=variant.source.name, series=variant.series,
                                       patches=[PatchInfo(p.subject, p.sha256, str(p.origin))
                                                for p in variant.patches]))
        if variant.name in cfg.unloadable:
            vr.outcome = Outcome.PATCH_FAILED
            vr.errors.append(StageError("patch", cfg.unloadable[variant.name]))
            return vr
        with self.progress.stage(variant.name, "build"):
            built = self.builder.build(variant)
        vr.timings["build"] = round(built.seconds, 3)
        env = built.environment
        vr.environment.source_version = env.get("source", "").split(" ")[-1]
        vr.environment.config_hash = env.get("config_hash", "")
        if built.error:
            vr.outcome = built.outcome
            vr.errors.append(built.error)
            return vr
        if self.image is None:
            vr.errors.append(self.image_error or StageError("image", "no guest image"))
            return vr
        vr.environment.image_hash = self.image.key
        console_dir = cfg.out / "console"
        console_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rig-suites-") as scratch:
            prepared = prepare_suites(cfg, self.cache, built, self.image, self.select,
                                      Path(scratch), self.progress, variant.name)
            vr.errors += prepared.errors
            vr.timings.update(prepared.timings)
            vr.suites = list(prepared.failed)
            if not prepared.suites:
                vr.outcome = Outcome.BUILD_FAILED
                return vr
            ran = run_tests(TestRequest(
                BootRequest(built.bzimage, self.image, self.accel,
                            boot_timeout=cfg.timeouts.boot, silence_timeout=cfg.timeouts.silence),
                tuple(prepared.suites), variant.name, console_dir,
                Limits(cfg.timeouts.test, cfg.timeouts.suite)), self.progress)
        # a suite that could not be built leaves the variant with only part of its verdicts
        vr.outcome = Outcome.TESTS_RAN if prepared.failed and ran.outcome is Outcome.OK \
            else ran.outcome
        vr.tests = ran.tests
        vr.errors += ran.errors
        vr.timings.update(ran.timings)
        vr.console = ran.console.strip()
        order = {name: i for i, name in enumerate(cfg.suites)}
        vr.suites = sorted(vr.suites + ran.suites, key=lambda s: order[s.name])
        if ran.boot is not None:
            vr.environment.accelerator = ran.boot.accelerator
            vr.environment.qemu_version = ran.boot.qemu_version
            self.accel = ran.boot.accelerator
        vr.environment.kernel_release = ran.kernel_release or env.get("kernel_release", "")
        return vr

    def run(self) -> RunOutput:
        cfg = self.cfg
        started = now()
        hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages,
                        log=self.progress.log)
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.prepare_image()
        with ThreadPoolExecutor(max_workers=cfg.parallel) as pool:
            variants = list(pool.map(self.variant, cfg.variants))
        results = Results([RunInfo(started, now(), rig_version(), platform.node(),
                                   sys.argv)], variants)
        if self.image_seconds:
            for v in variants:
                v.timings.setdefault("image", self.image_seconds)
        return write_outputs(results, cfg.out)


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
