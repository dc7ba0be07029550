"""Shared fixtures: the base kernel the end-to-end tests boot, built by the rig itself; and
the fence around the host tests.

A test without the e2e marker is self-contained: its rig cache is a temporary directory, and
reaching the user's cache, apt or the network fails it (an audit hook sees every process
started, file opened and socket connected, whatever code does it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from pathlib import Path

import pytest

from rig.core import hostdeps
from rig.core.cache import Cache, default_root
from rig.core.progress import Progress
from rig.flows import config
from rig.kernel.build import Builder

USER_CACHE = os.path.realpath(default_root())
# apt may refresh its lists from the network; mmdebstrap downloads a system.
PROGRAMS_OUT_OF_BOUNDS = {"apt", "apt-get", "apt-cache", "mmdebstrap"}
PATH_EVENTS = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.replace",
               "os.remove", "os.rmdir", "shutil.rmtree", "os.chmod"}
_fence: list[str] | None = None      # the current host test's trespasses; None: no fence


def _programs(argv) -> list[str]:
    """The program a process runs, and under `sh -c` the words of its script."""
    argv = [os.fsdecode(a) for a in ([argv] if isinstance(argv, str | bytes) else argv)]
    words = argv[:1] + (argv[2].split() if argv[1:2] == ["-c"] and len(argv) > 2 else [])
    return [os.path.basename(w) for w in words]


def _local(address) -> bool:
    if not isinstance(address, tuple):             # AF_UNIX
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _trespass(event: str, args: tuple) -> str | None:
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
        argv = args[1]
        banned = PROGRAMS_OUT_OF_BOUNDS.intersection(_programs(argv))
        return f"runs {' '.join(sorted(banned))}: {argv}" if banned else None
    if event == "socket.connect" and not _local(args[1]):
        return f"connects to {args[1]}"
    if event == "socket.getaddrinfo" and args[0] and not _local((os.fsdecode(args[0]),)):
        return f"resolves {args[0]}"
    if event in PATH_EVENTS:
        for arg in args:
            if isinstance(arg, str | bytes | os.PathLike):
                path = os.fsdecode(arg)
                if path == USER_CACHE or path.startswith(USER_CACHE + os.sep):
                    return f"touches the user's cache: {event} {path}"
    return None


def _audit(event: str, args: tuple) -> None:
    if _fence is None:
        return
    found = _trespass(event, args)
    if found:
        _fence.append(found)
        raise PermissionError(f"host tests stay off apt, the network and the user's cache: "
                              f"{found}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def fenced(request, tmp_path_factory, monkeypatch):
    """Host tests get a throw-away rig cache and fail on a trespass, even a caught one."""
    global _fence
    if request.node.get_closest_marker("e2e"):
        request.getfixturevalue("host_packages")
        yield
        return
    monkeypatch.setenv("RIG_CACHE", str(tmp_path_factory.mktemp("rig-cache")))
    _fence = []
    try:
        yield
    finally:
        found, _fence = _fence, None
    if found:
        pytest.fail("host test went out of bounds:\n  " + "\n  ".join(found), pytrace=False)


def pytest_sessionstart(session):
    """A run that includes the e2e tests installs the host packages before collection, as
    every command does first: the host tests' skip marks ask at collection whether bwrap and
    qemu-utils are there, and on a fresh CI machine 20 of them skipped so.  `tox -e unit`
    (-m "not e2e") installs nothing; where the rig may not install (not root), the marks say
    what is missing."""
    if "not e2e" in (session.config.option.markexpr or ""):
        return
    with contextlib.suppress(hostdeps.MissingPackages):
        _ensure_host_packages()


def _ensure_host_packages() -> None:
    hostdeps.ensure(["source", "build", "image", "boot"], config.load().install_packages)


@pytest.fixture(scope="session")
def host_packages() -> None:
    """What every command does first: on a fresh machine the first e2e test may be one that
    calls a library (bisect, vet) rather than the command, and would find no bwrap."""
    _ensure_host_packages()


@pytest.fixture(scope="session")
def base_kernel() -> Path:
    """RIG_KERNEL if set, else the default base variant's boot image (a cache hit when built)."""
    if os.environ.get("RIG_KERNEL"):
        return Path(os.environ["RIG_KERNEL"])
    cfg = config.load()
    built = Builder(cfg.build_settings, Cache(), Progress(live=False)).build(
        cfg.variant(cfg.base))
    assert built.error is None, built.error
    return built.boot_image
