"""The sandbox for code from a patch series: bubblewrap, with its settings in data/sandbox.toml.

A series from the list brings Makefiles, Kconfig files and scripts that run while it is
applied and built.  Each such step runs under bwrap: no network, no capabilities, an
unprivileged user, a private /tmp, the host's system directories read-only and nothing else
of the host, except the paths the step names: writable (the work tree, the build directory,
ccache) or readable (the source tree, the build directory for the driver).  Every path keeps
its host name inside, so make sees the same tree and stays incremental.  Each step runs
within the limits of sandbox.toml: processes, file size, wall time and free disk (proc.Limits).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rig.core import datafiles, proc
from rig.core.status import InfraError


class SandboxUnavailable(InfraError):
    """An untrusted series, and no sandbox to build it in; the message says why."""


@dataclass(frozen=True)
class Settings:
    binary: str
    options: tuple[str, ...]
    uid: int
    gid: int
    system: tuple[str, ...]
    private_under: tuple[str, ...]
    keep_env: tuple[str, ...]
    refused: str                              # the message of a write the sandbox refused
    env: tuple[tuple[str, str], ...]          # set inside, over keep_env and the step's own
    limits: proc.Limits

    @classmethod
    def load(cls) -> Settings:
        data = datafiles.toml("sandbox.toml")
        lim = data["limits"]
        limits = proc.Limits(int(lim["processes"]), int(lim["file_size_mib"]) * proc.MIB,
                             float(lim["step_seconds"]), int(lim["disk_free_mib"]) * proc.MIB,
                             check_every=float(lim["disk_check_seconds"]))
        return cls(data["binary"], tuple(data["options"]), int(data["uid"]), int(data["gid"]),
                   tuple(data["system"]), tuple(data["private_under"]),
                   tuple(data["keep_env"]), data["refused"], tuple(data["env"].items()), limits)


def _private(top: str) -> tuple[list[str], list[str]]:
    """Files and folders under TOP that others may not read: (files, folders)."""
    files: list[str] = []
    folders: list[str] = []
    for root, dirs, names in os.walk(top):
        for d in list(dirs):
            path = os.path.join(root, d)
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode) and (mode & 0o005) != 0o005:
                folders.append(path)
                dirs.remove(d)          # hidden as a whole
        for n in names:
            path = os.path.join(root, n)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and not mode & 0o004:
                files.append(path)
    return sorted(files), sorted(folders)


@functools.cache
def _host_view(system: tuple[str, ...], private_under: tuple[str, ...]) -> tuple[str, ...]:
    """The bwrap mounts showing the host's system read-only, its private files hidden."""
    args: list[str] = []
    for path in system:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for top in private_under:
        files, folders = _private(top)
        for f in files:             # a device node on a nodev mount: cannot even be opened
            args += ["--ro-bind", "/dev/null", f]
        for d in folders:
            args += ["--tmpfs", d, "--remount-ro", d]
    return tuple(args)


def command(settings: Settings, argv: Sequence[str], *, writable: Iterable[Path] = (),
            readable: Iterable[Path] = (), cwd: Path | None = None,
            env: Mapping[str, str] | None = None,
            environ: Mapping[str, str] | None = None) -> list[str]:
    """The bwrap argv that runs ARGV in the sandbox, able to write WRITABLE and read READABLE.

    Those paths must exist.  Inside, the environment is ENV (the step's own variables), the
    variables keep_env names from ENVIRON (default: the rig's), and the settings' env.
    """
    environ = os.environ if environ is None else environ
    args = [settings.binary, *settings.options,
            "--uid", str(settings.uid), "--gid", str(settings.gid),
            *_host_view(settings.system, settings.private_under),
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # Readable before writable: a writable path inside a readable one stays writable.
    for path in _outermost_first(readable):
        args += ["--ro-bind", str(path), str(path)]
    for path in _outermost_first(writable):
        args += ["--bind", str(path), str(path)]
    # bwrap's own root (a tmpfs holding the mount points) would take writes too: refuse them.
    args += ["--remount-ro", "/"]
    inside = {k: environ[k] for k in settings.keep_env if k in environ}
    inside |= dict(env or {}) | dict(settings.env)
    for k, v in sorted(inside.items()):
        args += ["--setenv", k, v]
    args += ["--chdir", str(cwd or "/"), "--", *argv]
    return args


def _outermost_first(paths: Iterable[Path]) -> list[Path]:
    return sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: (len(p.parts), p))


@dataclass(frozen=True)
class Box:
    """The sandbox of one step: what it may write and read.  proc.run(sandbox=) calls it."""

    settings: Settings
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()

    @property
    def limits(self) -> proc.Limits:
        """The settings' limits, the free disk watched where the step writes."""
        return dataclasses.replace(self.settings.limits, watch=self.writable)

    def __call__(self, argv: Sequence[str], cwd: Path | None,
                 env: Mapping[str, str]) -> list[str]:
        return command(self.settings, argv, writable=self.writable, readable=self.readable,
                       cwd=cwd, env=env)


def refused_writes(log: str, settings: Settings, limit: int = 10) -> list[str]:
    """The lines of a step's LOG saying the sandbox refused a write, each once, in order."""
    found = dict.fromkeys(line.strip() for line in log.splitlines()
                          if settings.refused and settings.refused in line)
    return list(found)[:limit]


_WORKS: set[Settings] = set()


def unavailable(settings: Settings) -> str | None:
    """Why the sandbox cannot run here (no bwrap, no user namespaces), or None.  Only a
    sandbox that worked is remembered: bwrap may be installed later in the same process
    (a first run installs the host packages after something asked)."""
    if settings in _WORKS:
        return None
    try:
        proc.run(command(settings, ["true"], environ={}), "sandbox check")
    except proc.CommandFailed as e:
        if e.status is None:
            return f"{settings.binary} is not installed (Debian package bubblewrap)"
        return f"{settings.binary} cannot set up a sandbox here: {e.excerpt.strip()}"
    _WORKS.add(settings)
    return None


@dataclass(frozen=True)
class Decision:
    """How a build runs: in the sandbox (SETTINGS) or not (None), and why, for the results."""

    settings: Settings | None
    how: str


def decide(enabled: bool, untrusted: bool, settings: Settings | None = None) -> Decision:
    """The sandbox for a build (SETTINGS, default data/sandbox.toml's); an UNTRUSTED one (a
    series) is refused unconfined unless the user turned the sandbox off (ENABLED false,
    --no-sandbox)."""
    if not enabled:
        return Decision(None, "none: --no-sandbox")
    settings = settings or Settings.load()
    why = unavailable(settings)
    if why is None:
        return Decision(settings, proc.first_line([settings.binary, "--version"]))
    if untrusted:
        raise SandboxUnavailable(f"refusing to build a patch series outside a sandbox: {why}; "
                                 "--no-sandbox builds it anyway, unconfined")
    return Decision(None, f"none: {why}")
