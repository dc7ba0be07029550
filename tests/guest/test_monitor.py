"""rig.guest.monitor against a real QEMU: a firmware-only machine with a qcow2 drive (no kernel
needed: savevm saves whatever the machine is running)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from rig.guest import monitor, qemu

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or
                                shutil.which("qemu-img") is None, reason="QEMU missing")


@pytest.fixture(params=["qcow2"])
def machine(tmp_path: Path, request):
    disk = tmp_path / f"disk.{request.param}"
    subprocess.run(["qemu-img", "create", "-q", "-f", request.param, str(disk), "16M"],
                   check=True)
    with monitor.socket_dir() as socket:
        vm = qemu.Qemu(["qemu-system-x86_64", "-nodefaults", "-display", "none", "-accel", "tcg",
                        "-serial", "stdio", "-monitor", "none",
                        "-drive", f"file={disk},format={request.param},if=virtio",
                        "-qmp", f"unix:{socket},server=on,wait=off"],
                       tmp_path / "console.log", None)
        try:
            yield socket, disk
        finally:
            vm.stop()


def _status(socket: Path) -> str:
    for _ in range(100):             # until QEMU has made its socket
        try:
            return monitor.status(socket, timeout=2.0)
        except monitor.MonitorError:
            pass
    raise AssertionError("QEMU's monitor never answered")


@needs_qemu
def test_save_keeps_the_overlay_while_paused_then_resumes(machine):
    socket, disk = machine
    assert _status(socket) == "running"
    kept: list[bytes] = []
    monitor.save(socket, "rig-ready", lambda: kept.append(disk.read_bytes()), timeout=60)
    assert len(kept) == 1
    assert monitor.status(socket, timeout=5) == "running"
    listed = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(disk)], check=True,
                            capture_output=True, text=True).stdout
    assert "rig-ready" in listed


@needs_qemu
@pytest.mark.parametrize("machine", ["raw"], indirect=True)
def test_a_failed_save_says_so_and_the_guest_still_runs(machine):
    socket, _ = machine
    _status(socket)
    kept: list[bool] = []
    # a raw drive holds no snapshot: savevm refuses, and says why
    with pytest.raises(monitor.MonitorError, match="savevm rig-ready: .*snapshots"):
        monitor.save(socket, "rig-ready", lambda: kept.append(True), timeout=60)
    assert not kept
    assert monitor.status(socket, timeout=5) == "running"


def test_no_monitor_is_an_error_naming_the_socket(tmp_path: Path):
    with pytest.raises(monitor.MonitorError, match=str(tmp_path / "nothing")):
        monitor.status(tmp_path / "nothing", timeout=2)


def test_a_temporary_folder_too_long_for_a_socket_is_refused(tmp_path: Path, monkeypatch):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(monitor.MonitorError, match="TMPDIR"), monitor.socket_dir():
        pass
