"""Progress: one live line per variant on a terminal, timestamped plain lines otherwise.

In plain mode (a CI log, a pipe) a stage that runs long says so every HEARTBEAT seconds, with
what it is doing (the make step, mmdebstrap's line, the test), so a log never looks hung.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Self, TextIO

from rig.core.text import printable

HEARTBEAT = 30.0                    # seconds between plain-mode lines of a running stage


@dataclass
class _Row:
    stage: str = ""
    started: float = field(default_factory=time.monotonic)
    detail: str = ""
    said: float = field(default_factory=time.monotonic)   # plain mode: last line printed


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 heartbeat: float = HEARTBEAT):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.heartbeat = heartbeat
        self._rows: dict[str, _Row] = {}
        self._drawn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick if self.live else self._beat,
                                        daemon=True)
        self._ticker.start()

    def log(self, message: str) -> None:
        message = printable(message)   # build errors and guest lines come through here
        with self._lock:
            if self.live:
                self._erase()
                self.stream.write(message + "\n")
                self._draw()
            else:
                self.stream.write(time.strftime("%H:%M:%S ") + message + "\n")
            self.stream.flush()

    @contextmanager
    def stage(self, who: str, stage: str) -> Iterator[dict]:
        """Time a stage; the yielded dict receives 'seconds' when it ends."""
        timing: dict = {}
        with self._lock:
            self._rows[who] = _Row(stage)
        if not self.live:
            self.log(f"{who}: {stage} ...")
        start = time.monotonic()
        ended = "failed after"
        try:
            yield timing
            ended = "done in"
        finally:
            timing["seconds"] = round(time.monotonic() - start, 3)
            with self._lock:
                self._rows.pop(who, None)
            self.log(f"{who}: {stage} {ended} {timing['seconds']:.1f}s")

    def detail(self, who: str, text: str) -> None:
        """What the stage is doing right now (a make target, a test id); live display only."""
        with self._lock:
            if who in self._rows:
                self._rows[who].detail = printable(text.strip())[:80]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        with self._lock:
            self._erase()
            self.stream.flush()

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat)):
            now = time.monotonic()
            with self._lock:
                due = [(who, row) for who, row in self._rows.items()
                       if now - row.said >= self.heartbeat]
                for who, row in due:
                    row.said = now
                    what = f": {row.detail}" if row.detail else ""
                    self.stream.write(f"{time.strftime('%H:%M:%S ')}{who}: {row.stage} "
                                      f"{now - row.started:.0f}s{what}\n")
                if due:
                    self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._erase()
                self._draw()
                self.stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        now = time.monotonic()
        for who, row in self._rows.items():
            self.stream.write(f"  {who:<16} {row.stage:<10} {now - row.started:6.1f}s  "
                              f"{row.detail}\n")
        self._drawn = len(self._rows)
