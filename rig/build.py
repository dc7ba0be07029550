"""Kernel builds: one variant -> bzImage, symbols, .config and the test driver module.

Artefacts land in the cache under a key made of the source version, the merged config, the
patch contents, the driver's source and the toolchain, so an unchanged variant is a lookup.
The build itself runs in the source's shared work tree (see worktree.py), incrementally.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import kconfig, sources
from .cache import Cache, digest
from .model import BuildResult, Outcome, StageError, Variant
from .progress import Progress
from .worktree import WorkTree

ARTEFACTS = {               # name in the cache entry: path in the O= directory
    "bzImage": "arch/x86/boot/bzImage",
    "System.map": "System.map",
    "vmlinux": "vmlinux",
    ".config": ".config",
}
_MAKE_STEP = re.compile(r"^\s+([A-Z][A-Z0-9_]*)\s+(\S+)")
_ERROR = re.compile(r"^(\S+?):(\d+):(?:\d+:)? (?:fatal )?error: ")


@dataclass(frozen=True)
class BuildSettings:
    driver: Path                     # the test driver module's source directory
    base_config: str = "tinyconfig"
    jobs: int = os.cpu_count() or 1
    ccache: bool = True


def toolchain() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "missing"
    return {"gcc": first_line(["gcc", "--version"]), "ld": first_line(["ld", "--version"]),
            "make": first_line(["make", "--version"])}


def _driver_digest(driver: Path) -> str:
    files = sorted(p for p in driver.rglob("*")
                   if p.suffix in {".c", ".h"} or p.name in {"Makefile", "Kbuild"})
    return digest(*[str(p.relative_to(driver)) for p in files], *files)


def first_errors(log: str, limit: int = 12) -> str:
    """The compiler's first error with its context, or the make failure lines."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if _ERROR.match(line):
            start = i
            if start > 0 and ": In function " in lines[start - 1]:
                start -= 1
            return "\n".join(lines[start:start + limit])
    failures = [line for line in lines if line.startswith("make") and "***" in line]
    tail = failures[:limit] or lines[-limit:]
    return "\n".join(tail)


def _make(args: list[str], log_path: Path, progress: Progress, who: str) -> int:
    with open(log_path, "a", buffering=1) as log, subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace") as proc:
        log.write("$ " + " ".join(args) + "\n")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if m := _MAKE_STEP.match(line):
                progress.detail(who, f"{m.group(1)} {m.group(2)}")
        return proc.wait()


class Builder:
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
                      [p.sha256 for p in variant.patches], self._toolchain,
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
        env = {"source": f"{variant.source.name} {source.version}", "config_hash": config.key,
               "base_config": config.base, "toolchain": self._toolchain,
               "patches": [{"subject": p.subject, "sha256": p.sha256, "origin": str(p.origin)}
                           for p in variant.patches]}
        with self.cache.lock("kernel", key):
            entry = self.cache.lookup("kernel", key)
            if entry is not None:
                env.update(json.loads((entry / "meta.json").read_text())["environment"])
                return BuildResult(who, Outcome.OK, key, entry, cache_hit=True,
                                   seconds=time.monotonic() - start, environment=env)
            result = self._build_in_worktree(variant, source, config, key, env)
        result.seconds = time.monotonic() - start
        return result

    def _build_in_worktree(self, variant, source, config, key, env) -> BuildResult:
        who = variant.name
        logs = self.cache.root / "logs" / key[:16]
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / "build.log"
        log.write_text("")
        with WorkTree(source, self.cache).lock() as work:
            applied = work.checkout(variant.patches)
            if not applied.ok:
                return BuildResult(who, Outcome.PATCH_FAILED, key, environment=env,
                                   error=StageError("patch", applied.message, applied.detail))
            objdir = work.objdir(config.key)
            objdir.mkdir(parents=True, exist_ok=True)
            dot_config = objdir / ".config"
            # Rewriting an identical .config would still make kbuild re-check everything.
            resolve = any(Path(f).name.startswith("Kconfig") for f in work.switched)
            if not dot_config.exists() or dot_config.read_text() != config.text:
                dot_config.write_text(config.text)
                resolve = True
            os.environ.setdefault("CCACHE_DIR", str(self.cache.root / "ccache"))
            make = ["make", "-C", str(work.tree), f"O={objdir}", f"-j{self.settings.jobs}",
                    *self._make_vars()]
            # On its own: mixed with build targets, kbuild builds them one by one, walking
            # the tree twice; and only when the config or a Kconfig file changed.
            if resolve and _make(make + ["olddefconfig"], log, self.progress, who):
                return self._failed(who, key, env, log, "config", work.tree)
            # `modules` as well: 6.12 needs Module.symvers for out-of-tree modules.
            if _make(make + ["bzImage", "modules"], log, self.progress, who):
                return self._failed(who, key, env, log, "build", work.tree)
            try:  # a patch may change Kconfig: the fragments' options must still hold
                kconfig.check(dot_config.read_text(),
                              [r for f in variant.fragments for r in kconfig.requests(f)],
                              work.tree)
            except kconfig.ConfigError as exc:
                return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                                   error=StageError("config", f"after the patches: {exc}"))
            release = (objdir / "include/config/kernel.release").read_text().strip()
            with tempfile.TemporaryDirectory(prefix="driver-", dir=work.root) as tmp:
                moddir = Path(tmp) / "driver"
                shutil.copytree(self.settings.driver, moddir)
                if _make(["make", "-C", str(objdir), f"M={moddir}", *self._make_vars(),
                          "modules"], log, self.progress, who):
                    return self._failed(who, key, env, log, "driver module", work.tree)
                kos = list(moddir.glob("*.ko"))
                with self.cache.publish("kernel", key) as out:
                    for name, rel in ARTEFACTS.items():
                        shutil.copy2(objdir / rel, out / name)
                    for ko in kos:
                        shutil.copy2(ko, out / ko.name)
                    shutil.copy2(log, out / "build.log")
                    env["kernel_release"] = release
                    (out / "meta.json").write_text(json.dumps(
                        {"variant": variant.name, "key": key, "environment": env}, indent=1))
        return BuildResult(who, Outcome.OK, key, self.cache.lookup("kernel", key),
                           environment=env)

    def _failed(self, who, key, env, log: Path, what: str, tree: Path) -> BuildResult:
        # paths relative to the tree, as a maintainer reads them in the patch
        excerpt = first_errors(log.read_text(errors="replace")).replace(f"{tree}/", "")
        return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                           error=StageError("build", f"{what} failed (full log: {log})",
                                            excerpt))
