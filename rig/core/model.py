"""Typed requests and results passed between the rig's stages.

Each stage takes one of these and returns another; nothing else crosses a stage boundary,
so a shard (one variant on one machine) can run any stage on its own.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

GUEST_MEMORY_MB = 1024               # a guest's memory unless its request says otherwise


class Outcome(str, enum.Enum):
    """What became of one variant.  The values are the results schema's strings."""

    OK = "ok"                        # built, booted, the whole suite ran without a crash
    TESTS_RAN = "tests-ran"          # the suite ran, but the guest crashed or hung in a test
    PATCH_FAILED = "patch-failed"
    BUILD_FAILED = "build-failed"
    BOOT_FAILED = "boot-failed"      # QEMU or the kernel died before the ready line
    PANICKED = "panicked"            # kernel panic before the ready line
    HUNG = "hung"                    # console went silent before the ready line
    INFRA_ERROR = "infra-error"      # the rig itself could not do its job (disk, QEMU missing)


class ConsoleEvent(str, enum.Enum):
    """What the console watcher saw that ended a wait."""

    READY = "ready"
    PANIC = "panic"
    SPLAT = "splat"                  # Oops, BUG, WARNING, KASAN, lockdep... with its trace
    SILENT = "silent"                # no output for the silence deadline
    QEMU_EXITED = "qemu-exited"
    TIMEOUT = "timeout"              # output kept coming but the ready line never did


@dataclass(frozen=True)
class Patch:
    """One patch of a series, as read from a file, a series folder or an mbox."""

    origin: Path                     # the file it came from (an mbox may hold several)
    index: int                       # position in the series, from 1
    subject: str
    author: str
    message_id: str
    diff: str                        # the text handed to git apply
    sha256: str                      # of the diff alone, so mail headers don't change keys
    prefix: str = ""                 # the subject's "[PATCH v2 3/7]" tags, stripped from subject


@dataclass(frozen=True)
class SourceSpec:
    """Where a kernel tree comes from."""

    name: str
    kind: str                        # "debian" | "git" | "tarball"
    package: str = ""                # debian: binary package, e.g. linux-source-6.1
    suite: str = ""                  # debian: the archive's suite that has it ("": host's apt)
    path: Path | None = None         # git: the repository; tarball: the archive
    ref: str = ""                    # git: the commit-ish


@dataclass(frozen=True)
class Variant:
    """A kernel to test: a source, config fragments and an ordered patch list."""

    name: str
    source: SourceSpec
    fragments: tuple[Path, ...]
    patches: tuple[Patch, ...] = ()
    series: str = ""                 # the patch set it came from, for the report

    def first(self, k: int) -> Variant:
        """The variant with only the first k patches applied (bisection steps)."""
        return Variant(f"{self.name}@{k}", self.source, self.fragments, self.patches[:k],
                       self.series)


@dataclass
class PreparedSource:
    """A kernel tree unpacked in the cache, pristine, with its identity."""

    spec: SourceSpec
    tree: Path
    version: str                     # package version, commit id or tarball hash


@dataclass
class StageError:
    """A failure worth showing a maintainer: what failed, where, and an excerpt."""

    stage: str
    message: str
    excerpt: str = ""


@dataclass(frozen=True)
class BuildSettings:
    """How every variant is built: RunConfig.build_settings makes it."""

    driver: Path                     # the test driver module's source directory
    base_config: str = "tinyconfig"
    jobs: int = os.cpu_count() or 1
    ccache: bool = True
    sandbox: bool = True             # false: --no-sandbox, a series' code runs unconfined


@dataclass(frozen=True)
class Toolchain:
    gcc: str
    ld: str
    make: str


@dataclass(frozen=True)
class BuildEnvironment:
    """What a build depends on, as the results record it."""

    source: str                      # the source's name, e.g. "debian-6-1"
    source_version: str              # package version, commit id or tarball hash
    config_hash: str
    base_config: str
    toolchain: Toolchain
    kernel_release: str = ""         # include/config/kernel.release of the build
    sandbox: str = ""                # what the build ran in, e.g. "bubblewrap 0.8.0"
    sandbox_refused: tuple[str, ...] = ()   # build log lines: writes the sandbox refused


@dataclass
class BuildResult:
    variant: str
    outcome: Outcome                 # OK, PATCH_FAILED, BUILD_FAILED or INFRA_ERROR (no sandbox)
    key: str = ""                    # content address of the artefacts
    artefacts: Path | None = None    # bzImage, System.map, vmlinux, .config, umem_test.ko, build.log
    cache_hit: bool = False
    seconds: float = 0.0
    error: StageError | None = None
    environment: BuildEnvironment | None = None   # None when the source or config failed

    @property
    def bzimage(self) -> Path:
        assert self.artefacts is not None
        return self.artefacts / "bzImage"

    @property
    def boot_image(self) -> Path:
        """What the rig's QEMU boots: vmlinux, at its PVH entry (kconfigs/qemu-guest.config),
        with no real-mode setup and nothing to decompress: 1.7 s less to first userspace
        under TCG than the bzImage (measured 2026-12-03, 6.1.192)."""
        assert self.artefacts is not None
        return self.artefacts / "vmlinux"

    @property
    def module(self) -> Path:
        assert self.artefacts is not None
        return self.artefacts / "umem_test.ko"


@dataclass
class ImageResult:
    path: Path                       # the cached raw/qcow2 disk image, never written by a boot
    key: str                         # hash of the recipe
    host_key_pub: str                # the guest's pinned ssh host key, "ssh-ed25519 AAAA..."
    client_key: Path                 # private key the rig logs in with (0600)


@dataclass(frozen=True)
class BootRequest:
    """One boot; a reboot is a new request (dataclasses.replace), never this one changed."""

    kernel: Path
    image: ImageResult
    accel: str = "auto"              # auto | kvm | tcg
    console_log: Path | None = None
    boot_timeout: float = 120.0      # ready line must come within this
    silence_timeout: float = 45.0    # no console output this long means hung
    memory_mb: int = GUEST_MEMORY_MB
    cpus: int = 1
    workdir: Path | None = None      # per-boot files (the overlay); None: the system's /tmp
    pytest_server: bool = False      # a test stage's: pytest imported before the ready line


@dataclass(frozen=True)
class BootEnvironment:
    """What a boot reports about itself: the machine the kernel ran on."""

    accelerator: str                 # what the boot really used: "kvm" or "tcg"
    qemu_version: str
    memory_mb: int
    cpus: int


@dataclass
class ConsoleReport:
    event: ConsoleEvent
    excerpt: str = ""                # the splat with its trace, or the console tail
    seconds: float = 0.0             # since QEMU started
    # a splat printed when it happened (an Oops, a WARNING), not when a watchdog noticed
    # something that began earlier (a hung task, a soft lockup): it belongs to the test then
    attributable: bool = True


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
