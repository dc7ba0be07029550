"""The sandbox for code from a patch series: bubblewrap, with its settings in data/sandbox.toml.

A series from the list brings Makefiles, Kconfig files and scripts that run while it is
applied and built.  Each such step runs under bwrap: no network, no capabilities, an
unprivileged user, a private /tmp, the host's system directories read-only and nothing else
of the host, except the paths the step names: writable (the work tree, the build directory,
ccache) or readable (the patch, the driver's source).  Every path keeps its host name inside,
so make sees the same tree and stays incremental.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up here; the message says why."""


@dataclass(frozen=True)
class Settings:
    binary: str
    options: tuple[str, ...]
    uid: int
    gid: int
    system: tuple[str, ...]
    private_under: tuple[str, ...]
    keep_env: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()     # set inside, after keep_env

    @classmethod
    def load(cls) -> Settings:
        data = tomllib.loads(resources.files("rig").joinpath("data/sandbox.toml").read_text())
        return cls(data["binary"], tuple(data["options"]), int(data["uid"]), int(data["gid"]),
                   tuple(data["system"]), tuple(data["private_under"]),
                   tuple(data["keep_env"]), tuple(data["env"].items()))


@dataclass(frozen=True)
class Step:
    """One command that runs code from a series, and what it may touch."""

    argv: Sequence[str]
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()
    cwd: Path | None = None


def _private(top: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
    return tuple(sorted(files)), tuple(sorted(folders))


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
        for f in files:
            args += ["--ro-bind", "/dev/null", f]
        for d in folders:
            args += ["--tmpfs", d, "--remount-ro", d]
    return tuple(args)


def command(settings: Settings, step: Step, environ: Mapping[str, str] | None = None) -> list[str]:
    """The bwrap argv that runs STEP.argv in the sandbox.

    Writable paths must exist (bwrap binds them as they are); ENVIRON (default: the rig's
    own) supplies the variables named in keep_env.
    """
    environ = os.environ if environ is None else environ
    args = [settings.binary, *settings.options,
            "--uid", str(settings.uid), "--gid", str(settings.gid),
            *_host_view(settings.system, settings.private_under),
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # Readable before writable: a writable path inside a readable one stays writable.
    for path in _outermost_first(step.readable):
        args += ["--ro-bind", str(path), str(path)]
    for path in _outermost_first(step.writable):
        args += ["--bind", str(path), str(path)]
    env = {k: environ[k] for k in settings.keep_env if k in environ} | dict(settings.env)
    for k, v in sorted(env.items()):
        args += ["--setenv", k, v]
    args += ["--chdir", str(step.cwd or "/"), "--", *step.argv]
    return args


def _outermost_first(paths: Iterable[Path]) -> list[Path]:
    return sorted({Path(os.path.abspath(p)) for p in paths}, key=lambda p: len(p.parts))


@functools.cache
def unavailable(settings: Settings) -> str | None:
    """Why the sandbox cannot run here (no bwrap, no user namespaces), or None."""
    try:
        proc = subprocess.run(command(settings, Step(["true"]), {}), capture_output=True,
                              text=True, timeout=30, check=False)
    except FileNotFoundError:
        return f"{settings.binary} is not installed (Debian package bubblewrap)"
    except subprocess.TimeoutExpired:
        return f"{settings.binary} did not start a trivial command within 30 s"
    if proc.returncode != 0:
        return f"{settings.binary} cannot set up the sandbox: {proc.stderr.strip()}"
    return None


@functools.cache
def version(settings: Settings) -> str:
    """bwrap's version, e.g. "bubblewrap 0.8.0"."""
    return subprocess.run([settings.binary, "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()
