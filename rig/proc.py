"""Host commands, the one way every stage runs them: logged, timed, and excerpted on failure.

A command either captures its output (short commands: git, apt-cache, qemu-img) or streams it
into a log file line by line, telling the caller each line (make, mmdebstrap), so that a long
stage can show what it is doing.  A failure raises CommandFailed with the excerpt a maintainer
reads first: the compiler's first error, git's or apt's error lines, make's "***" lines, or
else the last lines; and with the log's path when there is one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Turns a step's argv, cwd and own variables into the argv that runs it confined (rig.sandbox).
Sandbox = Callable[[Sequence[str], Path | None, Mapping[str, str]], list[str]]

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


class CommandFailed(Exception):
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
        check: bool = True, sandbox: Sandbox | None = None) -> Ran:
    """Run ARGV; with LOG, append its merged output there and pass each line to ON_LINE.

    Raises CommandFailed when the program is missing, or (with CHECK) when its status is not
    in OK.  ENV, when given, is added to the rig's own environment; in a SANDBOX it is all
    of the rig's environment the command gets, besides what the sandbox lets through.
    """
    step = tuple(map(str, argv))         # what a failure names, sandbox or not
    if sandbox is not None:
        argv, env = sandbox(argv, cwd, env or {}), None
    full_env = {**os.environ, **env} if env is not None else None
    start = time.monotonic()
    text = not isinstance(input, bytes)
    try:
        if log is None:
            proc = subprocess.run(list(argv), cwd=cwd, env=full_env, input=input,
                                  stdin=stdin if input is None else None, capture_output=True,
                                  text=text, errors="replace" if text else None, check=False)
            out, err = proc.stdout, proc.stderr
            if not text:
                out, err = (b.decode("utf-8", "replace") for b in (out, err))
            status = proc.returncode
        else:
            status, out, err = _streamed(argv, cwd, full_env, stdin, log, on_line), "", ""
    except FileNotFoundError:
        raise CommandFailed(what, argv, None, "", log) from None
    ran = Ran(tuple(map(str, argv)), status, out, err, time.monotonic() - start)
    if check and status not in ok:
        shown = log.read_text(errors="replace") if log else (err.strip() or out)
        raise CommandFailed(what, step, status, excerpt(shown), log)
    return ran


def _streamed(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None,
              stdin: int | IO[bytes] | None, log: Path,
              on_line: Callable[[str], None] | None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as fh:
        fh.write("$ " + " ".join(map(str, argv)) + "\n")
        with subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if on_line:
                    on_line(line)
            return proc.wait()


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
