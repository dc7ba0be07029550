"""Host packages are checked against dpkg's real database."""

import pytest

from rig.core import hostdeps


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


# --- user namespaces for a normal user: a synthetic host tree (proc/sys, etc/subuid) --------

def synthetic_host(tmp_path, sysctls: dict[str, str], subuid: str, subgid: str):
    for name, value in sysctls.items():
        path = tmp_path / "proc/sys" / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/subuid").write_text(subuid)
    (tmp_path / "etc/subgid").write_text(subgid)
    return tmp_path


def test_a_host_that_gives_namespaces_and_ids_has_no_problems(tmp_path):
    host = synthetic_host(tmp_path, {"user.max_user_namespaces": "96362",
                                     "kernel.unprivileged_userns_clone": "1"},
                          "dev:100000:65536\n", "dev:100000:65536\n")
    assert hostdeps.namespace_problems("dev", subids=True, root=host) == []


def test_each_switch_that_forbids_namespaces_is_named_with_its_fix(tmp_path):
    host = synthetic_host(tmp_path, {"user.max_user_namespaces": "0",
                                     "kernel.unprivileged_userns_clone": "0",
                                     "kernel.apparmor_restrict_unprivileged_userns": "1"},
                          "dev:100000:65536\n", "dev:100000:65536\n")
    problems = hostdeps.namespace_problems("dev", subids=False, root=host)
    assert problems == [
        ("kernel.unprivileged_userns_clone is 0; allow them with: sudo sysctl -w "
        "kernel.unprivileged_userns_clone=1 (and to keep it after a reboot: echo "
        "kernel.unprivileged_userns_clone=1 | sudo tee /etc/sysctl.d/60-umem-rig.conf)"),
        ("user.max_user_namespaces is 0; allow them with: sudo sysctl -w "
        "user.max_user_namespaces=15000 (and to keep it after a reboot: echo "
        "user.max_user_namespaces=15000 | sudo tee /etc/sysctl.d/60-umem-rig.conf)"),
        ("kernel.apparmor_restrict_unprivileged_userns is 1; allow them with: sudo sysctl -w "
        "kernel.apparmor_restrict_unprivileged_userns=0 (and to keep it after a reboot: echo "
        "kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee "
        "/etc/sysctl.d/60-umem-rig.conf)")]


def test_no_subordinate_ids_gets_a_free_range_after_everyone_elses(tmp_path):
    host = synthetic_host(tmp_path, {}, "alice:100000:65536\nbob:165536:65536\n",
                          "alice:100000:65536\ndev:300000:1000\n")
    assert hostdeps.namespace_problems("dev", subids=True, root=host) == [
        ("dev has no range of 65536 subordinate ids in /etc/subuid and /etc/subgid; add one "
        "with: sudo usermod --add-subuids 301000-366535 --add-subgids 301000-366535 dev")]
    assert hostdeps.namespace_problems("dev", subids=False, root=host) == []

