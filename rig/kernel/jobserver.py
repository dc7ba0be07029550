"""The cores the builds of one rig share: a GNU make jobserver of the rig's own.

A build takes one token before its first make (that make's own job) and gives it back after
its last; its makes take the others from the pipe job by job, as make's jobserver protocol
has them do.  So the builds at once never run more jobs than there are tokens together, a
lone build runs as many as there are, and a build waiting for a work tree or a source holds
none.  Make 4.3 (bookworm) and 4.4 both read `--jobserver-auth=R,W` from MAKEFLAGS.

The pipe crosses into a series' sandbox, where make must read and write it.  A hostile
build may keep tokens or add some.  That changes only how many jobs the builds beside it
run, as processes of its own spinning would, and only until none runs: whenever a build
starts with none running, the pipe is set back to exactly its tokens.  The same mends
tokens a killed make took with it.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TOKEN = b"+"


@dataclass(frozen=True)
class Jobs:
    """What one build's makes are given: their MAKEFLAGS and the pipe's two ends."""

    makeflags: str
    fds: tuple[int, int]


class Jobserver:
    def __init__(self, tokens: int):
        self.tokens = max(tokens, 1)
        self._read, self._write = os.pipe()
        # The rig's own reads and writes must not block, and make's must: open file
        # descriptions of the rig's own (a flag set on make's would be make's too).
        self._take_end = os.open(f"/proc/self/fd/{self._read}", os.O_RDONLY | os.O_NONBLOCK)
        self._give_end = os.open(f"/proc/self/fd/{self._write}", os.O_WRONLY | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._running = 0
        weakref.finalize(self, _close, self._read, self._write, self._take_end,
                         self._give_end)

    @contextlib.contextmanager
    def slot(self, waiting: Callable[[], None] = lambda: None) -> Iterator[Jobs]:
        """One build's share, for as long as the block runs; WAITING is called once when
        no token is free at first."""
        self._take(waiting)
        try:
            yield Jobs(f"-j{self.tokens} --jobserver-auth={self._read},{self._write}",
                       (self._read, self._write))
        finally:
            with self._lock:
                self._running -= 1
                with contextlib.suppress(BlockingIOError):   # full: a build forged tokens
                    os.write(self._give_end, TOKEN)

    def _take(self, waiting: Callable[[], None]) -> None:
        told = False
        while True:
            with self._lock:
                if self._running == 0:
                    self._drain()
                    os.write(self._give_end, TOKEN * self.tokens)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._take_end, 1)
                    self._running += 1
                    return
            if not told:
                waiting()
                told = True
            # a token given back, or time to see whether every build has ended meanwhile
            select.select([self._take_end], [], [], 1.0)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._take_end, 65536):
                pass


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
