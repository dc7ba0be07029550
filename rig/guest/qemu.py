"""Starting qemu-system-x86_64 for one boot, with its settings read from data/qemu.toml.

`auto` acceleration tries KVM first and falls back to TCG, saying why, when KVM is missing
or when the KVM guest prints nothing within a short deadline (on some hosts /dev/kvm exists
but a KVM guest hangs in early boot).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import grp
import os
import re
import signal
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pexpect

from rig.core import datafiles, proc
from rig.core.status import InfraError
from rig.guest.console import Console, Patterns

ACCELS = ("auto", "kvm", "tcg")


class QemuError(InfraError):
    """QEMU could not be started; the message says what is missing or wrong."""


@dataclass(frozen=True)
class Settings:
    binary: str
    image_tool: str
    args: tuple[str, ...]
    cmdline: str
    init: str
    accel_args: dict[str, tuple[str, ...]]
    confine_args: dict[str, tuple[str, ...]]     # "user" | "root": who runs the rig
    kvm_first_output: float
    port_in_use: str
    port_attempts: int
    loadvm_args: tuple[str, ...]
    snapshot_tag: str
    snapshot_seconds: float
    pytest_server_arg: str

    @classmethod
    def load(cls) -> Settings:
        data = datafiles.toml("qemu.toml")
        return cls(data["binary"], data["image_tool"], tuple(data["args"]), data["cmdline"],
                   data["init"], {k: tuple(v["args"]) for k, v in data["accel"].items()},
                   {k: tuple(v["args"]) for k, v in data["confine"].items()},
                   float(data["auto"]["kvm_first_output_seconds"]), data["port"]["in_use"],
                   int(data["port"]["attempts"]), tuple(data["snapshot"]["loadvm_args"]),
                   data["snapshot"]["tag"], float(data["snapshot"]["seconds"]),
                   data["pytest_server_arg"])


@functools.cache
def version(binary: str) -> str:
    """QEMU's version, e.g. "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"."""
    try:
        out = proc.run([binary, "--version"], f"{binary} --version").stdout
    except proc.CommandFailed as e:
        raise QemuError(f"{binary} is not installed (Debian package qemu-system-x86)"
                        if e.status is None else e.detailed()) from None
    m = re.search(r"version (.+)", out)
    return m.group(1).strip() if m else out.splitlines()[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (QEMU binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_overlay(settings: Settings, image: Path, dest: Path) -> Path:
    """A qcow2 overlay at DEST whose read-only backing file is the cached IMAGE."""
    if not image.is_file():
        raise QemuError(f"guest image {image} does not exist")
    cmd = [settings.image_tool, "create", "-q", "-f", "qcow2", "-F", "raw",
           "-b", str(image.resolve()), str(dest)]
    try:
        proc.run(cmd, f"creating an overlay on {image}")
    except proc.CommandFailed as e:
        raise QemuError(f"{settings.image_tool} is not installed (Debian package qemu-utils)"
                        if e.status is None else e.detailed()) from None
    return dest


def command(settings: Settings, *, kernel: Path, overlay: Path, ssh_port: int, accel: str,
            memory_mb: int, cpus: int, nonce: str, monitor: Path, init: str | None = None,
            init_args: tuple[str, ...] = (), loadvm: str | None = None,
            pytest_server: bool = False, as_root: bool | None = None) -> list[str]:
    """The QEMU argv for one boot.  INIT_ARGS go to init after "--" on the command line;
    PYTEST_SERVER asks rig-init for its pytest server.

    MONITOR is the QMP socket's path; LOADVM the tag of a snapshot in OVERLAY to start from
    instead of booting.  AS_ROOT (default: whether the rig runs as root) picks the confinement.
    """
    cmdline = settings.cmdline.format(init=init or settings.init, nonce=nonce)
    if pytest_server:
        cmdline += " " + settings.pytest_server_arg
    if init_args:
        cmdline += " -- " + " ".join(init_args)
    fill = {"kernel": kernel, "overlay": overlay, "ssh_port": ssh_port, "memory_mb": memory_mb,
            "cpus": cpus, "cmdline": cmdline, "monitor": monitor}
    if as_root is None:
        as_root = os.geteuid() == 0
    restore = [a.format(tag=loadvm) for a in settings.loadvm_args] if loadvm else []
    return [settings.binary, *(a.format(**fill) for a in settings.args), *restore,
            *settings.confine_args["root" if as_root else "user"], *settings.accel_args[accel]]


def kvm_unusable(device: Path = Path("/dev/kvm")) -> str | None:
    """Why KVM cannot be tried here, or None; where this user may not open DEVICE, how to be
    let in."""
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        return f"{device} does not exist"
    except PermissionError:
        fixes = datafiles.toml("qemu.toml")["auto"]
        st = device.stat()
        try:
            group = grp.getgrgid(st.st_gid).gr_name if st.st_gid else ""
        except KeyError:
            group = ""
        # A group that may read and write it is the way in; else the device is root's alone.
        if group and st.st_mode & 0o060 == 0o060:
            return f"this user may not open {device}; {fixes['kvm_fix'].format(group=group)}"
        return (f"this user may not open {device} (mode {stat.S_IMODE(st.st_mode):04o}, no group "
                f"may); {fixes['kvm_root_only_fix'].format(device=device)}")
    except OSError as e:
        return f"{device} cannot be opened: {e.strerror}"
    return None


def _child_setup(stderr: Path) -> Callable[[], None]:
    def setup() -> None:
        # In the child before exec.  QEMU's own messages go to a file, so the console (the
        # pty) carries only the guest's serial output.
        fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
        # If the rig dies, even by SIGKILL, QEMU is killed too.  (QEMU's -runas clears this
        # when it changes user; then the hangup of the console's pty ends QEMU instead.)
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return setup


class Qemu:
    """One running QEMU process and the console watching its serial port.

    QEMU's stderr goes to LOG with ".stderr" appended (removed at the end if empty).
    """

    def __init__(self, argv: list[str], log: Path, ready: re.Pattern[str] | None,
                 patterns: Patterns | None = None):
        self.argv = argv
        self.stderr_path = log.with_name(log.name + ".stderr")
        started = time.monotonic()
        try:
            self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, echo=False,
                                       preexec_fn=_child_setup(self.stderr_path))
        except pexpect.ExceptionPexpect as e:
            raise QemuError(f"cannot start {argv[0]}: {e}") from None
        self.started = started
        self.console = Console(self.child, log, ready, patterns, started)

    def stderr(self) -> str:
        """What QEMU itself said (errors, warnings), as far as it has said it."""
        try:
            return self.stderr_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        return self.child.pid

    def stop(self) -> None:
        """Kill QEMU (the overlay is thrown away, so nothing is lost) and reap it."""
        if self.child.isalive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, signal.SIGKILL)
        self.console.join(10)
        self.child.close(force=True)
        with contextlib.suppress(OSError):
            if self.stderr_path.stat().st_size == 0:
                self.stderr_path.unlink()


def start(settings: Settings, accel: str, make_argv: Callable[[str], list[str]], log: Path,
          ready: re.Pattern[str] | None, say: Callable[[str], None] = print,
          patterns: Patterns | None = None) -> tuple[Qemu, str]:
    """Start QEMU with ACCEL; returns it and the accelerator actually used.

    MAKE_ARGV gives the argv for an accelerator ("kvm" or "tcg").
    """
    if accel not in ACCELS:
        raise QemuError(f"accelerator {accel!r} is not one of {', '.join(ACCELS)}")
    if accel == "kvm" and (why := kvm_unusable()):
        raise QemuError(f"accel=kvm asked for, but {why}")
    if accel != "auto":
        return Qemu(make_argv(accel), log, ready, patterns), accel
    why = kvm_unusable()
    if why is None:
        q = Qemu(make_argv("kvm"), log, ready, patterns)
        if q.console.wait_output(settings.kvm_first_output):
            return q, "kvm"
        exited = q.console.exited is not None
        q.stop()
        why = (f"QEMU under KVM exited: {q.stderr()[-300:] or 'no message'}" if exited else
               f"the KVM guest printed nothing in {settings.kvm_first_output:.0f} s")
    say(f"accel auto: {why}; falling back to TCG (slower)")
    return Qemu(make_argv("tcg"), log, ready, patterns), "tcg"
