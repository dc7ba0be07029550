"""QEMU's machine protocol (QMP) on a unix socket per boot: pausing the guest, saving its state
in the overlay and resuming it, so that a crash costs a restore, not a boot.

Through qemu.qmp, the QEMU project's own client.  The human monitor's savevm does the save:
QMP's snapshot-save job would need the overlay's block node names, which the rig never sets.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import QMPClient, QMPError

from rig.core.status import InfraError

T = TypeVar("T")
# qemu.qmp logs each failed attempt as an error; the rig says what failed itself, once
_LOG = logging.getLogger("qemu.qmp")
_LOG.addHandler(logging.NullHandler())
_LOG.propagate = False
SUN_PATH_MAX = 107                 # sockaddr_un's sun_path, less its terminating NUL


class MonitorError(InfraError):
    """QEMU's monitor did not answer, or refused a command; the message says which."""


@contextmanager
def socket_dir() -> Iterator[Path]:
    """A fresh folder for one boot's QMP socket: short enough for a unix socket's path
    whatever the run's own folder is (sun_path holds 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="rig-qmp-") as tmp:
        path = Path(tmp) / "qmp"
        if len(str(path).encode()) > SUN_PATH_MAX:
            raise MonitorError(f"the temporary folder {tmp} is too long a path for QEMU's "
                               f"monitor socket (at most {SUN_PATH_MAX} bytes); set TMPDIR")
        yield path


def save(socket: Path, tag: str, keep: Callable[[], None], timeout: float) -> None:
    """Pause the guest, save its state in its overlay as TAG (savevm), call KEEP while it is
    still paused (the overlay is then as the save left it), and resume it, whatever failed."""
    async def session() -> None:
        qmp = QMPClient("rig")
        await qmp.connect(str(socket))
        try:
            await qmp.execute("stop")
            try:
                said = str(await qmp.execute("human-monitor-command",
                                             {"command-line": f"savevm {tag}"})).strip()
                # savevm prints nothing when it worked, and its error when it did not
                if said:
                    raise MonitorError(f"QEMU's monitor: savevm {tag}: {said}")
                keep()
            finally:
                await qmp.execute("cont")
        finally:
            await qmp.disconnect()

    _run(socket, session(), timeout)


def status(socket: Path, timeout: float) -> str:
    """The guest's run state ("running", "paused", ...), once QEMU's monitor answers: QEMU
    answers only after it has loaded a -loadvm snapshot."""
    async def session() -> str:
        qmp = QMPClient("rig")
        await qmp.connect(str(socket))
        try:
            return str((await qmp.execute("query-status"))["status"])
        finally:
            await qmp.disconnect()

    return _run(socket, session(), timeout)


def _run(socket: Path, session: Coroutine[Any, Any, T], timeout: float) -> T:
    try:
        return asyncio.run(asyncio.wait_for(session, timeout))
    except (QMPError, OSError) as e:             # TimeoutError is an OSError
        raise MonitorError(f"QEMU's monitor at {socket}: {str(e) or type(e).__name__}") \
            from None
