"""rig.console against real console logs (tests/fixtures/console), played back through a pty.

Each log is replayed by tests/support/replay_console.py under pexpect, exactly as QEMU's serial port
would deliver it, and watched by the real Console: its reader thread, its log file and its
pattern data.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from support.paths import FIXTURES, TESTS

from rig.core import datafiles
from rig.core.model import ConsoleEvent
from rig.guest.console import Console, Patterns
from rig.runtime.suites.guest_pytest import running_test

FIXTURES = FIXTURES / "console"
REPLAY = TESTS / "support" / "replay_console.py"


def nonce_of(log: Path) -> str:
    """The nonce the rig put on that boot's kernel command line."""
    return re.search(r"rig\.nonce=(\w+)", log.read_text()).group(1)


@pytest.fixture
def watch(tmp_path: Path) -> Iterator:
    """watch(fixture (or a path), after="hang"|"exit", chunk=..., pause=..., nonce=...) -> Console."""
    children: list[pexpect.spawn] = []

    def start(name: str, after: str = "hang", chunk: int = 509, pause: float = 0.0,
              nonce: str | None = None) -> Console:
        log = FIXTURES / name
        child = pexpect.spawn(sys.executable, [str(REPLAY), str(log), str(chunk), str(pause),
                                               after], timeout=None)
        children.append(child)
        patterns = Patterns.load()
        return Console(child, tmp_path / f"watched-{Path(name).name}",
                       patterns.ready_line(nonce or nonce_of(log)), patterns)

    yield start
    for child in children:
        child.close(force=True)


def test_ready_line(watch, tmp_path: Path):
    console = watch("boot-ready.log")
    report = console.wait_ready(timeout=30, silence=10)
    assert report.event is ConsoleEvent.READY
    assert report.excerpt == f"RIG-READY:{nonce_of(FIXTURES / 'boot-ready.log')} uptime=3.63"
    assert float(console.ready_match.group("uptime")) == 3.63
    assert console.splats() == [] and console.fatal() is None


def test_ready_line_of_another_boot_never_matches(watch):
    console = watch("boot-ready.log", nonce="0123456789abcdef")
    report = console.wait_ready(timeout=30, silence=2)
    assert report.event is ConsoleEvent.SILENT
    assert console.ready is None


def test_log_is_complete_byte_for_byte(watch, tmp_path: Path):
    console = watch("bug-in-test-panics.log", after="exit", chunk=61)
    assert console.wait_event(30) is not None
    console.join(30)
    assert console.log_path.read_bytes() == (FIXTURES / "bug-in-test-panics.log").read_bytes()


@pytest.mark.parametrize("chunk", [509, 7])
def test_a_bug_in_a_test_is_the_splat_then_the_panic_it_causes(watch, chunk: int):
    """oops=panic: the BUG's whole report first (cut here to end trace), then the panic."""
    console = watch("bug-in-test-panics.log", after="exit", chunk=chunk)
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    report = console.wait_event(timeout=30)
    assert report.event is ConsoleEvent.SPLAT
    lines = report.excerpt.splitlines()
    assert "------------[ cut here ]------------" in lines[0]
    assert "kernel BUG at drivers/infiniband/core/umem.c:204!" in lines[1]
    assert "RIP: 0010:ib_umem_get+0xaa/0x313" in report.excerpt
    assert "rxe_mr_init_user+0x33/0x1cb" in report.excerpt          # ORC: no '?' on it
    assert "---[ end trace 0000000000000000 ]---" in lines[-1]
    panic = console.wait_event(timeout=30)
    assert panic.event is ConsoleEvent.PANIC
    assert "Kernel panic - not syncing: Fatal exception" in panic.excerpt.splitlines()[0]
    assert console.wait_event(timeout=30).event is ConsoleEvent.QEMU_EXITED
    assert console.fatal().event is ConsoleEvent.PANIC


def test_warning_includes_cut_here(watch):
    console = watch("warn-during-test.log")
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    report = console.wait_event(timeout=30)
    assert report.event is ConsoleEvent.SPLAT and report.attributable
    lines = report.excerpt.splitlines()
    assert "------------[ cut here ]------------" in lines[0]
    assert re.search(r"WARNING: CPU: 0 PID: \d+ at drivers/infiniband/core/umem.c:\d+ "
                     r"ib_umem_get", lines[1]), lines[1]
    assert "---[ end trace" in lines[-1]
    # The guest lived on: nothing fatal.
    assert console.fatal() is None


def test_a_test_that_hangs_in_the_kernel_leaves_the_console_quiet(watch):
    """The test started (its marker is the last thing the rig's plugin wrote) and then the
    console said nothing: the watcher's quiet time is what the rig's hang deadline reads."""
    console = watch("hang-in-test.log")
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    time.sleep(2.5)
    assert console.quiet_for() >= 2.0 and console.fatal() is None
    assert running_test(console.log_path.read_text()) == \
        "test_umem.py::test_registration[anon-written-ro-mr]"


def test_panic_during_a_test_then_qemu_exits(watch):
    console = watch("panic-during-test.log", after="exit")
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    report = console.wait_event(timeout=30)
    assert report.event is ConsoleEvent.PANIC
    assert "Kernel panic - not syncing: sysrq triggered crash" in report.excerpt.splitlines()[0]
    # panic=-1 reboots at once, so the trace ends where QEMU exits.
    assert report.excerpt.splitlines()[-1].endswith("Kernel Offset: disabled")
    assert console.wait_event(timeout=30).event is ConsoleEvent.QEMU_EXITED
    assert console.fatal().event is ConsoleEvent.PANIC


def test_init_exit_is_a_panic_before_ready(watch):
    console = watch("panic-init-exits.log", after="exit")
    report = console.wait_ready(timeout=30, silence=10)
    assert report.event is ConsoleEvent.PANIC
    assert "Attempted to kill init! exitcode=0x00000100" in report.excerpt
    assert console.ready is None


def test_silent_boot_is_hung(watch):
    console = watch("hang-silent.log")
    start = time.monotonic()
    report = console.wait_ready(timeout=60, silence=2)
    assert report.event is ConsoleEvent.SILENT
    assert time.monotonic() - start < 10
    assert "Run /bin/sleep as init process" in report.excerpt
    assert report.excerpt.endswith("[no console output for 2 s]")


def test_output_that_never_reaches_ready_times_out(watch):
    # The same boot trickling out slowly: never silent for 5 s, never ready within 2 s.
    console = watch("hang-silent.log", chunk=64, pause=0.05)
    report = console.wait_ready(timeout=2, silence=5)
    assert report.event is ConsoleEvent.TIMEOUT
    assert 2 <= report.seconds < 5


def test_qemu_exit_before_anything(watch):
    console = watch("hang-silent.log", after="exit")
    report = console.wait_ready(timeout=30, silence=10)
    assert report.event is ConsoleEvent.QEMU_EXITED
    assert "Run /bin/sleep as init process" in report.excerpt


def test_kvm_probe_sees_no_output(tmp_path: Path):
    """What a KVM guest that hangs in early boot looks like: alive, and not a byte."""
    child = pexpect.spawn("sleep", ["30"], timeout=None)
    try:
        console = Console(child, tmp_path / "kvm.log")
        assert console.wait_output(1.0) is False
        assert console.exited is None
    finally:
        child.close(force=True)


def test_a_line_without_end_is_cut_and_the_console_goes_on(watch, tmp_path: Path):
    """A guest that prints 4 MiB without a newline (here into the real WARN boot, after the
    splat, near its end) and then goes on: the line is cut at the cap and said so, and the
    lines after it come as they are."""
    real = (FIXTURES / "warn-during-test.log").read_bytes()
    at = len(real)
    for _ in range(10):
        at = real.rindex(b"\n", 0, at - 1)
    hostile = tmp_path / "endless-line.log"
    hostile.write_bytes(real[:at + 1] + b"A" * (4 << 20) + b"\r\n" + real[at + 1:])
    cap = datafiles.guest_limits("console")["line_bytes"]
    console = watch(str(hostile), chunk=4096, after="exit",
                    nonce=nonce_of(FIXTURES / "warn-during-test.log"))
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    assert "------------[ cut here ]------------" in \
        console.wait_event(timeout=60).excerpt.splitlines()[0]
    console.join(60)
    tail = console.tail().splitlines()
    cut = [line for line in tail if line.startswith("AAA")]
    assert cut == ["A" * cap + f" [rig: the line was cut here, at {cap} bytes]"]
    assert tail[-9:] == real.decode().replace("\r", "").splitlines()[-9:]


def test_an_unterminated_line_is_cut_while_it_is_still_coming(watch, tmp_path: Path):
    """A guest that prints without end and never a newline: the host keeps a bounded prefix
    and says so at once, not when (if ever) the line ends."""
    hostile = tmp_path / "unterminated.log"
    hostile.write_bytes((FIXTURES / "boot-ready.log").read_bytes() + b"B" * (1 << 20))
    cap = datafiles.guest_limits("console")["line_bytes"]
    console = watch(str(hostile), chunk=4096, nonce=nonce_of(FIXTURES / "boot-ready.log"))
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    deadline = time.monotonic() + 30
    while console.log_path.stat().st_size < hostile.stat().st_size and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert console.tail().splitlines()[-1] == \
        "B" * cap + f" [rig: the line was cut here, at {cap} bytes]"


def test_the_log_file_stops_growing_at_its_cap_and_the_console_is_still_watched(
        watch, monkeypatch):
    """The real WARN boot with the log's cap before its splat: the file keeps the first
    bytes and says where it was cut; the splat after it is still seen."""
    real = (FIXTURES / "warn-during-test.log").read_bytes()
    cap = real.index(b"------------[ cut here ]")
    limits = dict(datafiles.guest_limits("console"), log_bytes=cap)
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: limits)
    console = watch("warn-during-test.log", after="exit", chunk=4096)
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    assert "------------[ cut here ]" in console.wait_event(timeout=30).excerpt
    console.join(30)
    assert console.log_path.read_bytes() == \
        real[:cap] + f"\n[rig: the console log was cut here, at {cap} bytes]\n".encode()
