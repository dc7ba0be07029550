"""Host commands, the one way every stage runs them: logged, timed, and excerpted on failure.

A command either captures its output (short commands: git, apt-cache, qemu-img) or streams it
into a log file line by line, telling the caller each line (make, mmdebstrap), so that a long
stage can show what it is doing.  A failure raises CommandFailed with the excerpt a maintainer
reads first: the compiler's first error, git's or apt's error lines, make's "***" lines, or
else the last lines; and with the log's path when there is one.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from rig.core.status import InfraError

MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one confined step may use (rig/data/sandbox.toml [limits])."""

    processes: int                   # RLIMIT_NPROC
    file_size: int                   # RLIMIT_FSIZE, bytes
    seconds: float                   # wall time; past it the step's process group is killed
    disk_free: int = 0               # bytes that must stay free where the step writes
    watch: tuple[Path, ...] = ()     # where it writes
    check_every: float = 5.0


class Sandbox(Protocol):
    """Turns a step's argv, cwd and own variables into the argv that runs it confined
    (rig.kernel.sandbox.Box), and says the step's limits."""

    @property
    def limits(self) -> Limits: ...

    def __call__(self, argv: Sequence[str], cwd: Path | None,
                 env: Mapping[str, str]) -> list[str]: ...

EXCERPT_LINES = 12
_COMPILER_ERROR = re.compile(r"^\S+?:\d+:(?:\d+:)? (?:fatal )?error: ")
_TOOL_ERROR = re.compile(r"^(?:error|fatal|E|ERROR|mmdebstrap): ")


@dataclass(frozen=True)
class Ran:
    argv: tuple[str, ...]
    status: int
    stdout: str                      # with stderr merged in when the output went to a log
    stderr: str
    seconds: float


class CommandFailed(InfraError):
    """A command that did not succeed; WHAT says what it was for."""

    def __init__(self, what: str, argv: Sequence[str], status: int | None, excerpt: str,
                 log: Path | None = None):
        self.what, self.argv, self.status = what, tuple(argv), status
        self.excerpt, self.log = excerpt, log
        how = "is not installed" if status is None else f"failed (exit {status})"
        where = f" (full log: {log})" if log else ""
        super().__init__(f"{what}: `{self.argv[0]}` {how}{where}")

    def detailed(self) -> str:
        """The message with the excerpt, for an error that ends the command."""
        return f"{self}:\n{self.excerpt}" if self.excerpt else str(self)


class LimitExceeded(CommandFailed):
    """A confined step stopped (or never started) at one of its Limits; REASON says which,
    with the figures, and the excerpt is the last lines of its output."""

    def __init__(self, what: str, argv: Sequence[str], reason: str, output: str,
                 log: Path | None = None):
        super().__init__(what, argv, -signal.SIGKILL, "\n".join(output.splitlines()[
            -EXCERPT_LINES:]), log)
        self.reason = reason
        self.args = (f"{what}: {reason}" + (f" (full log: {log})" if log else ""),)


def _short_of_disk(limits: Limits) -> str:
    """Why the disk where LIMITS' step writes is too full to go on, or ""."""
    for path in limits.watch:
        free = shutil.disk_usage(path).free
        if free < limits.disk_free:
            return (f"{free // MIB} MiB free on the file system of {path}, "
                    f"{limits.disk_free // MIB} MiB needed")
    return ""


@contextlib.contextmanager
def _watched(pid: int, limits: Limits, started: float) -> Iterator[list[str]]:
    """While the block runs, kill PID's process group when LIMITS' wall time is over or the
    disk runs short; the list yielded then holds why."""
    why: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(min(limits.check_every,
                                max(0.0, started + limits.seconds - time.monotonic()))):
            if time.monotonic() >= started + limits.seconds:
                why.append(f"timed out after {limits.seconds:g} s")
            elif short := _short_of_disk(limits):
                why.append(f"stopped before the disk is full: {short}")
            if why:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield why
    finally:
        done.set()
        watcher.join()


def _rlimits(limits: Limits, cgroup: Path | None) -> Callable[[], None]:
    procs = str(cgroup / "cgroup.procs") if cgroup is not None else ""

    def apply() -> None:          # in the child, before bwrap: every process inside inherits
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        if procs:                 # plain system calls: only they are safe after a fork
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
    return apply


_CGROUPS = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def _pids_cgroup(processes: int) -> Iterator[Path | None]:
    """For root, whom the kernel exempts from RLIMIT_NPROC: a pids cgroup allowing PROCESSES,
    under the rig's own (v1 hierarchy "pids", or v2 with pids delegated); None for another
    user, or where root may not make one (then the processes are not bounded)."""
    group = None
    if os.geteuid() == 0:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            top = (_CGROUPS / "pids" if "pids" in controllers.split(",")
                   else _CGROUPS if controllers == "" else None)
            if top is None:
                continue
            candidate = top / path.lstrip("/") / f"umem-rig-{os.getpid()}-{threading.get_ident()}"
            try:
                candidate.mkdir()
            except OSError:
                continue
            if (candidate / "pids.max").exists():
                (candidate / "pids.max").write_text(str(processes))
                group = candidate
                break
            candidate.rmdir()
    try:
        yield group
    finally:
        if group is not None:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for _ in range(100):           # the killed are gone from it a moment later
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def excerpt(text: str, limit: int = EXCERPT_LINES) -> str:
    """The lines of a failed command's output worth showing first."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _COMPILER_ERROR.match(line):
            start = i - 1 if i > 0 and ": In function " in lines[i - 1] else i
            return "\n".join(lines[start:start + limit])
    for chosen in ([ln for ln in lines if _TOOL_ERROR.match(ln)],
                   [ln for ln in lines if ln.startswith("make") and "***" in ln]):
        if chosen:
            return "\n".join(chosen[:limit])
    return "\n".join(lines[-limit:])


def run(argv: Sequence[str], what: str, *, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, input: bytes | str | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL, log: Path | None = None,
        on_line: Callable[[str], None] | None = None, ok: tuple[int, ...] = (0,),
        check: bool = True, sandbox: Sandbox | None = None,
        pass_fds: tuple[int, ...] = ()) -> Ran:
    """Run ARGV; with LOG, append its merged output there and pass each line to ON_LINE.

    Raises CommandFailed when the program is missing, or (with CHECK) when its status is not
    in OK.  ENV, when given, is added to the rig's own environment; in a SANDBOX it is all
    of the rig's environment the command gets, besides what the sandbox lets through, and
    it runs within the sandbox's limits: LimitExceeded, whatever CHECK, when it reaches one.
    PASS_FDS stay open in the command (through the sandbox too).
    """
    step = tuple(map(str, argv))         # what a failure names, sandbox or not
    limits = sandbox.limits if sandbox is not None else None
    if sandbox is not None:
        argv, env = sandbox(argv, cwd, env or {}), None
    if limits is not None and (short := _short_of_disk(limits)):
        raise LimitExceeded(what, step, f"not started: {short}", "", log)
    full_env = {**os.environ, **env} if env is not None else None
    start = time.monotonic()
    text = not isinstance(input, bytes)
    popen: dict = {"cwd": cwd, "env": full_env, "pass_fds": pass_fds}
    try:
        with contextlib.ExitStack() as stack:
            if limits is not None:
                cgroup = stack.enter_context(_pids_cgroup(limits.processes))
                popen |= {"preexec_fn": _rlimits(limits, cgroup), "start_new_session": True}
            if log is None:
                with subprocess.Popen(list(argv),
                                      stdin=stdin if input is None else subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=text, errors="replace" if text else None,
                                      **popen) as child, \
                        _limited(child.pid, limits, start) as why:
                    out, err = child.communicate(input)
                if not text:
                    out, err = (b.decode("utf-8", "replace") for b in (out, err))
                status = child.returncode
            else:
                out = err = ""
                status, why = _streamed(argv, popen, stdin, log, on_line, limits, start)
    except FileNotFoundError:
        raise CommandFailed(what, argv, None, "", log) from None
    if why:
        shown = log.read_text(errors="replace") if log else f"{out}{err}"
        raise LimitExceeded(what, step, why[0], shown, log)
    ran = Ran(tuple(map(str, argv)), status, out, err, time.monotonic() - start)
    if check and status not in ok:
        shown = log.read_text(errors="replace") if log else (err.strip() or out)
        raise CommandFailed(what, step, status, excerpt(shown), log)
    return ran


def _streamed(argv: Sequence[str], popen: dict, stdin: int | IO[bytes] | None, log: Path,
              on_line: Callable[[str], None] | None, limits: Limits | None,
              start: float) -> tuple[int, list[str]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as fh:
        fh.write("$ " + " ".join(map(str, argv)) + "\n")
        with subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              **popen) as child, _limited(child.pid, limits, start) as why:
            assert child.stdout is not None
            for line in child.stdout:
                fh.write(line)
                if on_line:
                    on_line(line)
            return child.wait(), why


@contextlib.contextmanager
def _limited(pid: int, limits: Limits | None, started: float) -> Iterator[list[str]]:
    if limits is None:
        yield []
    else:
        with _watched(pid, limits, started) as why:
            yield why


def pipe(producer: Sequence[str], consumer: Sequence[str], what: str, *,
         cwd: Path | None = None) -> None:
    """PRODUCER | CONSUMER, without a shell; CommandFailed names whichever failed."""
    try:
        feeder = subprocess.Popen(list(producer), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, cwd=cwd)
    except FileNotFoundError:
        raise CommandFailed(what, producer, None, "") from None
    with feeder:
        try:
            run(consumer, what, cwd=cwd, stdin=feeder.stdout)
        finally:
            assert feeder.stdout is not None
            feeder.stdout.close()
            err = feeder.stderr.read().decode("utf-8", "replace") if feeder.stderr else ""
            status = feeder.wait()
    if status != 0:
        raise CommandFailed(what, producer, status, excerpt(err))


def first_line(argv: Sequence[str]) -> str:
    """The first line a command prints (a version), or "missing"."""
    try:
        out = run(argv, "version", check=False).stdout
    except CommandFailed:
        return "missing"
    return out.splitlines()[0] if out else "missing"
