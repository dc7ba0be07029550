"""rig.qemu: the argv built from data/qemu.toml, overlays, and the accelerator fallback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.as_nobody import as_nobody

import rig
from rig.guest import qemu

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")


def _argv(accel: str = "tcg", **kw) -> list[str]:
    args = {"kernel": Path("/k/bzImage"), "overlay": Path("/t/overlay.qcow2"),
            "ssh_port": 40022, "accel": accel, "memory_mb": 1024, "cpus": 1, "nonce": "abc123",
            "monitor": Path("/tmp/rig-qmp-x/qmp")}
    return qemu.command(qemu.Settings.load(), **(args | kw))


def test_argv_has_the_boot_essentials():
    argv = _argv()
    cmdline = argv[argv.index("-append") + 1]
    for word in ("console=ttyS0", "panic=-1", "root=/dev/vda", "init=/sbin/rig-init",
                 "rig.nonce=abc123"):
        assert word in cmdline.split()
    assert "-no-reboot" in argv
    assert argv[argv.index("-kernel") + 1] == "/k/bzImage"
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev and "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    # the mux lets the rig send a break (SysRq) down the serial line
    assert argv[argv.index("-serial") + 1] == "mon:stdio"
    assert "file=/t/overlay.qcow2,format=qcow2" in argv[argv.index("-drive") + 1]
    assert argv[-4:] == ["-accel", "tcg", "-cpu", "max"]


def test_a_restore_loads_the_saved_guest_and_every_boot_has_the_rigs_monitor():
    booted, restored = _argv(), _argv(loadvm="rig-ready")
    assert "-loadvm" not in booted
    assert restored[restored.index("-loadvm") + 1] == "rig-ready"
    for argv in booted, restored:
        assert argv[argv.index("-qmp") + 1] == "unix:/tmp/rig-qmp-x/qmp,server=on,wait=off"
    # the same machine either way: a snapshot loads only into the machine that saved it
    assert [a for a in restored if a not in ("-loadvm", "rig-ready")] == booted


def test_a_test_stage_boot_asks_rig_init_for_its_pytest_server():
    asked, plain = _argv(pytest_server=True), _argv()
    assert "rig.pytest=server" in asked[asked.index("-append") + 1].split()
    assert "rig.pytest=server" not in plain[plain.index("-append") + 1]
    # after init's own arguments it would be one of them
    with_args = _argv(pytest_server=True, init_args=("-c", "true"))
    assert with_args[with_args.index("-append") + 1].endswith("rig.pytest=server -- -c true")


def test_kvm_argv_and_init_arguments():
    argv = _argv("kvm", init="/bin/sh", init_args=("-c", '"echo hi"'))
    assert argv[-4:] == ["-accel", "kvm", "-cpu", "host"]
    assert argv[argv.index("-append") + 1].endswith('init=/bin/sh rig.nonce=abc123 -- -c "echo hi"')


def test_qemu_is_confined():
    as_user, as_root = _argv(as_root=False), _argv(as_root=True)
    for argv in as_user, as_root:
        options = argv[argv.index("-sandbox") + 1].split(",")
        assert options[0] == "on"
        assert {"obsolete=deny", "spawn=deny", "resourcecontrol=deny"} <= set(options)
    # -runas calls setuid after the filter is in place: allowed only where it is used
    assert "elevateprivileges=deny" in as_user[as_user.index("-sandbox") + 1]
    assert "-runas" not in as_user
    assert as_root[as_root.index("-runas") + 1] == "nobody"


def test_free_port_is_bindable():
    port = qemu.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_version_names_the_missing_binary():
    with pytest.raises(qemu.QemuError, match="no-such-qemu is not installed"):
        qemu.version("no-such-qemu")


@needs_qemu
def test_overlay_leaves_the_image_alone(tmp_path: Path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 2**20)
    image.chmod(0o444)
    before = image.read_bytes()
    overlay = qemu.create_overlay(qemu.Settings.load(), image, tmp_path / "overlay.qcow2")
    # Writes through qemu-io land in the overlay; the read-only backing file is unchanged.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(overlay)],
                   check=True, capture_output=True)
    assert image.read_bytes() == before
    info = subprocess.run(["qemu-img", "info", str(overlay)], check=True, capture_output=True,
                          text=True).stdout
    assert f"backing file: {image}" in info


@needs_qemu
def test_overlay_on_a_missing_image(tmp_path: Path):
    with pytest.raises(qemu.QemuError, match="does not exist"):
        qemu.create_overlay(qemu.Settings.load(), tmp_path / "nope.img", tmp_path / "o.qcow2")


def test_unknown_accelerator_is_refused(tmp_path: Path):
    with pytest.raises(qemu.QemuError, match="'hvf' is not one of"):
        qemu.start(qemu.Settings.load(), "hvf", _argv, tmp_path / "console.log", None)


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_kvm_a_user_may_not_open_names_the_fix():
    """Stand-ins for /dev/kvm (synthetic: files of the same owner and modes), as udev leaves
    the device (root:kvm 0660) and as a host without that rule does (root:root 0600), in a
    folder nobody can reach (pytest's own are root's alone)."""
    data = Path(rig.__file__).parent / "data" / "qemu.toml"
    if as_nobody(lambda: os.access(data, os.R_OK, effective_ids=True)) != "True":
        pytest.skip(f"nobody may not read the rig's data ({data})")
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="rig-test-kvm.") as top:
        Path(top).chmod(0o755)
        _kvm_fixes(Path(top))


def _kvm_fixes(folder: Path) -> None:
    grouped, root_only = folder / "kvm-grouped", folder / "kvm-root-only"
    for device, gid, mode in ((grouped, 6, 0o660), (root_only, 0, 0o600)):
        device.touch()
        os.chown(device, 0, gid)
        device.chmod(mode)
    assert qemu.kvm_unusable(grouped) is None                       # root opens it
    absent = folder / "absent"
    assert as_nobody(lambda: qemu.kvm_unusable(absent)) == f"{absent} does not exist"
    assert as_nobody(lambda: qemu.kvm_unusable(grouped)) == (
        f"this user may not open {grouped}; to use KVM: sudo usermod -aG disk $USER, then "
        "log in again (a new login has the group)")
    assert as_nobody(lambda: qemu.kvm_unusable(root_only)) == (
        f"this user may not open {root_only} (mode 0600, no group may); to use KVM: sudo "
        f"chgrp kvm {root_only} && sudo chmod 0660 {root_only}, sudo usermod -aG kvm $USER, "
        "then log in again")
