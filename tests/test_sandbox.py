"""rig.sandbox: the bwrap command line, and what a command run in it can and cannot do.

The behaviour tests run the real bwrap (they skip where it cannot set up a sandbox: no
bubblewrap or no user namespaces, and say which).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rig import sandbox

SETTINGS = sandbox.Settings.load()
WHY = sandbox.unavailable(SETTINGS)
needs_bwrap = pytest.mark.skipif(WHY is not None, reason=f"no sandbox here: {WHY}")


def _mounts(argv: list[str], option: str) -> list[str]:
    """The targets of every OPTION SRC DEST in ARGV (before the command)."""
    argv = argv[:argv.index("--")]
    return [argv[i + 2] for i, a in enumerate(argv) if a == option]


def test_command_line_shape(tmp_path: Path):
    work, out = tmp_path / "work", tmp_path / "work" / "obj"
    argv = sandbox.command(SETTINGS, sandbox.Step(["make", "-C", str(work)], writable=(out,),
                                                  readable=(work,), cwd=work),
                           {"PATH": "/usr/bin", "SSH_AUTH_SOCK": "/run/agent", "HOME": "/root"})
    assert argv[0] == "bwrap"
    for option in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                   "--clearenv"):
        assert option in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == "65534"
    assert "/tmp" in [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert "/usr" in _mounts(argv, "--ro-bind")
    # the tree read-only, then the build directory inside it writable, at the same paths
    assert argv.index(str(work)) < argv.index(str(out))
    assert _mounts(argv, "--bind") == [str(out)]
    assert str(work) in _mounts(argv, "--ro-bind")
    assert argv[argv.index("--chdir") + 1] == str(work)
    assert argv[argv.index("--") + 1:] == ["make", "-C", str(work)]
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert env == {"PATH": "/usr/bin", "HOME": "/tmp", "TMPDIR": "/tmp"}


def test_nothing_of_the_hosts_data_is_mounted():
    argv = sandbox.command(SETTINGS, sandbox.Step(["true"]), {})
    binds = _mounts(argv, "--bind") + _mounts(argv, "--ro-bind")
    for path in binds:
        assert path.startswith(("/usr", "/etc")), path
    assert not any(p in binds for p in ("/", "/root", "/home", "/run", "/var", "/tmp"))


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow here")
def test_private_files_are_masked():
    argv = sandbox.command(SETTINGS, sandbox.Step(["true"]), {})
    masked = [argv[i + 2] for i, a in enumerate(argv) if a == "--ro-bind" and
              argv[i + 1] == "/dev/null"]
    assert "/etc/shadow" in masked


def _run(step: sandbox.Step) -> subprocess.CompletedProcess:
    return subprocess.run(sandbox.command(SETTINGS, step), capture_output=True, text=True,
                          check=False, timeout=60)


@needs_bwrap
def test_writes_land_only_in_the_writable_paths(tmp_path: Path):
    writable, readable = tmp_path / "w", tmp_path / "r"
    writable.mkdir()
    readable.mkdir()
    script = ("echo ok > w/out; echo no > r/out; echo no > /tmp/canary; "
              "echo no > /root-canary; echo no > \"$HOME/canary\"; true")
    proc = _run(sandbox.Step(["sh", "-c", script.replace("w/", f"{writable}/")
                              .replace("r/", f"{readable}/")],
                             writable=(writable,), readable=(readable,)))
    assert proc.returncode == 0, proc.stderr
    assert (writable / "out").read_text() == "ok\n"
    assert not (readable / "out").exists()
    assert "Read-only file system" in proc.stderr
    assert not Path("/root-canary").exists()


@needs_bwrap
def test_private_tmp_no_network_no_home_no_capabilities(tmp_path: Path):
    (marker := Path("/tmp") / f"rig-sandbox-test-{os.getpid()}").write_text("host")
    try:
        proc = _run(sandbox.Step(["sh", "-c", f"""
            test -e {marker} && echo tmp-shared
            echo interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1)
            test -e {Path.home()} && echo home-visible
            grep CapEff /proc/self/status; id -u"""]))
    finally:
        marker.unlink()
    assert proc.returncode == 0, proc.stderr
    assert "tmp-shared" not in proc.stdout
    assert "home-visible" not in proc.stdout
    assert "CapEff:\t0000000000000000" in proc.stdout
    assert proc.stdout.split()[-1] == "65534"
    assert "interfaces lo\n" in proc.stdout     # a network namespace with loopback only


@needs_bwrap
@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow here")
def test_private_files_cannot_be_read():
    proc = _run(sandbox.Step(["cat", "/etc/shadow"]))
    assert proc.returncode != 0 and proc.stdout == ""


def test_missing_bwrap_is_named():
    settings = sandbox.Settings("no-such-bwrap", (), 65534, 65534, (), (), ())
    assert sandbox.unavailable(settings) == \
        "no-such-bwrap is not installed (Debian package bubblewrap)"
