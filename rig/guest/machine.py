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
import secrets
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
from rig.guest import markers, qemu, ssh
from rig.guest.console import Console, Patterns

_OUTCOMES = {
    ConsoleEvent.PANIC: Outcome.PANICKED,
    ConsoleEvent.SILENT: Outcome.HUNG,
    ConsoleEvent.TIMEOUT: Outcome.BOOT_FAILED,
    ConsoleEvent.QEMU_EXITED: Outcome.BOOT_FAILED,
}

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


@contextlib.contextmanager
def launch(req: BootRequest, say: Callable[[str], None] = print, *, init: str | None = None,
           init_args: tuple[str, ...] = (), ready: str | None = None) -> Iterator[Launched]:
    """Start QEMU on a throw-away overlay and wait for the ready line; BootError if none.

    INIT, INIT_ARGS and READY (a regex) replace rig-init and its ready line, e.g. for the
    benchmark's trivial init; "{nonce}" in INIT_ARGS and READY stands for this boot's nonce.
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
    with _sigterm_raises():
        try:
            version = qemu.version(settings.binary)
            for _ in range(settings.port_attempts):
                port = qemu.free_port()
                with tempfile.TemporaryDirectory(prefix="rig-boot-", dir=workdir) as tmp:
                    overlay = qemu.create_overlay(settings, req.image.path,
                                                  Path(tmp) / "overlay.qcow2")

                    def argv(accel: str, port: int = port, overlay: Path = overlay) -> list[str]:
                        return qemu.command(settings, kernel=req.kernel, overlay=overlay,
                                            ssh_port=port, accel=accel, memory_mb=req.memory_mb,
                                            cpus=req.cpus, nonce=nonce, init=init,
                                            init_args=init_args)

                    vm, accel = qemu.start(settings, req.accel, argv, console_log, ready_re,
                                           say, patterns)
                    # QEMU opens (and may reopen) its drives before the guest runs, so once the
                    # guest printed anything the overlay needs no name on disk: nothing is left
                    # to clean up even if the rig is killed.  Its first open is not enough.
                    vm.console.wait_output(req.silence_timeout)
                report = vm.console.wait_ready(req.boot_timeout, req.silence_timeout)
                if report.event is not ConsoleEvent.QEMU_EXITED:
                    break
                vm.stop()
                said = vm.stderr()
                if said:
                    report = ConsoleReport(report.event,
                                           f"{report.excerpt}\n[QEMU said:]\n{said}".strip(),
                                           report.seconds)
                if settings.port_in_use not in said:
                    break
            if report.event is not ConsoleEvent.READY:
                raise BootError(_OUTCOMES[report.event],
                                f"no ready line: {_WHAT[report.event]} after "
                                f"{report.seconds:.1f} s under {accel}", report, console_log)
            yield Launched(vm, accel, port, report, console_log, version)
        except qemu.QemuError as e:
            raise BootError(Outcome.INFRA_ERROR, str(e), None, console_log) from None
        finally:
            if vm is not None:
                vm.stop()


@dataclass
class Guest:
    console: Console
    environment: BootEnvironment
    boot_seconds: float             # from starting QEMU to a working SSH login
    ready_uptime: float             # guest uptime when it printed the ready line
    ssh_port: int
    console_log: Path
    qemu_pid: int
    session: ssh.Session
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
def boot(req: BootRequest, say: Callable[[str], None] = print) -> Iterator[Guest]:
    """Boot REQ's kernel and log in over SSH; see the module docstring."""
    with launch(req, say) as up:
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
                        up.vm.pid, session)
        finally:
            session.close()
