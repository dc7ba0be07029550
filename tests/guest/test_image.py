"""rig.image: the recipe, the cache key, the keys and the rig's files baked into the image."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import paramiko
import pytest
from support.as_nobody import NOBODY, as_nobody

from rig.core.cache import Cache
from rig.guest import image


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """A copy of the real recipe and rootfs, free to change."""
    src = image.DEFAULT_RECIPE
    shutil.copytree(src.parent, tmp_path / "images")
    return tmp_path / "images" / src.name


def test_real_recipe_loads():
    rec = image.Recipe.load(image.DEFAULT_RECIPE)
    assert {"python3-pyverbs", "openssh-server", "rdma-core", "iproute2"} <= set(rec.packages)
    names = {str(f.relative_to(rec.rootfs)) for f in rec.rootfs_files()}
    assert "usr/sbin/rig-init" in names


def test_recipe_errors_name_the_file(recipe: Path):
    recipe.write_text(recipe.read_text().replace("suite =", "suit ="))
    with pytest.raises(image.ImageError, match=f"{recipe}: missing key 'suite'"):
        image.Recipe.load(recipe)
    recipe.write_text("suite = [")
    with pytest.raises(image.ImageError, match=str(recipe)):
        image.Recipe.load(recipe)


def test_client_key_made_once_private(tmp_path: Path):
    cache = Cache(tmp_path)
    key = image.client_key(cache)
    first = key.read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    assert image.client_key(cache) == key and key.read_bytes() == first
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key))
    assert key.with_suffix(".pub").read_text().split()[1] == loaded.get_base64()


def test_key_follows_recipe_rootfs_modes_and_client_key(recipe: Path):
    rec = image.Recipe.load(recipe)
    base = image.image_key(rec, "ssh-ed25519 AAAA1")
    assert image.image_key(rec, "ssh-ed25519 AAAA1") == base
    assert image.image_key(rec, "ssh-ed25519 AAAA2") != base
    init = rec.rootfs / "usr/sbin/rig-init"
    init.chmod(0o644)
    assert image.image_key(rec, "ssh-ed25519 AAAA1") != base
    init.chmod(0o755)
    init.write_text(init.read_text() + "\n")
    assert image.image_key(rec, "ssh-ed25519 AAAA1") != base


def test_rig_files_tarball(recipe: Path, tmp_path: Path):
    rec = image.Recipe.load(recipe)
    private, public = image._keypair()
    dest = tmp_path / "rig-files.tar"
    image._overlay_tar(rec, "ssh-ed25519 CLIENT", private, public, dest)
    with tarfile.open(dest) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("root/.ssh/authorized_keys").read() == b"ssh-ed25519 CLIENT\n"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["usr/sbin/rig-init"].mode == 0o755
    assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert members["root/.ssh"].isdir() and members["root/.ssh"].mode == 0o700
    # No entry may replace Debian's directories or merged-/usr symlinks (/sbin -> usr/sbin).
    assert not any(m.isdir() for name, m in members.items() if name != "root/.ssh")


@pytest.mark.skipif(shutil.which("sh") is None, reason="no /bin/sh")
def test_init_script_parses():
    subprocess.run(["sh", "-n", str(image.DEFAULT_RECIPE.parent / "rootfs/usr/sbin/rig-init")],
                   check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_a_normal_users_chroot_is_where_its_subordinate_root_can_reach():
    """mmdebstrap's TMPDIR as a normal user: the rig's scratch where every folder above it
    lets others pass, else a folder of the rig's in /var/tmp, never one under a home's
    ~/.cache of mode 0700 (there the subordinate root failed: exit 25)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="rig-test-image.") as top:
        top = Path(top)
        top.chmod(0o755)
        for name, mode in (("open", 0o755), ("private", 0o700)):
            (top / name / "work").mkdir(parents=True)
            for path in (top / name, top / name / "work"):
                os.chown(path, NOBODY, NOBODY)
            (top / name).chmod(mode)

        def chroot_parent(work: Path) -> str:
            with image._chroot_parent(work) as parent:
                mode = parent.stat().st_mode & 0o777
                reachable = image._reachable_by_others(parent)
            return f"{parent} {mode:o} {reachable} {parent.exists()}"

        said = as_nobody(lambda: chroot_parent(top / "open" / "work"))
        assert said == f"{top / 'open' / 'work'} 711 True True"
        said = as_nobody(lambda: chroot_parent(top / "private" / "work"))
        parent, mode, reachable, left = said.rsplit(" ", 3)
        assert Path(parent).parent == image.VAR_TMP and (mode, reachable) == ("711", "True")
        assert left == "False"                        # removed when mmdebstrap is done
