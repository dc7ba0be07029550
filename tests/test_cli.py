"""The command line: what `rig boot` runs in the guest, and errors that name their input."""

from rig import cli


def test_guest_command_after_double_dash_keeps_its_options():
    args = cli.parse(["boot", "base", "--accel", "tcg", "--", "sh", "-c", "rdma link; ls -l"])
    assert (args.variant, args.accel) == ("base", "tcg")
    assert args.cmd == ["sh", "-c", "rdma link; ls -l"]
    assert cli.parse(["boot", "base"]).cmd == []


def test_a_missing_config_file_is_named_and_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert cli.main(["build", "--config", str(missing)]) == cli.EXIT_NO_VERDICT
    assert f"config file {missing} does not exist" in capsys.readouterr().err
