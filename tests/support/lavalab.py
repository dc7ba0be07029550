"""A LAVA lab on this machine, for the end-to-end tests of `rig run --lab`.

Debian bookworm's LAVA (lava-server, lava-dispatcher) in a clean root built with mmdebstrap
(tests/lava/lab.toml), never installed on the host: the host is shared with other work, and a
lab in its own root comes and goes whole.  The root, with postgres and LAVA installed and the
database migrated, is built once into the rig's cache (kind "lava-root", keyed by the recipe);
each lab mounts an overlay on it, so a warm start takes seconds and never changes the cache.

    with LocalLava(cache, workdir, artefacts, devices=2) as lab:
        lab.url, lab.token, lab.device_type

Started by hand, as without systemd: postgres (a unix socket only, so no port is shared with
the host), gunicorn on a free port of 127.0.0.1, the scheduler and one worker.  Whatever
happens, leaving the block kills every process it started, by pid and process group, then
any process still running inside the root, and unmounts what it mounted in reverse order.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from rig.core.cache import Cache, digest
from rig.guest.qemu import free_port
from support.paths import TESTS

RECIPE = TESTS / "lava" / "lab.toml"
KIND = "lava-root"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
       "DEBIAN_FRONTEND": "noninteractive"}
WORKER = "rig-worker"
# Character devices of the lab's own /dev: (name, major, minor).
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
            ("urandom", 1, 9), ("tty", 5, 0))
PG_PORT = 5432


class LabSetupError(Exception):
    pass


@dataclass(frozen=True)
class Recipe:
    suite: str
    mirror: str
    postgres: str
    base_packages: tuple[str, ...]
    lava_packages: tuple[str, ...]
    device_dictionary: str
    ping_interval: int

    @classmethod
    def load(cls, path: Path = RECIPE) -> Recipe:
        d = tomllib.loads(path.read_text())
        return cls(d["suite"], d["mirror"], str(d["postgres"]), tuple(d["base_packages"]),
                   tuple(d["lava_packages"]), d["device_dictionary"], int(d["ping_interval"]))


class _Mounts:
    """Mounts made under ROOT, undone in reverse order; a lazy unmount where one is busy."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def mount(self, *args: str, at: Path) -> None:
        at.mkdir(parents=True, exist_ok=True)
        _run(["mount", *args, str(at)])
        self.points.append(at)
        if "--bind" in args:
            # Where the host's mounts propagate, what is mounted on the bind must not.
            _run(["mount", "--make-private", str(at)])

    def undo(self) -> None:
        while self.points:
            point = self.points.pop()
            if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def _run(cmd: list[str], **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=False, **kw)
    if proc.returncode != 0:
        raise LabSetupError(f"{' '.join(cmd[:6])} failed ({proc.returncode}): "
                            f"{(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout


def _system_mounts(mounts: _Mounts, root: Path) -> None:
    """What daemons in ROOT need: /proc, /sys, and a /dev of their own (never a bind of the
    host's: nothing done in the root, or to its directory, can reach the host's device
    nodes), with a devpts instance and a /dev/shm (postgres needs one)."""
    mounts.mount("-t", "proc", "proc", at=root / "proc")
    mounts.mount("-t", "sysfs", "sysfs", at=root / "sys")
    dev = root / "dev"
    mounts.mount("-t", "tmpfs", "-o", "mode=755", "rig-lab-dev", at=dev)
    for name, major, minor in _DEVICES:
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)               # mknod's mode went through the umask
    mounts.mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts",
                 at=dev / "pts")
    mounts.mount("-t", "tmpfs", "-o", "mode=1777", "shm", at=dev / "shm")
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"),
                         ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev / name)


class _Processes:
    """Daemons started in ROOT, each in a session of its own; stop() ends them all."""

    def __init__(self, root: Path, logs: Path):
        self.root = root
        self.logs = logs
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], user: str | None = None) -> subprocess.Popen:
        chroot = ["chroot", f"--userspec={user}:{user}"] if user else ["chroot"]
        with open(self.logs / f"{name}.log", "ab") as log:
            # preexec_fn: the test process runs no threads while a lab starts.
            proc = subprocess.Popen(
                [*chroot, str(self.root), *cmd], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
                preexec_fn=_die_with_parent)  # noqa: PLW1509
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            _end_group(proc)
        self.started.clear()
        # What the daemons started in sessions of their own (lava-run, QEMU): by pid, as
        # found by their root directory.
        for pid in _pids_in(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child before exec: if the test is killed outright (SIGKILL), so is the daemon
    (chroot execs it, so the daemon is this very process)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _end_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)


def _pids_in(root: Path) -> list[int]:
    found = []
    target = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == target:
                    found.append(int(entry.name))
    return found


# -- the cached root -------------------------------------------------------------------------

def ensure_root(cache: Cache, logs: Path, log=print) -> tuple[Path, float]:
    """The cached root for the recipe (built first if missing; its daemons log into LOGS)
    and the seconds spent on it."""
    recipe = Recipe.load()
    key = digest(RECIPE.read_bytes())
    start = time.monotonic()
    with cache.lock(KIND, key):
        if cache.lookup(KIND, key) is None:
            log(f"building the LAVA lab's root {key[:12]} (mmdebstrap, then LAVA: minutes)")
            with cache.publish(KIND, key) as scratch:
                _build(recipe, scratch / "root", logs)
    return cache.path(KIND, key) / "root", time.monotonic() - start


def _build(recipe: Recipe, root: Path, logs: Path) -> None:
    password = secrets.token_hex(16)
    pg = f"/etc/postgresql/{recipe.postgres}/main"
    database = json.dumps({"DATABASES": {"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": "lavaserver",
        "USER": "lavaserver", "PASSWORD": password, "HOST": "/run/postgresql",
        "PORT": PG_PORT}}})
    _run(["mmdebstrap", "--mode=root", "--variant=minbase",
          "--include=" + ",".join(recipe.base_packages),
          # postgres on its unix socket only (no TCP port to share with the host; the port
          # only names the socket, and pg_createcluster picks one that is free on the host),
          # LAVA's user by password over it; written before LAVA's postinst makes its database.
          f"--customize-hook=echo \"listen_addresses = ''\" >\"$1\"{pg}/conf.d/rig.conf",
          f"--customize-hook=echo 'port = {PG_PORT}' >>\"$1\"{pg}/conf.d/rig.conf",
          f"--customize-hook=echo 'ssl = off' >>\"$1\"{pg}/conf.d/rig.conf",
          f"--customize-hook=sed -i '1i local all lavaserver scram-sha-256' \"$1\"{pg}/pg_hba.conf",
          "--customize-hook=mkdir -p \"$1\"/etc/lava-server/settings.d",
          (f"--customize-hook=echo '{database}' >\"$1\"/etc/lava-server/settings.d/"
           "00-database.yaml"),
          recipe.suite, str(root), recipe.mirror])
    mounts = _Mounts()
    procs = _Processes(root, logs)
    try:
        _system_mounts(mounts, root)
        _start_postgres(procs, recipe, root)
        _run(["chroot", str(root), "apt-get", "update", "-q"])
        _run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends",
              *recipe.lava_packages])
        _run(["chroot", str(root), "apt-get", "clean"])
    finally:
        procs.stop()
        mounts.undo()
        _unmount_all(root)
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def _start_postgres(procs: _Processes, recipe: Recipe, root: Path) -> None:
    v = recipe.postgres
    # /run is empty in a root mmdebstrap made (no systemd-tmpfiles): the socket's directory.
    _run(["chroot", str(root), "install", "-d", "-o", "postgres", "-g", "postgres", "-m",
          "2775", "/run/postgresql"])
    procs.start("postgres", [f"/usr/lib/postgresql/{v}/bin/postgres", "-D",
                             f"/var/lib/postgresql/{v}/main", "-c",
                             f"config_file=/etc/postgresql/{v}/main/postgresql.conf"],
                user="postgres")
    deadline = time.monotonic() + 60
    while subprocess.run(["chroot", str(root), "pg_isready", "-q", "-h", "/run/postgresql",
                          "-p", str(PG_PORT)], env=ENV, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise LabSetupError(f"postgres did not start; see {procs.logs}/postgres.log")
        time.sleep(0.5)


def _mounted_under(path: Path) -> list[str]:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return sorted((p for p in points if p == target or p.startswith(target + "/")),
                  reverse=True)


def _unmount_all(root: Path) -> None:
    """Detach anything still mounted under ROOT (a lazy unmount never fails)."""
    for point in _mounted_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# -- a running lab ---------------------------------------------------------------------------

@dataclass
class LocalLava:
    cache: Cache
    workdir: Path
    artefacts: Path                       # bound into the root at the same path
    devices: int = 2
    device_type: str = "qemu"
    offline_type: str = "rig-offline"     # one device on a worker that never comes: jobs wait
    url: str = ""
    token: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.workdir / "root"
        self._mounts = _Mounts()
        self._procs = _Processes(self.root, self.workdir)

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._procs.stop()
        self._mounts.undo()
        _unmount_all(self.root)
        # What the lab wrote (job downloads of 800 MB each) goes with it, once nothing is
        # mounted there any more.
        if not _mounted_under(self.workdir):
            for scratch in (self.workdir / "upper", self.workdir / "work"):
                shutil.rmtree(scratch, ignore_errors=True)

    def _start(self) -> None:
        recipe = Recipe.load()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cached, self.timings["root"] = ensure_root(self.cache, self.workdir)
        start = time.monotonic()
        upper, work = self.workdir / "upper", self.workdir / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        self._mounts.mount("-t", "overlay", "overlay", "-o",
                           f"lowerdir={cached},upperdir={upper},workdir={work}", at=self.root)
        _system_mounts(self._mounts, self.root)
        self._mounts.mount("--bind", str(self.artefacts),
                           at=self.root / str(self.artefacts.resolve()).lstrip("/"))
        _start_postgres(self._procs, recipe, self.root)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        chroot = ["chroot", str(self.root)]
        _run([*chroot, "sh", "-c", ("mkdir -p /var/log/lava-server /var/log/lava-dispatcher"
                                    " && chown lavaserver: /var/log/lava-server")])
        self._procs.start("gunicorn", [
            "gunicorn3", "lava_server.wsgi", "--log-file", "/var/log/lava-server/gunicorn.log",
            "-u", "lavaserver", "-g", "lavaserver", "--worker-class", "eventlet",
            "--workers", "2", "--bind", f"127.0.0.1:{port}"])
        self._procs.start("scheduler", ["lava-server", "manage", "lava-scheduler", "--level",
                                        "INFO", "--log-file",
                                        "/var/log/lava-server/lava-scheduler.log"])
        manage = [*chroot, "lava-server", "manage"]
        _run([*manage, "users", "add", "rig", "--superuser", "--staff", "--passwd",
              secrets.token_hex(12)])
        self.token = _run([*manage, "tokens", "add", "--user", "rig"]).strip().splitlines()[-1]
        worker_token = _token_line(_run([*manage, "workers", "add", WORKER]))
        _run([*manage, "workers", "add", "nobody"])          # never started
        devices = self.root / "etc/lava-server/dispatcher-config/devices"
        for dtype, worker, names in (
                (self.device_type, WORKER, [f"qemu{i:02d}" for i in range(1, self.devices + 1)]),
                (self.offline_type, "nobody", ["offline01"])):
            _run([*manage, "device-types", "add", dtype])
            for name in names:
                (devices / f"{name}.jinja2").write_text(recipe.device_dictionary)
                _run([*manage, "devices", "add", "--device-type", dtype, "--worker", worker,
                      name])
        self._procs.start("worker", [
            "lava-worker", "--level", "INFO", "--url", self.url, "--token", worker_token,
            "--name", WORKER, "--ping-interval", str(recipe.ping_interval),
            "--log-file", "/var/log/lava-dispatcher/lava-worker.log"])
        self._wait_online()
        self.timings["start"] = time.monotonic() - start

    def _wait_online(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                req = urllib.request.Request(f"{self.url}api/v0.2/workers/{WORKER}/")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if json.loads(resp.read()).get("state") == "Online":
                        return
            time.sleep(1)
        raise LabSetupError(f"the LAVA worker did not come online; see {self.workdir}/*.log "
                            f"and {self.root}/var/log/")


def _token_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("Token: "):
            return line.split(None, 1)[1].strip()
    raise LabSetupError(f"no worker token in {text!r}")


