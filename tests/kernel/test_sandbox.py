"""rig.sandbox: the bwrap command line of every build step, and what a command run in the
sandbox can and cannot do.

The behaviour tests run the real bwrap (they skip where it cannot set up a sandbox: no
bubblewrap or no user namespaces, and say which).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.paths import FIXTURES
from support.sandboxes import SETTINGS, needs_sandbox

from rig import cli
from rig.commands import vet as vet_command
from rig.core import proc
from rig.core.cache import Cache
from rig.core.model import BuildSettings
from rig.core.progress import Progress
from rig.flows import config
from rig.kernel import decode, patches, sandbox
from rig.kernel.build import Builder

FIXTURES = FIXTURES / "patches"


def _targets(argv: list[str], option: str) -> list[str]:
    """The DEST of every `OPTION SRC DEST` before the command."""
    argv = argv[:argv.index("--")]
    return [argv[i + 2] for i, a in enumerate(argv) if a == option]


def _env(argv: list[str]) -> dict[str, str]:
    return {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv[:argv.index("--")])
            if a == "--setenv"}


def _confinement(argv: list[str]) -> None:
    """What every step's command line has, whatever the step."""
    assert argv[0] == "bwrap"
    for option in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                   "--clearenv"):
        assert option in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == "65534"
    assert "/tmp" in [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    system = _targets(argv, "--ro-bind")
    assert "/usr" in system and "/etc" in system
    for hidden in ("/", "/root", "/home", "/run", "/var", "/tmp", str(Path.home())):
        assert hidden not in system + _targets(argv, "--bind")
    assert _env(argv)["HOME"] == "/nonexistent"


def test_each_build_step_command_line(tmp_path: Path):
    """Apply, olddefconfig, the kernel build, the driver build and decoding a crash's trace
    with the tree's script: what each may write and read."""
    cache = Cache(tmp_path / "cache")
    work = cache.root / "work" / "src"
    tree, objdir, moddir = work / "linux", work / "obj-0123", work / "driver-x" / "driver"
    ccache = tmp_path / "ccache"
    os.environ["CCACHE_DIR"] = str(ccache)
    try:
        steps = Builder(BuildSettings(config.project_root() / "guest_tests" / "driver", jobs=2),
                        cache, Progress(live=False)).steps(tree, objdir, moddir,
                                                           relocated=True)
    finally:
        del os.environ["CCACHE_DIR"]
    vmlinux = cache.root / "kernel" / "0123" / "vmlinux"
    lines = {"apply": sandbox.command(SETTINGS, ["git", "apply", "-"], writable=[tree],
                                      cwd=tree, env={"GIT_DIR": "/dev/null"}, environ={}),
             "decode": decode.box(SETTINGS, vmlinux, tree)(
                 ["bash", str(tree / "scripts/decode_stacktrace.sh"), str(vmlinux), str(tree)],
                 None, {})}
    for name, step in steps.items():
        lines[name] = step.box(SETTINGS)(step.argv, None, dict(step.env))
    expected = {             # step: (writable, read-only besides the host's system)
        "apply": ([tree], []),
        "config": ([objdir, ccache], [tree]),
        "build": ([objdir, ccache], [tree]),
        "driver": ([moddir, ccache], [tree, objdir]),
        "decode": ([], [tree, vmlinux.parent]),
    }
    for name, argv in lines.items():
        _confinement(argv)
        writable, readable = expected[name]
        assert sorted(_targets(argv, "--bind")) == sorted(map(str, writable)), name
        assert set(map(str, readable)) <= set(_targets(argv, "--ro-bind")), name
        assert not {str(cache.root), str(cache.root / "keys")} & set(
            _targets(argv, "--bind") + _targets(argv, "--ro-bind")), name
    assert lines["apply"][lines["apply"].index("--") + 1:] == ["git", "apply", "-"]
    assert lines["apply"][lines["apply"].index("--chdir") + 1] == str(tree)
    assert lines["config"][-1] == "olddefconfig"
    assert lines["build"][-2:] == ["bzImage", "modules"]
    assert f"M={moddir}" in lines["driver"]
    for name in ("config", "build", "driver"):
        assert _env(lines[name])["CCACHE_DIR"] == str(ccache)
    # relocated for ccache: the kernel's paths relative to the cache, __FILE__ as without it
    for name in ("config", "build"):
        assert _env(lines[name])["CCACHE_BASEDIR"] == str(cache.root)
        assert "KCFLAGS=-fmacro-prefix-map=../linux/=" in lines[name]
    assert "CCACHE_BASEDIR" not in _env(lines["driver"])


def test_a_writable_path_inside_a_readable_one_is_bound_after_it(tmp_path: Path):
    work, out = tmp_path / "work", tmp_path / "work" / "obj"
    argv = sandbox.command(SETTINGS, ["true"], writable=[out], readable=[work], environ={})
    assert argv.index(str(work)) < argv.index(str(out))


def test_only_the_named_variables_reach_the_step():
    argv = sandbox.command(SETTINGS, ["true"], env={"CCACHE_DIR": "/c"},
                           environ={"PATH": "/usr/bin", "SSH_AUTH_SOCK": "/run/agent",
                                    "HOME": "/root", "CCACHE_DIR": "/elsewhere"})
    assert _env(argv) == {"PATH": "/usr/bin", "CCACHE_DIR": "/c", "HOME": "/nonexistent",
                          "TMPDIR": "/tmp"}


@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow here")
def test_private_files_are_masked():
    argv = sandbox.command(SETTINGS, ["true"], environ={})
    masked = [argv[i + 2] for i, a in enumerate(argv) if a == "--ro-bind" and
              argv[i + 1] == "/dev/null"]
    assert "/etc/shadow" in masked


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(sandbox.command(SETTINGS, argv, **kw), capture_output=True,
                          text=True, check=False, timeout=60)


@needs_sandbox
def test_writes_land_only_in_the_writable_paths(tmp_path: Path):
    writable, readable = tmp_path / "w", tmp_path / "r"
    writable.mkdir()
    readable.mkdir()
    script = (f"echo ok > {writable}/out; echo no > {readable}/out; echo no > /root-canary; "
              f"echo no > {tmp_path}/canary; echo no > \"$HOME/canary\"; true")
    ran = _run(["sh", "-c", script], writable=[writable], readable=[readable])
    assert ran.returncode == 0, ran.stderr
    assert (writable / "out").read_text() == "ok\n"
    assert not (readable / "out").exists()
    assert not Path("/root-canary").exists()
    assert not (tmp_path / "canary").exists()     # it went to the sandbox's own /tmp
    # the others are refused, not quietly taken by a scratch file system
    assert ran.stderr.count("Read-only file system") == 2, ran.stderr
    assert "/nonexistent/canary: Directory nonexistent" in ran.stderr


@needs_sandbox
def test_private_tmp_no_network_no_home_no_capabilities():
    (marker := Path("/tmp") / f"rig-sandbox-test-{os.getpid()}").write_text("host")
    try:
        ran = _run(["sh", "-c", f"""
            test -e {marker} && echo tmp-shared
            echo interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1)
            test -e {Path.home()} && echo home-visible
            grep CapEff /proc/self/status; id -u"""])
    finally:
        marker.unlink()
    assert ran.returncode == 0, ran.stderr
    assert "tmp-shared" not in ran.stdout
    assert "home-visible" not in ran.stdout
    assert "CapEff:\t0000000000000000" in ran.stdout
    assert ran.stdout.split()[-1] == "65534"
    assert "interfaces lo\n" in ran.stdout     # a network namespace with loopback only


@needs_sandbox
@pytest.mark.skipif(not os.path.exists("/etc/shadow"), reason="no /etc/shadow here")
def test_private_files_cannot_be_read():
    ran = _run(["cat", "/etc/shadow"])
    assert ran.returncode != 0 and ran.stdout == ""


@needs_sandbox
def test_a_patch_applies_in_the_sandbox(tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "tree", tree)
    series = patches.load(FIXTURES / "series-ok")
    assert patches.apply(tree, series, SETTINGS).ok
    plain = tmp_path / "plain"
    shutil.copytree(FIXTURES / "tree", plain)
    assert patches.apply(plain, series).ok
    for f in plain.rglob("*"):
        if f.is_file():
            assert (tree / f.relative_to(plain)).read_bytes() == f.read_bytes()


@needs_sandbox
def test_a_failing_step_is_named_not_bwrap(tmp_path: Path):
    box = sandbox.Box(SETTINGS, (tmp_path,))
    with pytest.raises(proc.CommandFailed, match="`make` failed"):
        proc.run(["make", "-C", str(tmp_path), "no-such-target"], "build", sandbox=box)


MISSING = dataclasses.replace(sandbox.Settings.load(), binary="no-such-bwrap")


def test_missing_bwrap_is_named():
    assert sandbox.unavailable(MISSING) == \
        "no-such-bwrap is not installed (Debian package bubblewrap)"


def test_an_untrusted_build_without_a_sandbox_is_refused():
    with pytest.raises(sandbox.SandboxUnavailable,
                       match="outside a sandbox: no-such-bwrap is not installed.*--no-sandbox"):
        sandbox.decide(True, untrusted=True, settings=MISSING)
    trusted = sandbox.decide(True, untrusted=False, settings=MISSING)
    assert trusted.settings is None and trusted.how.startswith("none: no-such-bwrap")
    assert sandbox.decide(False, untrusted=True, settings=MISSING) == sandbox.Decision(
        None, "none: --no-sandbox")


@needs_sandbox
def test_a_series_is_built_in_the_sandbox_where_there_is_one():
    decision = sandbox.decide(True, untrusted=True)
    assert decision.settings == SETTINGS and decision.how.startswith("bubblewrap ")


@pytest.mark.parametrize("command", [["run"], ["build"], ["boot", "base"], ["vet", "s.mbox"],
                                     ["bisect", "s.mbox"]])
def test_every_building_command_takes_no_sandbox(command):
    assert cli.parse([*command, "--no-sandbox"]).sandbox is False
    assert cli.parse(command).sandbox is None          # the config decides: on by default


def test_no_sandbox_reaches_the_builder_and_the_reproduce_line():
    assert config.load().build_settings.sandbox is True
    assert config.load(sandbox=False).build_settings.sandbox is False
    args = cli.parse(["vet", "s.mbox", "--no-sandbox"])
    assert vet_command.command_words(args, None) == ("rig", "vet", "s.mbox", "--no-sandbox")


@needs_sandbox
def test_a_sandbox_installed_after_the_first_check_is_seen(tmp_path: Path):
    """A first run asks before it installs the host packages: a missing bwrap must not be
    remembered for the rest of the process (CI on a new machine lost every series so)."""
    binary = tmp_path / "bwrap"
    later = dataclasses.replace(SETTINGS, binary=str(binary))
    assert "is not installed" in sandbox.unavailable(later)
    binary.symlink_to(shutil.which(SETTINGS.binary))
    assert sandbox.unavailable(later) is None
