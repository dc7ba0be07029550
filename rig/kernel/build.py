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
from dataclasses import dataclass
from pathlib import Path

from rig.core import proc, safefs
from rig.core.cache import Cache, digest
from rig.core.model import (
    BuildEnvironment,
    BuildResult,
    BuildSettings,
    Outcome,
    PreparedSource,
    StageError,
    Toolchain,
    Variant,
)
from rig.core.progress import Progress
from rig.kernel import kconfig, sandbox, sources
from rig.kernel.jobserver import Jobs, Jobserver
from rig.kernel.worktree import WorkTree

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


@dataclass(frozen=True)
class MakeStep:
    """One make run of a build, and the paths it may write and read in the sandbox."""

    what: str                        # named in a failure: "config", "build", "driver module"
    argv: tuple[str, ...]
    writable: tuple[Path, ...]
    readable: tuple[Path, ...]
    env: tuple[tuple[str, str], ...]

    def box(self, settings: sandbox.Settings | None) -> sandbox.Box | None:
        return sandbox.Box(settings, self.writable, self.readable) if settings else None


def relocatable(config_text: str) -> bool:
    """Whether a kernel with this .config may be built relocated for ccache (Builder.steps):
    not with debug information, as ccache then hashes the working directory anyway
    (hash_dir) and the relative paths would end up in the DWARF decode_stacktrace.sh reads."""
    return not re.search(r"^CONFIG_DEBUG_INFO=y$", config_text, re.MULTILINE)


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
        # every build at once of this builder shares settings.jobs jobs (see jobserver.py)
        self.cores = Jobserver(settings.jobs)

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
        except sources.SourceError as exc:
            # nothing was built: a source that cannot be had (an archive whose lists are
            # expired, a tarball not there) says nothing of the kernel, nor of a series on it
            return BuildResult(who, Outcome.INFRA_ERROR, seconds=time.monotonic() - start,
                               error=StageError("source", str(exc)))
        try:
            config = kconfig.merge(source, self.settings.base_config, variant.fragments,
                                   self.cache)
        except kconfig.ConfigError as exc:
            return BuildResult(who, Outcome.BUILD_FAILED, seconds=time.monotonic() - start,
                               error=StageError("config", str(exc)))
        key = self.key(variant, source.version, config)
        env = BuildEnvironment(variant.source.name, source.version, config.key, config.base,
                               self._toolchain)
        with self.cache.lock("kernel", key):
            entry = self.cache.lookup("kernel", key)
            if entry is not None:
                built = json.loads((entry / "meta.json").read_text())["environment"]
                env = dataclasses.replace(env, kernel_release=built["kernel_release"],
                                          sandbox=built.get("sandbox", ""),
                                          sandbox_refused=tuple(built.get("sandbox_refused",
                                                                          ())))
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
        try:   # a series is untrusted: its Makefiles and scripts run while it is built
            confine = sandbox.decide(self.settings.sandbox, untrusted=bool(variant.patches))
        except sandbox.SandboxUnavailable as exc:
            return BuildResult(who, Outcome.INFRA_ERROR, key, environment=env,
                               error=StageError("sandbox", str(exc)))
        env = dataclasses.replace(env, sandbox=confine.how)
        log = self.cache.root / "logs" / key[:16] / "build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        with WorkTree(source, self.cache).lock() as work, \
                self.cores.slot(lambda: self.progress.detail(who, "waiting for a core")) as jobs, \
                tempfile.TemporaryDirectory(prefix="driver-", dir=work.root) as tmp:
            applied = work.checkout(variant.patches, confine.settings)
            if not applied.ok:
                return BuildResult(who, Outcome.PATCH_FAILED, key, environment=env,
                                   error=StageError("patch", applied.message, applied.detail))
            objdir, moddir = work.objdir(config.key), Path(tmp) / "driver"
            steps = self.steps(work.tree, objdir, moddir, relocated=relocatable(config.text))
            failure = None
            try:
                release = self._make_kernel(variant, config, work, steps, log,
                                            confine.settings, jobs)
                shutil.copytree(self.settings.driver, moddir)
                self._make(steps["driver"], log, who, confine.settings, jobs)
            except _Failed as failed:
                # paths relative to the tree, as a maintainer reads them in the patch
                excerpt = failed.failure.excerpt.replace(f"{work.tree}/", "")
                how = (failed.failure.reason if isinstance(failed.failure, proc.LimitExceeded)
                       else "failed")
                failure = StageError("build", f"{failed.what} {how} (full log: {log})",
                                     excerpt)
            except kconfig.ConfigError as exc:
                failure = StageError("config", f"after the patches: {exc}")
            except safefs.LinkRefused as exc:
                failure = StageError("build", str(exc))
            if confine.settings:     # what the series tried to write where it may not
                env = dataclasses.replace(env, sandbox_refused=tuple(sandbox.refused_writes(
                    log.read_text(errors="replace"), confine.settings)))
            if not failure:
                env = dataclasses.replace(env, kernel_release=release)
                try:
                    self._publish(variant, key, env, objdir, moddir, log)
                except safefs.LinkRefused as exc:
                    failure = StageError("build", str(exc))
            if failure:
                return BuildResult(who, Outcome.BUILD_FAILED, key, environment=env,
                                   error=failure)
        return BuildResult(who, Outcome.OK, key, self.cache.lookup("kernel", key),
                           environment=env)

    def steps(self, tree: Path, objdir: Path, moddir: Path, *,
              relocated: bool) -> dict[str, MakeStep]:
        """The make runs of a build: "config" (olddefconfig), "build", "driver".

        RELOCATED (see relocatable()): kbuild hands gcc absolute paths (srctree is absolute
        with O=); with CCACHE_BASEDIR they become relative, so the same source in another
        work tree (a git tree exported from a cached Debian source) hits ccache, as
        bench/ccache_paths.py measures.  gcc then sees ../linux/mm/gup.c, which kbuild's own
        -fmacro-prefix-map=$(srctree)/= no longer strips from __FILE__: KCFLAGS strips it,
        so the objects are the bytes they are without ccache.
        """
        ccache = Path(os.environ.get("CCACHE_DIR", str(self.cache.root / "ccache")))
        env = (("CCACHE_DIR", str(ccache)),)
        kernel_env = (*env, ("CCACHE_BASEDIR", str(self.cache.root))) if relocated else env
        # No -j: the jobs come from the jobserver, through MAKEFLAGS (_make).  Not -l
        # either: make 4.3 (bookworm) goes by the one-minute load average, which a lone
        # build's own jobs hold at the cores, so it then runs fewer than -j (with -l<cores>,
        # lone builds took about 1.2x as long in two comparisons across runs, 2026-12-07)
        make = ("make", "-C", str(tree), f"O={objdir}",
                *self._make_vars(),
                *([f"KCFLAGS=-fmacro-prefix-map={os.path.relpath(tree, objdir)}/="]
                  if relocated else []))
        # The source tree stays read-only: with O= kbuild writes only the build directory.
        return {
            "config": MakeStep("config", (*make, "olddefconfig"), (objdir, ccache), (tree,),
                               kernel_env),
            # `modules` as well: 6.12 needs Module.symvers for out-of-tree modules.
            "build": MakeStep("build", (*make, "bzImage", "modules"), (objdir, ccache),
                              (tree,), kernel_env),
            "driver": MakeStep("driver module", ("make", "-C", str(objdir), f"M={moddir}",
                                                 *self._make_vars(), "modules"),
                               (moddir, ccache), (tree, objdir), env),
        }

    def _make(self, step: MakeStep, log: Path, who: str,
              settings: sandbox.Settings | None, jobs: Jobs) -> None:
        def show(line: str) -> None:
            if m := _MAKE_STEP.match(line):
                self.progress.detail(who, f"{m.group(1)} {m.group(2)}")
        for path in step.writable:          # bwrap binds only what exists
            path.mkdir(parents=True, exist_ok=True)
        try:
            proc.run(step.argv, step.what, log=log, on_line=show,
                     env={**dict(step.env), "MAKEFLAGS": jobs.makeflags},
                     sandbox=step.box(settings), pass_fds=jobs.fds)
        except proc.CommandFailed as e:
            raise _Failed(step.what, e) from None

    def _make_kernel(self, variant: Variant, config: kconfig.MergedConfig, work: WorkTree,
                     steps: dict[str, MakeStep], log: Path,
                     settings: sandbox.Settings | None, jobs: Jobs) -> str:
        """olddefconfig where needed, bzImage and modules; the kernel release."""
        objdir = work.objdir(config.key)
        objdir.mkdir(parents=True, exist_ok=True)
        # Rewriting an identical .config would still make kbuild re-check everything.
        resolve = any(Path(f).name.startswith("Kconfig") for f in work.switched)
        if not safefs.regular(objdir, ".config") \
                or safefs.read_text(objdir, ".config") != config.text:
            safefs.write_text(objdir, ".config", config.text)
            resolve = True
        # On its own: mixed with build targets, kbuild builds them one by one, walking the
        # tree twice; and only when the config or a Kconfig file changed.
        if resolve:
            self._make(steps["config"], log, variant.name, settings, jobs)
        self._make(steps["build"], log, variant.name, settings, jobs)
        # a patch may change Kconfig: the fragments' options must still hold
        kconfig.check(safefs.read_text(objdir, ".config"),
                      [r for f in variant.fragments for r in kconfig.requests(f)], work.tree)
        return safefs.read_text(objdir, "include/config/kernel.release").strip()

    def _publish(self, variant: Variant, key: str, env: BuildEnvironment, objdir: Path,
                 moddir: Path, log: Path) -> None:
        with self.cache.publish("kernel", key) as out:
            for name, rel in ARTEFACTS.items():
                safefs.copy_out(objdir, rel, out / name)
            for ko in moddir.glob("*.ko"):
                safefs.copy_out(moddir, ko.name, out / ko.name)
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
