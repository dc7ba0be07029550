"""Kernel builds: one variant -> bzImage, symbols, .config and the test driver module.

Artefacts land in the cache under a key made of the source version, the merged config, the
patch contents, the driver's source and the toolchain, so an unchanged variant is a lookup.
The build itself runs in the source's shared work tree (see worktree.py), incrementally.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from . import kconfig, proc, sources
from .cache import Cache, digest
from .model import (
    BuildEnvironment,
    BuildResult,
    BuildSettings,
    Outcome,
    PreparedSource,
    StageError,
    Toolchain,
    Variant,
)
from .progress import Progress
from .worktree import WorkTree

ARTEFACTS = {               # name in the cache entry: path in the O= directory
    "bzImage": "arch/x86/boot/bzImage",
    "System.map": "System.map",
    "vmlinux": "vmlinux",
    ".config": ".config",
}
_MAKE_STEP = re.compile(r"^\s+([A-Z][A-Z0-9_]*)\s+(\S+)")


def toolchain() -> Toolchain:
    return Toolchain(gcc=proc.first_line(["gcc", "--version"]),
                     ld=proc.first_line(["ld", "--version"]),
                     make=proc.first_line(["make", "--version"]))


def _driver_digest(driver: Path) -> str:
    files = sorted(p for p in driver.rglob("*")
                   if p.suffix in {".c", ".h"} or p.name in {"Makefile", "Kbuild"})
    return digest(*[str(p.relative_to(driver)) for p in files], *files)


class _Failed(Exception):
    """A build step failed: WHAT, and the command's failure."""

    def __init__(self, what: str, failure: proc.CommandFailed):
        super().__init__(what)
        self.what, self.failure = what, failure


class Builder:
    """Builds variants into the cache; RunConfig.build_settings gives the SETTINGS."""

    def __init__(self, settings: BuildSettings, cache: Cache, progress: Progress):
        self.settings = settings
        self.cache = cache
        self.progress = progress
        self._toolchain = toolchain()

    def _make_vars(self) -> list[str]:
        cc = "ccache gcc" if self.settings.ccache and shutil.which("ccache") else "gcc"
        # Fixed build identity so identical inputs give identical objects (and ccache hits).
        return [f"CC={cc}", "KBUILD_BUILD_TIMESTAMP=umem-rig", "KBUILD_BUILD_USER=rig",
                "KBUILD_BUILD_HOST=rig"]

    def key(self, variant: Variant, source_version: str, config: kconfig.MergedConfig) -> str:
        return digest("kernel-v1", variant.source.kind, source_version, config.text,
                      [p.sha256 for p in variant.patches], dataclasses.asdict(self._toolchain),
                      _driver_digest(self.settings.driver))

    def build(self, variant: Variant) -> BuildResult:
        start = time.monotonic()
        who = variant.name
        try:
            source = sources.prepare(variant.source, self.cache)
            config = kconfig.merge(source, self.settings.base_config, variant.fragments,
                                   self.cache)
        except (sources.SourceError, kconfig.ConfigError) as exc:
            return BuildResult(who, Outcome.BUILD_FAILED, seconds=time.monotonic() - start,
                               error=StageError("config", str(exc)))
        key = self.key(variant, source.version, config)
        env = BuildEnvironment(variant.source.name, source.version, config.key, config.base,
                               self._toolchain)
        with self.cache.lock("kernel", key):
            entry = self.cache.lookup("kernel", key)
            if entry is not None:
                meta = json.loads((entry / "meta.json").read_text())
                env = dataclasses.replace(env,
                                          kernel_release=meta["environment"]["kernel_release"])
                result = BuildResult(who, Outcome.OK, key, entry, cache_hit=True,
                                     environment=env)
            else:
                result = self._build_in_worktree(variant, source, config, key, env)
        result.seconds = time.monotonic() - start
        return result

    def _build_in_worktree(self, variant: Variant, source: PreparedSource,
                           config: kconfig.MergedConfig, key: str,
                           env: BuildEnvironment) -> BuildResult:
        who = variant.name
        log = self.cache.root / "logs" / key[:16] / "build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        with WorkTree(source, self.cache).lock() as work:
            applied = work.checkout(variant.patches)
            if not applied.ok:
                return BuildResult(who, Outcome.PATCH_FAILED, key, environment=env,
                                   error=StageError("patch", applied.message, applied.detail))
            try:
                release = self._make_kernel(variant, config, work, log)
            except _Failed as failed:
                # paths relative to the tree, as a maintainer reads them in the patch
                excerpt = failed.failure.excerpt.replace(f"{work.tree}/", "")
                return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                                   error=StageError("build", f"{failed.what} failed "
                                                    f"(full log: {log})", excerpt))
            except kconfig.ConfigError as exc:
                return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                                   error=StageError("config", f"after the patches: {exc}"))
            env = dataclasses.replace(env, kernel_release=release)
            with tempfile.TemporaryDirectory(prefix="driver-", dir=work.root) as tmp:
                moddir = Path(tmp) / "driver"
                shutil.copytree(self.settings.driver, moddir)
                try:
                    self._make(["make", "-C", str(work.objdir(config.key)), f"M={moddir}",
                                *self._make_vars(), "modules"], log, who, "driver module")
                except _Failed as failed:
                    return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                                       error=StageError("build", f"{failed.what} failed "
                                                        f"(full log: {log})",
                                                        failed.failure.excerpt))
                self._publish(variant, key, env, work.objdir(config.key), moddir, log)
        return BuildResult(who, Outcome.OK, key, self.cache.lookup("kernel", key),
                           environment=env)

    def _make(self, argv: list[str], log: Path, who: str, what: str) -> None:
        def step(line: str) -> None:
            if m := _MAKE_STEP.match(line):
                self.progress.detail(who, f"{m.group(1)} {m.group(2)}")
        try:
            proc.run(argv, what, log=log, on_line=step,
                     env={"CCACHE_DIR": os.environ.get("CCACHE_DIR",
                                                       str(self.cache.root / "ccache"))})
        except proc.CommandFailed as e:
            raise _Failed(what, e) from None

    def _make_kernel(self, variant: Variant, config: kconfig.MergedConfig, work: WorkTree,
                     log: Path) -> str:
        """olddefconfig where needed, bzImage and modules; the kernel release."""
        objdir = work.objdir(config.key)
        objdir.mkdir(parents=True, exist_ok=True)
        dot_config = objdir / ".config"
        # Rewriting an identical .config would still make kbuild re-check everything.
        resolve = any(Path(f).name.startswith("Kconfig") for f in work.switched)
        if not dot_config.exists() or dot_config.read_text() != config.text:
            dot_config.write_text(config.text)
            resolve = True
        make = ["make", "-C", str(work.tree), f"O={objdir}", f"-j{self.settings.jobs}",
                *self._make_vars()]
        # On its own: mixed with build targets, kbuild builds them one by one, walking the
        # tree twice; and only when the config or a Kconfig file changed.
        if resolve:
            self._make([*make, "olddefconfig"], log, variant.name, "config")
        # `modules` as well: 6.12 needs Module.symvers for out-of-tree modules.
        self._make([*make, "bzImage", "modules"], log, variant.name, "build")
        # a patch may change Kconfig: the fragments' options must still hold
        kconfig.check(dot_config.read_text(),
                      [r for f in variant.fragments for r in kconfig.requests(f)], work.tree)
        return (objdir / "include/config/kernel.release").read_text().strip()

    def _publish(self, variant: Variant, key: str, env: BuildEnvironment, objdir: Path,
                 moddir: Path, log: Path) -> None:
        with self.cache.publish("kernel", key) as out:
            for name, rel in ARTEFACTS.items():
                shutil.copy2(objdir / rel, out / name)
            for ko in moddir.glob("*.ko"):
                shutil.copy2(ko, out / ko.name)
            shutil.copy2(log, out / "build.log")
            (out / "meta.json").write_text(json.dumps(
                {"variant": variant.name, "key": key,
                 "environment": dataclasses.asdict(env)}, indent=1))


def build_variants(builder: Builder, variants: list[Variant],
                   unloadable: dict[str, str]) -> list[BuildResult]:
    """Every variant's build, in order; a variant whose patches could not be read is
    patch-failed without building."""
    return [BuildResult(v.name, Outcome.PATCH_FAILED, error=StageError("patch", unloadable[v.name]))
            if v.name in unloadable else builder.build(v) for v in variants]
