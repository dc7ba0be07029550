"""rig.guest against a real kernel in QEMU (e2e: the base variant's kernel, or $RIG_KERNEL).

Each boot takes a few seconds under TCG; the image comes from the cache (built on first use).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.paths import PROJECT

from rig.core.cache import Cache
from rig.core.model import BootRequest, ConsoleEvent, Outcome
from rig.guest import qemu, sysrq
from rig.guest.image import ensure_image
from rig.guest.machine import BootError, GuestCrashed, Snapshot, boot, launch


@pytest.fixture(scope="module")
def request_for(tmp_path_factory, base_kernel) -> Callable[..., BootRequest]:
    kernel = base_kernel
    image = ensure_image(Cache())
    logs = tmp_path_factory.mktemp("console")

    def make(name: str, **kw) -> BootRequest:
        return BootRequest(Path(kernel), image, accel="tcg", console_log=logs / f"{name}.log",
                           **kw)
    return make


def test_boot_reaches_rxe_over_ssh(request_for, tmp_path: Path):
    with boot(request_for("ok")) as guest:
        links = guest.run("rdma link show", timeout=30)
        assert links.status == 0 and "rxe0" in links.stdout and "netdev eth0" in links.stdout
        devinfo = guest.run("ibv_devinfo -d rxe0", timeout=30)
        assert devinfo.status == 0 and "PORT_ACTIVE" in devinfo.stdout
        failing = guest.run("echo to-stderr >&2; exit 7", timeout=30)
        assert (failing.status, failing.stderr) == (7, "to-stderr\n")
        assert guest.accel == "tcg" and guest.boot_seconds > 0 and guest.ready_uptime > 0

        tree = tmp_path / "up"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "run.sh").write_text("#!/bin/sh\necho ran\n")
        (tree / "sub" / "run.sh").chmod(0o755)
        (tree / "data.bin").write_bytes(bytes(range(256)) * 64)
        guest.put(tree, "/tmp/up")
        assert guest.run("/tmp/up/sub/run.sh", timeout=30).stdout == "ran\n"
        guest.get("/tmp/up", tmp_path / "down")
        assert (tmp_path / "down" / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
        # the rig's own modes, not the guest's (no exec bit, no setuid, never world-writable)
        assert stat.S_IMODE((tmp_path / "down" / "sub" / "run.sh").stat().st_mode) == 0o644
        assert guest.console.splats() == []


def test_panic_during_a_command_ends_it_at_once(request_for):
    with boot(request_for("sysrq")) as guest:
        start = time.monotonic()
        with pytest.raises(GuestCrashed) as crash:
            guest.run("echo c > /proc/sysrq-trigger; sleep 600", timeout=600)
        assert time.monotonic() - start < 30
        assert crash.value.report.event is ConsoleEvent.PANIC
        assert "sysrq triggered crash" in crash.value.report.excerpt


def test_a_crashed_guest_is_restored_as_it_was_when_ready(request_for, tmp_path: Path):
    """The first boot saves its ready guest; after a panic the next boot restores it: the
    disk and memory as they were before the first login, SSH and soft-RoCE working."""
    snapshot = Snapshot(tmp_path)
    try:
        first = request_for("saved")
        with boot(first, snapshot=snapshot) as guest:
            assert snapshot.saved and not guest.restored and guest.ready_uptime > 0
            booted = guest.boot_seconds
            guest.run("echo on-disk > /root/written-after-ready; "
                      "echo in-memory > /dev/shm/written-after-ready", timeout=30)
            with pytest.raises(GuestCrashed):
                guest.run("echo c > /proc/sysrq-trigger; sleep 600", timeout=600)
        for n in (1, 2):   # each restore starts from the same saved guest
            req = request_for(f"restored-{n}")
            with boot(req, snapshot=snapshot) as guest:
                assert guest.restored
                gone = guest.run("ls /root/written-after-ready /dev/shm/written-after-ready",
                                 timeout=30)
                assert gone.status != 0 and "No such file" in gone.stderr, gone
                assert "rxe0" in guest.run("rdma link show", timeout=30).stdout
                guest.run("echo again > /root/written-after-ready", timeout=30)
                print(f"\nboot {booted:.2f} s (with the save {snapshot.save_seconds:.2f} s), "
                      f"restore {guest.boot_seconds:.2f} s")
            # the restored kernel never booted: its console has no banner
            assert "Linux version" not in req.console_log.read_text()
        assert "Linux version" in first.console_log.read_text()
    finally:
        snapshot.close()


PYTEST_RUN = "python3 -S /usr/lib/rig/pytest-server run -p no:cacheprovider -q"
SERVER_TESTS = """\
import os, signal, sys
def test_env_cwd_and_path():
    import helper
    assert os.environ["RIG_X"] == "x y" and os.getcwd() == "/tmp/srv"
    assert helper.HERE == "/tmp/srv/lib" and sys.path[0] == "/tmp/srv"
def test_fails():
    assert os.environ.get("RIG_FAIL") != "1"
def test_kills_pytest():
    if os.environ.get("RIG_KILL") == "1":
        os.kill(os.getpid(), signal.SIGSEGV)
def test_sleeps():
    if os.environ.get("RIG_SLEEP") == "1":
        open("/tmp/srv/sleeping", "w").close()
        signal.pause()
"""


def test_the_pytest_server_runs_pytest_as_python3_m_pytest_would(request_for):
    """rig-init's pytest server (rig.pytest=server): the saved ready guest holds it, and a
    run through it has the client's directory, environment, streams and exit status (128 + N
    when signal N killed it); with no server the client is `python3 -m pytest` itself."""
    snapshot = Snapshot()
    try:
        req = request_for("pytest-server", pytest_server=True)
        for restored in (False, True):
            with boot(req, snapshot=snapshot) as guest:
                assert guest.restored is restored
                assert guest.run("test -S /run/rig-pytest.sock", timeout=30).status == 0
                guest.run(f"mkdir -p /tmp/srv/lib && cat > /tmp/srv/test_s.py <<'EOF'\n"
                          f"{SERVER_TESTS}EOF\necho 'HERE = \"/tmp/srv/lib\"' "
                          f"> /tmp/srv/lib/helper.py", timeout=30)
                env = "RIG_X='x y' PYTHONPATH=/tmp/srv/lib"
                ok = guest.run(f"cd /tmp/srv && {env} {PYTEST_RUN} test_s.py", timeout=120)
                assert ok.status == 0 and "4 passed" in ok.stdout, ok
                failed = guest.run(f"cd /tmp/srv && {env} RIG_FAIL=1 {PYTEST_RUN} test_s.py",
                                   timeout=120)
                assert failed.status == 1 and "1 failed" in failed.stdout, failed
                killed = guest.run(f"cd /tmp/srv && {env} RIG_KILL=1 {PYTEST_RUN} test_s.py",
                                   timeout=120)
                assert killed.status == 128 + signal.SIGSEGV, killed
                # a client killed mid-run takes its run with it
                gone = guest.run(f"cd /tmp/srv && {{ {env} RIG_SLEEP=1 {PYTEST_RUN} test_s.py >/dev/null & "
                                 "}; while [ ! -e sleeping ]; do sleep 0.1; done; kill $!; "
                                 "wait; sleep 1; pgrep -f '^/usr/bin/python3 /usr/lib/rig/"
                                 "pytest-server serve$' | wc -l", timeout=120)
                assert gone.stdout.strip() == "1", gone
            if not restored:
                assert snapshot.saved
        with boot(request_for("no-pytest-server")) as guest:
            assert guest.run("test -e /run/rig-pytest.sock", timeout=30).status == 1
            guest.run("mkdir -p /tmp/srv && echo 'def test_one(): pass' > /tmp/srv/test_s.py",
                      timeout=30)
            alone = guest.run(f"cd /tmp/srv && {PYTEST_RUN} test_s.py", timeout=120)
            assert alone.status == 0 and "1 passed" in alone.stdout, alone
    finally:
        snapshot.close()


def _boots_instead(req: BootRequest, snapshot: Snapshot, why: str) -> None:
    """REQ with SNAPSHOT boots, as the rig says it does because the restore failed (WHY)."""
    said: list[str] = []
    with boot(req, said.append, snapshot=snapshot) as guest:
        assert not guest.restored
        assert guest.run("true", timeout=30).status == 0
    assert any(s.startswith("restoring the saved guest failed, booting instead: ")
               and why in s for s in said), said
    assert "Linux version" in req.console_log.read_text()


def test_a_restore_that_never_resumes_costs_a_boot(request_for, tmp_path: Path, monkeypatch):
    """QEMU loads the saved guest but never runs it (-S keeps it paused, as a restore stuck
    in the load would look to the rig): past the restore's limit the rig stops that QEMU,
    says so and boots, and the boot works."""
    snapshot = Snapshot(tmp_path)
    try:
        with boot(request_for("to-restore"), snapshot=snapshot):
            assert snapshot.saved
        settings = qemu.Settings.load()
        stalled = dataclasses.replace(settings, loadvm_args=(*settings.loadvm_args, "-S"),
                                      snapshot_seconds=5.0)
        monkeypatch.setattr(qemu.Settings, "load", classmethod(lambda cls: stalled))
        start = time.monotonic()
        _boots_instead(request_for("never-resumes"), snapshot, "restored, but")
        print(f"\nthe stuck restore and the boot after it: {time.monotonic() - start:.1f} s")
    finally:
        snapshot.close()


def test_a_snapshot_that_cannot_be_restored_costs_a_boot_and_is_saved_anew(request_for,
                                                                          tmp_path: Path):
    """An overlay with no saved guest in it, kept as if saved: QEMU refuses -loadvm, the
    rig says so and boots, and that boot saves the guest the next crash restores."""
    snapshot = Snapshot(tmp_path)
    said: list[str] = []
    try:
        req = request_for("unrestorable")
        overlay = qemu.create_overlay(qemu.Settings.load(), req.image.path,
                                      tmp_path / "empty.qcow2")
        fd = os.open(overlay, os.O_RDONLY)
        try:
            snapshot.keep(fd)
        finally:
            os.close(fd)
        snapshot.accel = "tcg"
        _boots_instead(req, snapshot, "rig-ready")
        assert snapshot.saved and snapshot.save_seconds > 0
        with boot(request_for("restorable-again"), said.append, snapshot=snapshot) as guest:
            assert guest.restored
    finally:
        snapshot.close()


def test_a_spinning_task_shows_in_the_sysrq_evidence(request_for):
    """SysRq-w shows only sleeping tasks; -l the running CPUs, where a spinning one is."""
    with boot(request_for("spin")) as guest:
        guest.run("cp /bin/sh /tmp/rigspin && "
                  "nohup /tmp/rigspin -c 'while :; do :; done' >/dev/null 2>&1 &", timeout=30)
        evidence = sysrq.stuck_tasks(guest.console, guest.session)
    assert "sysrq: Show Blocked State" in evidence
    assert "sysrq: Show backtrace of all active CPUs" in evidence, evidence[-3000:]
    assert "Comm: rigspin" in evidence, evidence[-3000:]


def test_init_that_exits_is_a_panic(request_for):
    with pytest.raises(BootError) as err, launch(request_for("init-exits"), init="/bin/false"):
        pass
    assert err.value.outcome is Outcome.PANICKED
    assert "Attempted to kill init" in err.value.report.excerpt


def test_silent_guest_is_hung_not_waited_for(request_for):
    req = request_for("silent", silence_timeout=8.0)
    start = time.monotonic()
    with pytest.raises(BootError) as err, launch(req, init="/bin/sleep", init_args=("3600",)):
        pass
    assert err.value.outcome is Outcome.HUNG
    assert "no console output for 8 s" in err.value.report.excerpt
    assert time.monotonic() - start < 60


# A job started in the background by a non-interactive shell inherits SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler: the child takes Ctrl-C's as a terminal
# would give it.
_BOOT_AND_WAIT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from rig.core.cache import Cache
from rig.core.model import BootRequest
from rig.guest import qemu
from rig.guest.image import ensure_image
from rig.guest.machine import boot
req = BootRequest(Path(sys.argv[1]), ensure_image(Cache()), accel="tcg")
with boot(req, say=lambda m: None) as guest:
    print(guest.qemu_pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_no_qemu_survives_a_killed_run(request_for, sig):
    kernel = request_for("unused").kernel
    overlays = Path(tempfile.gettempdir())
    before = set(overlays.glob("rig-boot-*"))
    with subprocess.Popen([sys.executable, "-c", _BOOT_AND_WAIT, str(kernel)],
                          stdout=subprocess.PIPE, text=True,
                          cwd=PROJECT) as proc:
        try:
            qemu_pid = int(proc.stdout.readline())
            assert Path(f"/proc/{qemu_pid}").exists()
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{qemu_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{qemu_pid}").exists(), f"QEMU {qemu_pid} survived {sig.name}"
    assert set(overlays.glob("rig-boot-*")) == before, "an overlay directory survived"


def test_qemu_refusing_the_kernel_is_a_boot_failure_with_its_message(request_for):
    # An ELF that is no kernel, as when vmlinux is passed for bzImage.
    with pytest.raises(BootError) as err, launch(dataclasses.replace(
            request_for("bad-kernel"), kernel=Path(sys.executable).resolve())):
        pass
    assert err.value.outcome is Outcome.BOOT_FAILED
    assert "QEMU exited" in str(err.value)
    assert "[QEMU said:]" in err.value.report.excerpt
    assert "PVH ELF Note" in err.value.report.excerpt


def test_port_taken_before_qemu_binds_it_is_retried(request_for, monkeypatch):
    """Another process grabbing the picked port in the moment before QEMU binds it."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real_free_port = qemu.free_port
    monkeypatch.setattr(qemu, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        with launch(request_for("port-retry")) as up:
            assert up.ssh_port != taken.getsockname()[1]
    finally:
        taken.close()
