"""The boot stage: a kernel and the cached image, booted in QEMU and reachable over SSH.

    with boot(BootRequest(kernel, image)) as guest:
        guest.run("rdma link show", timeout=30)

boot() yields only a guest that printed its ready line and accepted the SSH login; anything
else raises BootError with an Outcome and the console excerpt.  However the block ends
(normally, by an exception, Ctrl-C or SIGTERM) QEMU is killed; if the rig itself is killed
outright, QEMU dies with it.  The per-boot overlay is unlinked as soon as QEMU has opened it,
so it never outlives QEMU.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rig.core.model import (
    BootEnvironment,
    BootRequest,
    CommandResult,
    ConsoleEvent,
    ConsoleReport,
    Outcome,
    StageError,
)
from rig.core.status import InfraError
from rig.guest import markers, monitor, qemu, ssh
from rig.guest.console import Console, Patterns

_OUTCOMES = {
    ConsoleEvent.PANIC: Outcome.PANICKED,
    ConsoleEvent.SILENT: Outcome.HUNG,
    ConsoleEvent.TIMEOUT: Outcome.BOOT_FAILED,
    ConsoleEvent.QEMU_EXITED: Outcome.BOOT_FAILED,
}

_COPY_CHUNK = 1 << 20

_WHAT = {
    ConsoleEvent.PANIC: "kernel panic",
    ConsoleEvent.SILENT: "the console went silent",
    ConsoleEvent.TIMEOUT: "still booting at the time limit",
    ConsoleEvent.QEMU_EXITED: "QEMU exited",
}


class BootError(InfraError):
    """The guest did not come up: OUTCOME says how, REPORT holds the console excerpt."""

    def __init__(self, outcome: Outcome, message: str, report: ConsoleReport | None = None,
                 console_log: Path | None = None):
        self.outcome = outcome
        self.report = report
        self.console_log = console_log
        where = f" (console log: {console_log})" if console_log else ""
        super().__init__(message + where)

    def stage_error(self) -> StageError:
        return StageError("boot", str(self), self.report.excerpt if self.report else "")


class GuestCrashed(Exception):
    """The guest panicked or QEMU exited while a command ran; REPORT says what was seen."""

    def __init__(self, command: str, report: ConsoleReport):
        self.command = command
        self.report = report
        super().__init__(f"the guest died ({report.event.value}) while running {command!r}:\n"
                         f"{report.excerpt}")


@dataclass
class Launched:
    """A QEMU that printed its ready line (what launch() yields)."""

    vm: qemu.Qemu
    accel: str                      # the accelerator actually used: "kvm" or "tcg"
    ssh_port: int
    ready: ConsoleReport
    console_log: Path
    qemu_version: str
    restored: bool = False          # started from a Snapshot, not booted


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit inside the block, so cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Snapshot:
    """A variant's ready guest, kept for its later boots: the first boot given it saves the
    guest once it printed its ready line (before any login), and the later ones restore that
    instead of booting (rig/guest/monitor.py).  It is an unnamed file in WORKDIR, so nothing is
    left behind however the rig ends; the per-boot overlay starts as a copy of it."""

    def __init__(self, workdir: Path | None = None):
        self._file = tempfile.TemporaryFile(dir=workdir)  # noqa: SIM115 (close() closes it)
        self.accel: str | None = None      # what the saved guest ran under; None: not saved
        self.save_seconds = 0.0            # what the save cost the boot that made it

    @property
    def saved(self) -> bool:
        return self.accel is not None

    def keep(self, overlay: int) -> None:
        """Copy the overlay open as file descriptor OVERLAY (QEMU has it paused and saved)."""
        self._file.seek(0)
        self._file.truncate()
        with open(os.dup(overlay), "rb") as src:
            shutil.copyfileobj(src, self._file, _COPY_CHUNK)
        self._file.flush()

    def copy_to(self, dest: Path) -> None:
        self._file.seek(0)
        with open(dest, "xb") as out:
            shutil.copyfileobj(self._file, out, _COPY_CHUNK)

    def forget(self) -> None:
        self.accel = None

    def close(self) -> None:
        self._file.close()


@contextlib.contextmanager
def launch(req: BootRequest, say: Callable[[str], None] = print, *, init: str | None = None,
           init_args: tuple[str, ...] = (), ready: str | None = None,
           snapshot: Snapshot | None = None) -> Iterator[Launched]:
    """Start QEMU on a throw-away overlay and wait for the ready line; BootError if none.

    INIT, INIT_ARGS and READY (a regex) replace rig-init and its ready line, e.g. for the
    benchmark's trivial init; "{nonce}" in INIT_ARGS and READY stands for this boot's nonce.
    With SNAPSHOT, a guest saved there is restored instead (Launched.restored), and a boot
    saves its ready guest there.
    """
    if not req.kernel.is_file():
        raise BootError(Outcome.INFRA_ERROR, f"kernel {req.kernel} does not exist")
    settings = qemu.Settings.load()
    patterns = Patterns.load()
    nonce = secrets.token_hex(8)
    ready_re = patterns.ready_line(nonce) if ready is None else \
        Patterns.compile_ready(ready, nonce)
    init_args = tuple(a.replace("{nonce}", nonce) for a in init_args)
    workdir = req.workdir or Path(tempfile.gettempdir())
    console_log = req.console_log or Path(tempfile.mkstemp(prefix="rig-console-",
                                                           suffix=".log", dir=workdir)[1])
    vm: qemu.Qemu | None = None
    held: int | None = None                # the overlay, open for the snapshot's copy
    with _sigterm_raises(), contextlib.ExitStack() as stack:
        try:
            version = qemu.version(settings.binary)
            socket = stack.enter_context(monitor.socket_dir())
            for _ in range(settings.port_attempts):
                port = qemu.free_port()
                restoring = snapshot is not None and snapshot.saved
                with tempfile.TemporaryDirectory(prefix="rig-boot-", dir=workdir) as tmp:
                    overlay = Path(tmp) / "overlay.qcow2"
                    if restoring:
                        snapshot.copy_to(overlay)
                    else:
                        qemu.create_overlay(settings, req.image.path, overlay)
                    if snapshot is not None and not restoring:
                        held = os.open(overlay, os.O_RDONLY | os.O_CLOEXEC)
                        stack.callback(os.close, held)

                    def argv(accel: str, port: int = port, overlay: Path = overlay,
                             restoring: bool = restoring) -> list[str]:
                        return qemu.command(settings, kernel=req.kernel, overlay=overlay,
                                            ssh_port=port, accel=accel, memory_mb=req.memory_mb,
                                            cpus=req.cpus, nonce=nonce, monitor=socket,
                                            init=init, init_args=init_args,
                                            loadvm=settings.snapshot_tag if restoring else None,
                                            pytest_server=req.pytest_server)

                    vm, accel = qemu.start(settings, snapshot.accel if restoring else req.accel,
                                           argv, console_log, ready_re, say, patterns)
                    # QEMU opens (and may reopen) its drives before the guest runs, so once the
                    # guest printed anything (or, restored, once the monitor answers: after the
                    # load) the overlay needs no name on disk: nothing is left to clean up even
                    # if the rig is killed.  Its first open is not enough.
                    report = _restored(vm, socket, settings) if restoring else None
                    if not restoring:
                        vm.console.wait_output(req.silence_timeout)
                if report is None:
                    report = vm.console.wait_ready(req.boot_timeout, req.silence_timeout)
                # a restore that does not run (QEMU exits, or the guest never resumes in
                # time) costs a boot; a boot's own failure is its verdict
                if report.event is not ConsoleEvent.QEMU_EXITED and \
                        (report.event is ConsoleEvent.READY or not restoring):
                    break
                vm.stop()
                said = vm.stderr()
                if said:
                    report = ConsoleReport(report.event,
                                           f"{report.excerpt}\n[QEMU said:]\n{said}".strip(),
                                           report.seconds)
                if settings.port_in_use in said:
                    continue
                if not restoring:
                    break
                say("restoring the saved guest failed, booting instead: "
                    f"{said or report.excerpt or 'no message'}")
                snapshot.forget()
            if report.event is not ConsoleEvent.READY:
                raise BootError(_OUTCOMES[report.event],
                                f"no ready line: {_WHAT[report.event]} after "
                                f"{report.seconds:.1f} s under {accel}", report, console_log)
            if held is not None:
                _save(snapshot, held, socket, settings, accel, say)
            yield Launched(vm, accel, port, report, console_log, version, restoring)
        except qemu.QemuError as e:
            raise BootError(Outcome.INFRA_ERROR, str(e), None, console_log) from None
        finally:
            if vm is not None:
                vm.stop()


def _restored(vm: qemu.Qemu, socket: Path, settings: qemu.Settings) -> ConsoleReport:
    """The restored guest running (READY), or QEMU's exit: it loads the snapshot before its
    monitor answers, and exits if it cannot."""
    deadline = time.monotonic() + settings.snapshot_seconds
    while True:
        try:
            state = monitor.status(socket, timeout=2.0)
        except monitor.MonitorError as e:
            # the socket is not there yet, or QEMU is gone
            if (exited := vm.console.fatal(wait=0.1)) is not None:
                return exited
            if time.monotonic() > deadline:
                return ConsoleReport(ConsoleEvent.TIMEOUT, str(e), time.monotonic() - vm.started)
            continue
        if state == "running":
            return ConsoleReport(ConsoleEvent.READY, "restored the saved ready guest",
                                 time.monotonic() - vm.started)
        if time.monotonic() > deadline:
            return ConsoleReport(ConsoleEvent.TIMEOUT, f"restored, but {state}",
                                 time.monotonic() - vm.started)
        time.sleep(0.05)


def _save(snapshot: Snapshot, overlay: int, socket: Path, settings: qemu.Settings, accel: str,
          say: Callable[[str], None]) -> None:
    """Save the ready guest into SNAPSHOT; one that cannot be saved costs crashes a boot."""
    start = time.monotonic()
    try:
        monitor.save(socket, settings.snapshot_tag, lambda: snapshot.keep(overlay),
                     settings.snapshot_seconds)
    except (monitor.MonitorError, OSError) as e:
        say(f"the ready guest was not saved, so a crash will cost a boot: {e}")
        return
    snapshot.accel = accel
    snapshot.save_seconds = time.monotonic() - start


@dataclass
class Guest:
    console: Console
    environment: BootEnvironment
    boot_seconds: float             # from starting QEMU to a working SSH login
    ready_uptime: float             # guest uptime when it printed the ready line (0: restored)
    ssh_port: int
    console_log: Path
    qemu_pid: int
    session: ssh.Session
    restored: bool                  # from a Snapshot: boot_seconds is the restore's
    # this boot's marker token (rig/guest/markers.py): made on the host after boot, sent only in
    # the commands the suites run
    marker_token: str = field(default_factory=markers.new_token)

    @property
    def accel(self) -> str:
        """The accelerator actually used: "kvm" or "tcg"."""
        return self.environment.accelerator

    def _alive(self) -> bool:
        return self.console.fatal() is None

    def _crashed(self, what: str, e: ssh.SSHError) -> Exception:
        # A dropped connection is the guest's death if the console sees one; the console
        # reader may see QEMU's exit a moment after the connection drops.
        fatal = self.console.fatal(wait=2.0)
        return GuestCrashed(what, fatal) if fatal else e

    def run(self, cmd: str, timeout: float = 600.0,
            silence: float | Callable[[], float] | None = None) -> CommandResult:
        """Run CMD in the guest; raises GuestCrashed if the guest dies meanwhile.

        With SILENCE (seconds, or a function that says how many now), a console quiet for
        that long ends the command as timed out: for a command that keeps the console busy
        (the suite logs each test), that is a hang.
        """
        def limit() -> float | None:
            return silence() if callable(silence) else silence

        def quiet() -> bool:
            return silence is not None and self.console.quiet_for() > limit()

        start = time.monotonic()
        try:
            return self.session.run(cmd, timeout, alive=lambda: self._alive() and not quiet())
        except ssh.SSHError as e:
            if quiet() and self.console.fatal() is None:
                return CommandResult(-1, "", f"no console output for {limit():g} s",
                                     time.monotonic() - start, timed_out=True)
            raise self._crashed(cmd, e) from None

    def put(self, local: Path, remote: str) -> None:
        try:
            self.session.put(local, remote)
        except ssh.SSHError as e:
            raise self._crashed(f"put {local}", e) from None

    def get(self, remote: str, local: Path) -> None:
        """REMOTE into LOCAL as ssh.Session.get() takes it; Refused names what it would not."""
        try:
            self.session.get(remote, local)
        except ssh.Refused:
            raise
        except ssh.SSHError as e:
            raise self._crashed(f"get {remote}", e) from None


@contextlib.contextmanager
def boot(req: BootRequest, say: Callable[[str], None] = print,
         snapshot: Snapshot | None = None) -> Iterator[Guest]:
    """Boot REQ's kernel (or restore SNAPSHOT's guest, see launch) and log in over SSH; see the
    module docstring."""
    with launch(req, say, snapshot=snapshot) as up:
        console = up.vm.console
        target = ssh.Target("127.0.0.1", up.ssh_port, req.image.host_key_pub,
                            req.image.client_key)
        left = max(req.boot_timeout - (time.monotonic() - up.vm.started), 10.0)
        try:
            session = ssh.connect(target, left, alive=lambda: console.fatal() is None)
        except ssh.SSHError as e:
            fatal = console.fatal()
            if fatal:
                raise BootError(_OUTCOMES[fatal.event], f"the guest died before SSH: {e}",
                                fatal, up.console_log) from None
            raise BootError(Outcome.BOOT_FAILED, f"ready, but no SSH login: {e}",
                            ConsoleReport(ConsoleEvent.READY, console.tail(), up.ready.seconds),
                            up.console_log) from None
        try:
            m = console.ready_match
            uptime = float(m.group("uptime")) if m and "uptime" in m.groupdict() else 0.0
            yield Guest(console,
                        BootEnvironment(up.accel, up.qemu_version, req.memory_mb, req.cpus),
                        time.monotonic() - up.vm.started, uptime, up.ssh_port, up.console_log,
                        up.vm.pid, session, up.restored)
        finally:
            session.close()
