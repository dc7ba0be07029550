"""rig.console against real console logs (tests/fixtures/console), played back through a pty.

Each log is replayed by tests/replay_console.py under pexpect, exactly as QEMU's serial port
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

from rig.console import Console, Patterns
from rig.model import ConsoleEvent

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "console"
REPLAY = HERE / "replay_console.py"


def nonce_of(log: Path) -> str:
    """The nonce the rig put on that boot's kernel command line."""
    return re.search(r"rig\.nonce=(\w+)", log.read_text()).group(1)


@pytest.fixture
def watch(tmp_path: Path) -> Iterator:
    """watch(fixture, after="hang"|"exit", chunk=..., pause=..., nonce=...) -> Console."""
    children: list[pexpect.spawn] = []

    def start(name: str, after: str = "hang", chunk: int = 509, pause: float = 0.0,
              nonce: str | None = None) -> Console:
        log = FIXTURES / name
        child = pexpect.spawn(sys.executable, [str(REPLAY), str(log), str(chunk), str(pause),
                                               after], timeout=None)
        children.append(child)
        patterns = Patterns.load()
        return Console(child, tmp_path / f"watched-{name}",
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
    console = watch("oops-during-test.log", after="exit", chunk=61)
    assert console.wait_event(30) is not None
    console.join(30)
    assert console.log_path.read_bytes() == (FIXTURES / "oops-during-test.log").read_bytes()


@pytest.mark.parametrize("chunk", [509, 7])
def test_oops_during_a_test_with_its_whole_trace(watch, chunk: int):
    console = watch("oops-during-test.log", chunk=chunk)
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    report = console.wait_event(timeout=30)
    assert report.event is ConsoleEvent.SPLAT
    lines = report.excerpt.splitlines()
    assert "BUG: kernel NULL pointer dereference, address: 0000000000000000" in lines[0]
    assert "Oops: 0000 [#1] SMP" in report.excerpt
    assert "rig_splat_init+0x1f/0x1000 [rig_splat]" in report.excerpt
    assert "---[ end trace 0000000000000000 ]---" in lines[-1]
    # The guest survived the Oops: nothing fatal, and nothing more to hand out.
    assert console.fatal() is None and console.splats() == []


def test_warning_includes_cut_here(watch):
    console = watch("warn-during-test.log")
    assert console.wait_ready(timeout=30, silence=10).event is ConsoleEvent.READY
    report = console.wait_event(timeout=30)
    assert report.event is ConsoleEvent.SPLAT
    lines = report.excerpt.splitlines()
    assert "------------[ cut here ]------------" in lines[0]
    assert "WARNING: CPU: 0 PID: 55 at /tmp/splatmod/rig_splat.c:24" in lines[1]
    assert "---[ end trace" in lines[-1]


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
