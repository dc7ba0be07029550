"""Host packages are checked against dpkg's real database."""

import pytest

from rig import hostdeps


def test_every_stage_lists_packages():
    pkgs = hostdeps.required(["source", "build", "image", "boot"])
    assert "qemu-system-x86" in pkgs and "mmdebstrap" in pkgs and "flex" in pkgs


def test_missing_reports_only_what_dpkg_lacks():
    assert hostdeps.missing(["dpkg", "umem-rig-no-such-package"]) == ["umem-rig-no-such-package"]


def test_root_with_installing_disabled_is_given_the_exact_command(monkeypatch):
    monkeypatch.setattr(hostdeps, "required", lambda stages: ["dpkg", "umem-rig-no-such-package"])
    monkeypatch.setattr(hostdeps.os, "geteuid", lambda: 0)
    with pytest.raises(hostdeps.MissingPackages) as err:
        hostdeps.ensure(["build"], may_install=False)
    assert str(err.value).endswith(
        "\n  apt-get install -y --no-install-recommends umem-rig-no-such-package")


def test_a_normal_user_is_given_the_sudo_line(monkeypatch):
    monkeypatch.setattr(hostdeps, "required", lambda stages: ["dpkg", "umem-rig-no-such-package"])
    monkeypatch.setattr(hostdeps.os, "geteuid", lambda: 1000)
    with pytest.raises(hostdeps.MissingPackages) as err:
        hostdeps.ensure(["build"])
    assert str(err.value) == (
        "missing host packages (not root); install them with:\n"
        "  sudo apt-get install -y --no-install-recommends umem-rig-no-such-package")


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="nope"):
        hostdeps.required(["nope"])
