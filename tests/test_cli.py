"""The command line: what `rig boot` runs in the guest, and errors that name their input."""


import pytest
from support.cli import rig
from support.paths import FIXTURES

from rig import cli
from rig.core.status import ExitStatus


def test_guest_command_after_double_dash_keeps_its_options():
    args = cli.parse(["boot", "base", "--accel", "tcg", "--", "sh", "-c", "rdma link; ls -l"])
    assert (args.variant, args.accel) == ("base", "tcg")
    assert args.cmd == ["sh", "-c", "rdma link; ls -l"]
    assert cli.parse(["boot", "base"]).cmd == []


def test_a_missing_config_file_is_named_and_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert cli.main(["build", "--config", str(missing)]) == ExitStatus.NO_VERDICT
    assert f"config file {missing} does not exist" in capsys.readouterr().err


# --- every input a user can type wrong: exit 2, one line naming it, no traceback -------------



@pytest.mark.parametrize("argv, says", [
    (["run", "--patch", "/nonexistent.patch"], "/nonexistent.patch: no such file"),
    (["run", "--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
    (["run", "--variant", "nosuch"], "no variant named 'nosuch' (known: base, "),
    (["build", "--variant", "nosuch"], "no variant named 'nosuch'"),
    (["boot", "nosuch"], "no variant named 'nosuch'"),
    (["vet", "/nonexistent.mbox"], "/nonexistent.mbox: no such file"),
    (["vet", str(FIXTURES / "vet" / "garbage.bin")], "binary data, not a patch"),
    (["bisect", "/nonexistent.mbox"], "/nonexistent.mbox: no such file"),
    (["bisect", "--git", "/nonexistent", "a..b"], "/nonexistent is not a git repository"),
    (["report", "/nonexistent.json"], "/nonexistent.json: cannot read: No such file"),
    (["report", str(FIXTURES / "patches" / "plain.diff")], "plain.diff: not JSON"),
    (["history", "/nonexistent"], "/nonexistent: not a directory"),
    (["cache", "--clear", "nosuch"], "'nosuch' is not a kind of cache entry; the kinds are "),
    (["cache", "--clear", "/"], "'/' is not a kind of cache entry"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, says):
    done = rig(tmp_path, *argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("rig: ") and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "cache").exists() or argv[0] == "cache"


def test_a_bug_keeps_its_traceback_and_says_it_is_one(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(cli.report, "run", broken)
    assert cli.main(["report", "x.json"]) == ExitStatus.NO_VERDICT
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: boom" in err
    assert err.strip().endswith("please report it with the traceback above")


# --- rig cache --clear removes only the cache's own kinds ------------------------------------

@pytest.mark.parametrize("kind", ["/", "..", "../x", "kernel/..", "", "nosuch"])
def test_cache_clear_refuses_anything_but_a_kind(tmp_path, kind):
    root = tmp_path / "cache"
    (root / "kernel" / "abc").mkdir(parents=True)
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep me")
    (tmp_path / "x").mkdir()
    done = rig(tmp_path, "cache", "--cache", str(root), "--clear", kind)
    assert done.returncode == 2, done.stdout       # `--clear ''` is not `--clear`
    assert sentinel.read_text() == "keep me" and (tmp_path / "x").is_dir()
    assert (root / "kernel" / "abc").is_dir()


def test_cache_clear_of_everything_leaves_what_is_not_the_rigs(tmp_path):
    root = tmp_path / "cache"
    for kind in ("kernel/abc", "image/def", "tmp/1.x-y"):
        (root / kind).mkdir(parents=True)
    (root / "my-notes.txt").write_text("not the rig's")
    done = rig(tmp_path, "cache", "--cache", str(root), "--clear")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in root.iterdir()) == ["my-notes.txt"]
    one = rig(tmp_path, "cache", "--cache", str(tmp_path / "c2"), "--clear", "kernel")
    assert one.returncode == 0 and "cleared nothing" in one.stdout


def test_boot_refuses_a_variant_whose_patches_cannot_be_read(tmp_path):
    """Not the unpatched kernel under the variant's name: the same verdict `rig run` gives."""
    garbage = FIXTURES / "vet" / "garbage.bin"
    config = tmp_path / "rig.toml"
    config.write_text('[[variants]]\nname = "base"\nsource = "debian-6-1"\nbase = true\n\n'
                      f'[[variants]]\nname = "broken"\nsource = "debian-6-1"\n'
                      f'patches = "{garbage}"\n')
    done = rig(tmp_path, "boot", "broken", "--config", str(config), "--", "true")
    assert done.returncode == 2
    assert done.stderr.startswith(f"rig: broken: patch-failed: {garbage}: binary data, not a "
                                  "patch"), done.stderr
    assert len(done.stderr.splitlines()) == 1
