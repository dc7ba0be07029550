"""The guest's serial console, watched for as long as the guest runs.

A reader thread drains QEMU's stdio (a pexpect child) from the moment QEMU starts until it
exits: every byte goes to the log file at once, and every line is matched against the
patterns in data/console-patterns.toml.  Draining continuously matters: a console nobody
reads fills the pty and stalls the guest.  Callers wait for the ready line, then, while
tests run over SSH, collect the kernel splats seen since they last asked, or wait for a
crash or QEMU's exit with a timeout.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pexpect

from rig.core import datafiles
from rig.core.model import ConsoleEvent, ConsoleReport

TAIL_LINES = 40                     # console lines in the excerpt of a boot that went wrong
_POLL = 0.1                         # seconds the reader blocks before checking quiet periods


@dataclass(frozen=True)
class SplatKind:
    name: str
    event: ConsoleEvent
    start: tuple[re.Pattern[str], ...]
    end: tuple[re.Pattern[str], ...]
    attributable: bool = True        # see ConsoleReport.attributable


@dataclass(frozen=True)
class Patterns:
    timestamp: re.Pattern[str]
    ready: str                      # a regex with {nonce} standing for this boot's nonce
    preamble: tuple[re.Pattern[str], ...]
    quiet_seconds: float
    max_lines: int
    kinds: tuple[SplatKind, ...]

    @classmethod
    def load(cls, text: str | None = None) -> Patterns:
        if text is None:
            text = datafiles.text("console-patterns.toml")
        data = tomllib.loads(text)

        def compile_all(items: list[str]) -> tuple[re.Pattern[str], ...]:
            return tuple(re.compile(p) for p in items)

        kinds = tuple(SplatKind(k["name"], ConsoleEvent(k["event"]), compile_all(k["start"]),
                                compile_all(k["end"]), k.get("attributable", True))
                      for k in data["splat"])
        return cls(re.compile(data["timestamp"]), data["ready"],
                   compile_all(data["trace"]["preamble"]), float(data["trace"]["quiet_seconds"]),
                   int(data["trace"]["max_lines"]), kinds)

    def ready_line(self, nonce: str) -> re.Pattern[str]:
        return self.compile_ready(self.ready, nonce)

    @staticmethod
    def compile_ready(template: str, nonce: str) -> re.Pattern[str]:
        return re.compile(template.replace("{nonce}", re.escape(nonce)))


class _Scanner:
    """Turns console lines into reports: the ready line, and splats with their trace."""

    def __init__(self, patterns: Patterns, ready: re.Pattern[str] | None, started: float):
        self.p = patterns
        self.ready = ready
        self.started = started
        self.recent: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.kind: SplatKind | None = None      # the splat being collected, if any
        self.trace: list[str] = []
        self.trace_start = 0.0
        self.last_line = started
        self.ready_match: re.Match[str] | None = None

    def line(self, raw: str, now: float) -> list[ConsoleReport]:
        text = self.p.timestamp.sub("", raw)
        previous = self.recent[-1] if self.recent else ""
        self.recent.append(raw)
        self.last_line = now
        out: list[ConsoleReport] = []
        if self.ready and (m := self.ready.search(text)):
            self.ready_match = self.ready_match or m
            out.append(ConsoleReport(ConsoleEvent.READY, m.group(0), now - self.started))
            return out
        if self.kind is not None:
            started = self._starts(text)
            # A panic ends whatever was being collected (an Oops is often followed by one).
            if started and started.event is ConsoleEvent.PANIC and self.kind is not started:
                out += self.finish()
            else:
                self.trace.append(raw)
                if any(e.search(text) for e in self.kind.end) or \
                        len(self.trace) >= self.p.max_lines:
                    out += self.finish()
                return out
        kind = self._starts(text)
        if kind is not None:
            self.kind, self.trace_start = kind, now
            pre = self.p.timestamp.sub("", previous)
            self.trace = [previous] if any(p.search(pre) for p in self.p.preamble) else []
            self.trace.append(raw)
        return out

    def _starts(self, text: str) -> SplatKind | None:
        return next((k for k in self.p.kinds if any(s.search(text) for s in k.start)), None)

    def quiet(self, now: float) -> list[ConsoleReport]:
        if self.kind is not None and now - self.last_line >= self.p.quiet_seconds:
            return self.finish()
        return []

    def finish(self) -> list[ConsoleReport]:
        if self.kind is None:
            return []
        report = ConsoleReport(self.kind.event, "\n".join(self.trace),
                               self.trace_start - self.started, self.kind.attributable)
        self.kind, self.trace = None, []
        return [report]

    def tail(self) -> str:
        return "\n".join(self.recent)


def scan(lines: list[tuple[float, str]], patterns: Patterns | None = None
         ) -> list[ConsoleReport]:
    """The splats and panics in a console captured elsewhere (a lab job's log), in order.

    LINES are (seconds, text) pairs: the times end a trace where the console went quiet,
    as they do for the live watcher.
    """
    scanner = _Scanner(patterns or Patterns.load(), None, lines[0][0] if lines else 0.0)
    reports: list[ConsoleReport] = []
    for now, line in lines:
        reports += scanner.quiet(now)
        reports += scanner.line(line, now)
    return reports + scanner.finish()


class _Lines:
    """The console's bytes as lines.  A guest may print without end and never a newline:
    a line longer than CAP bytes is cut there, said so, and the rest of it dropped."""

    def __init__(self, cap: int):
        self.cap = cap
        self.partial = b""
        self.cutting = False            # dropping the rest of a line that was cut

    def feed(self, data: bytes) -> list[str]:
        if self.cutting:
            end = data.find(b"\n")
            if end < 0:
                return []
            data, self.cutting = data[end + 1:], False
        *lines, self.partial = (self.partial + data).split(b"\n")
        out = [self._text(line) for line in lines]
        if len(self.partial) > self.cap:
            out.append(self._text(self.partial))
            self.partial, self.cutting = b"", True
        return out

    def end(self) -> list[str]:
        return [self._text(self.partial)] if self.partial else []

    def _text(self, line: bytes) -> str:
        text = line[:self.cap].decode("utf-8", "replace").rstrip("\r")
        return text if len(line) <= self.cap else \
            f"{text} [rig: the line was cut here, at {self.cap} bytes]"


class Console:
    """Watches CHILD's output from now until it ends; see the module docstring."""

    def __init__(self, child: pexpect.spawn, log: Path, ready: re.Pattern[str] | None = None,
                 patterns: Patterns | None = None, started: float | None = None):
        self.child = child
        self.log_path = log
        self.started = time.monotonic() if started is None else started
        self._scanner = _Scanner(patterns or Patterns.load(), ready, self.started)
        self._cond = threading.Condition()
        self._reports: list[ConsoleReport] = []   # splats, panics and the exit, in order
        self._cursor = 0                          # reports before it were handed out
        self._ready: ConsoleReport | None = None
        self._output_at: float | None = None      # when the first byte came
        self._last_output = self.started
        self.exited: ConsoleReport | None = None
        self._thread = threading.Thread(target=self._read, name=f"console {log.name}",
                                        daemon=True)
        self._thread.start()

    # The reader thread.
    def _read(self) -> None:
        with open(self.log_path, "wb") as log:
            self._pump(log)

    def _pump(self, log: BinaryIO) -> None:
        limits = datafiles.guest_limits("console")
        lines = _Lines(limits["line_bytes"])
        room = limits["log_bytes"]        # what the log file may still take
        try:
            while True:
                try:
                    data = self.child.read_nonblocking(65536, timeout=_POLL)
                except pexpect.TIMEOUT:
                    with self._cond:
                        self._add(self._scanner.quiet(time.monotonic()))
                    continue
                except (pexpect.EOF, OSError):
                    break
                now = time.monotonic()
                if room >= 0:
                    log.write(data[:room])
                    room -= len(data)
                    if room < 0:      # still watched, no longer kept
                        log.write(f"\n[rig: the console log was cut here, at "
                                  f"{limits['log_bytes']} bytes]\n".encode())
                    log.flush()
                with self._cond:
                    self._output_at = self._output_at or now
                    self._last_output = now
                    for text in lines.feed(data):
                        self._add(self._scanner.line(text, now))
                    self._cond.notify_all()
        finally:
            now = time.monotonic()
            with self._cond:
                for text in lines.end():
                    self._add(self._scanner.line(text, now))
                self._add(self._scanner.finish())
                self.exited = ConsoleReport(ConsoleEvent.QEMU_EXITED, self._scanner.tail(),
                                            now - self.started)
                self._reports.append(self.exited)
                self._cond.notify_all()

    def _add(self, reports: list[ConsoleReport]) -> None:
        for r in reports:
            if r.event is ConsoleEvent.READY:
                self._ready = self._ready or r
            else:
                self._reports.append(r)
        if reports:
            self._cond.notify_all()

    # What callers use.
    def wait_output(self, timeout: float) -> bool:
        """True once the child printed anything; False if it printed nothing in TIMEOUT."""
        with self._cond:
            self._cond.wait_for(lambda: self._output_at is not None or self.exited, timeout)
            return self._output_at is not None

    def wait_ready(self, timeout: float, silence: float) -> ConsoleReport:
        """Wait for the ready line; or a panic, QEMU's exit, SILENCE seconds of no output,
        or TIMEOUT seconds in all, whichever comes first.  Splats before the ready line are
        recorded (see splats()) and the wait goes on, unless the guest then dies."""
        deadline = self.started + timeout
        with self._cond:
            while True:
                if self._ready:
                    return self._ready
                fatal = next((r for r in self._reports if r.event in
                              (ConsoleEvent.PANIC, ConsoleEvent.QEMU_EXITED)), None)
                if fatal:
                    return self._with_earlier_splats(fatal)
                now = time.monotonic()
                if now - self._last_output >= silence:
                    return ConsoleReport(ConsoleEvent.SILENT, self._silent_excerpt(silence),
                                         now - self.started)
                if now >= deadline:
                    return ConsoleReport(ConsoleEvent.TIMEOUT, self._scanner.tail(),
                                         now - self.started)
                self._cond.wait(min(deadline - now, self._last_output + silence - now))

    def _with_earlier_splats(self, fatal: ConsoleReport) -> ConsoleReport:
        # What killed the guest is often an Oops or WARN shortly before the panic.
        earlier = [r.excerpt for r in self._reports if r.event is ConsoleEvent.SPLAT]
        if fatal.event is ConsoleEvent.QEMU_EXITED or not earlier:
            return fatal
        return ConsoleReport(fatal.event, "\n\n".join([*earlier, fatal.excerpt]), fatal.seconds)

    def _silent_excerpt(self, silence: float) -> str:
        tail = self._scanner.tail()
        note = f"[no console output for {silence:.0f} s]"
        return f"{tail}\n{note}" if tail else note

    def splats(self) -> list[ConsoleReport]:
        """Splats and panics seen since the last call (or wait_event), without blocking."""
        with self._cond:
            new = [r for r in self._reports[self._cursor:]
                   if r.event is not ConsoleEvent.QEMU_EXITED]
            self._cursor = len(self._reports)
            return new

    def wait_event(self, timeout: float) -> ConsoleReport | None:
        """The next splat, panic or QEMU's exit not yet handed out; None after TIMEOUT."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._reports) > self._cursor, timeout):
                return None
            self._cursor += 1
            return self._reports[self._cursor - 1]

    def quiet_for(self) -> float:
        """Seconds since the guest last printed anything."""
        with self._cond:
            return time.monotonic() - self._last_output

    def fatal(self, wait: float = 0.0) -> ConsoleReport | None:
        """The panic or exit that ended the guest, waiting up to WAIT seconds for one."""
        def seen() -> ConsoleReport | None:
            return next((r for r in self._reports if r.event is ConsoleEvent.PANIC), None) \
                or self.exited

        with self._cond:
            return self._cond.wait_for(seen, wait) if wait > 0 else seen()

    def tail(self) -> str:
        with self._cond:
            return self._scanner.tail()

    @property
    def ready(self) -> ConsoleReport | None:
        return self._ready

    @property
    def ready_match(self) -> re.Match[str] | None:
        """The ready line's match, for its named groups (e.g. the guest's uptime)."""
        return self._scanner.ready_match

    def join(self, timeout: float | None = None) -> None:
        """Wait for the reader to see the end of the child's output (call after killing it)."""
        self._thread.join(timeout)
