"""End to end: the accelerator falls back to TCG when KVM gives nothing, with a real kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rig.guest import qemu


@pytest.mark.skipif(qemu.kvm_unusable() is not None, reason="no usable /dev/kvm")
def test_auto_falls_back_to_tcg_when_kvm_prints_nothing(tmp_path: Path):
    """A KVM guest that prints nothing must make auto fall back to TCG, saying so.

    A machine with firmware only and no kernel prints nothing on its serial port: from the
    console that is exactly the early-boot hang some hosts show under KVM.
    """
    said: list[str] = []
    settings = qemu.Settings.load()

    def argv(accel: str) -> list[str]:
        return [settings.binary, "-nodefaults", "-display", "none", "-serial", "stdio",
                "-monitor", "none", "-accel", accel]

    vm, accel = qemu.start(settings, "auto", argv, tmp_path / "console.log", None, said.append)
    try:
        assert accel == "tcg"
        assert said and "falling back to TCG" in said[0] and "printed nothing" in said[0]
        assert vm.child.isalive()
    finally:
        vm.stop()
    assert not vm.child.isalive() and not os.path.exists(f"/proc/{vm.pid}")
