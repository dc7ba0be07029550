"""The guest image: a Debian root filesystem built with mmdebstrap into an ext4 disk image.

Built once per recipe into the cache (kind "image").  The rig's client key is made once per
cache and its public half baked into /root/.ssh/authorized_keys; the guest's ssh host key is
made at image build time, baked in, and its public half kept beside the image for pinning.
No root is needed where user namespaces work: as a normal user mmdebstrap runs in unshare mode
(the guest's root is a subordinate uid) and writes a tarball the user owns, which genext2fs
makes the disk from.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rig.core import hostdeps, proc
from rig.core.cache import Cache, digest, locked
from rig.core.model import ImageResult
from rig.core.status import RigError

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "images" / "bookworm.toml"

DISK = "disk.img"
HOST_KEY_PUB = "host_key.pub"
PACKAGES = "packages.txt"           # "name version" of every package in the image
BUILD_LOG = "build.log"
VAR_TMP = Path("/var/tmp")


class ImageError(RigError):
    """The image could not be built; the message names the input and what went wrong."""


@dataclass(frozen=True)
class Recipe:
    path: Path
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    dpkg_options: tuple[str, ...]
    free_mb: int
    rootfs: Path

    @classmethod
    def load(cls, path: Path) -> Recipe:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ImageError(f"image recipe {path}: {e}") from None
        try:
            recipe = cls(
                path=path,
                suite=str(data["suite"]),
                mirror=str(data["mirror"]),
                variant=str(data["variant"]),
                packages=tuple(str(p) for p in data["packages"]),
                dpkg_options=tuple(str(o) for o in data.get("dpkg_options", ())),
                free_mb=int(data["free_mb"]),
                rootfs=path.parent / str(data["rootfs"]),
            )
        except KeyError as e:
            raise ImageError(f"image recipe {path}: missing key {e}") from None
        except (TypeError, ValueError) as e:
            raise ImageError(f"image recipe {path}: {e}") from None
        if not recipe.rootfs.is_dir():
            raise ImageError(f"image recipe {path}: rootfs {recipe.rootfs} is not a directory")
        return recipe

    def rootfs_files(self) -> list[Path]:
        return sorted(p for p in self.rootfs.rglob("*") if p.is_file())


def _keypair() -> tuple[bytes, str]:
    """A new Ed25519 key: (OpenSSH private key, "ssh-ed25519 AAAA..." public key)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def client_key(cache: Cache) -> Path:
    """The rig's ssh client key for this cache (made on first use, mode 0600)."""
    path = cache.root / "keys" / "id_ed25519"
    with locked(path.parent / ".lock"):
        if not path.exists():
            private, public = _keypair()
            tmp = path.with_suffix(".partial")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(private)
            path.with_suffix(".pub").write_text(public + " umem-rig\n")
            tmp.rename(path)
    return path


def image_key(recipe: Recipe, client_pub: str) -> str:
    parts: list[object] = [recipe.path.read_bytes(), client_pub]
    for f in recipe.rootfs_files():
        parts += [str(f.relative_to(recipe.rootfs)), _mode(f), f.read_bytes()]
    return digest(*parts)


def ensure_image(cache: Cache, recipe: Path = DEFAULT_RECIPE,
                 log: Callable[[str], None] = print,
                 detail: Callable[[str], None] | None = None) -> ImageResult:
    """The cached image for RECIPE, built first if the cache has none; DETAIL hears each
    line the build tools print."""
    rec = Recipe.load(recipe)
    key_path = client_key(cache)
    client_pub = key_path.with_suffix(".pub").read_text().strip()
    key = image_key(rec, client_pub)
    with cache.lock("image", key):
        entry = cache.lookup("image", key)
        if entry is None:
            hostdeps.check_namespaces("building the guest image (mmdebstrap)", subids=True)
            log(f"building guest image {key[:12]} from {recipe} (takes about a minute)")
            start = time.monotonic()
            with cache.publish("image", key) as entry_dir, cache.scratch("image") as work:
                _build(rec, client_pub, entry_dir, work, detail)
            entry = cache.path("image", key)
            log(f"guest image built in {time.monotonic() - start:.0f} s: {entry / DISK}")
    return ImageResult(path=entry / DISK, key=key,
                       host_key_pub=(entry / HOST_KEY_PUB).read_text().strip(),
                       client_key=key_path)


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


def _overlay_tar(rec: Recipe, client_pub: str, host_private: bytes, host_public: str,
                 dest: Path) -> None:
    """The rig's files as a tarball owned by root, unpacked over the installed system.

    Only files (and /root/.ssh) are listed: a directory entry for /sbin or /etc would
    replace the merged-/usr symlinks or reset modes of what Debian installed.
    """
    def add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(dest, "w") as tar:
        for f in rec.rootfs_files():
            add(tar, str(f.relative_to(rec.rootfs)), f.read_bytes(), _mode(f))
        ssh_dir = tarfile.TarInfo("root/.ssh")
        ssh_dir.type, ssh_dir.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(ssh_dir)
        add(tar, "root/.ssh/authorized_keys", (client_pub + "\n").encode(), 0o600)
        add(tar, "etc/ssh/ssh_host_ed25519_key", host_private, 0o600)
        add(tar, "etc/ssh/ssh_host_ed25519_key.pub", (host_public + " root@rig-guest\n").encode(),
            0o644)


def _run(cmd: list[str], logfile: Path, what: str, ok: tuple[int, ...] = (0,),
         on_line: Callable[[str], None] | None = None,
         env: dict[str, str] | None = None) -> None:
    try:
        proc.run(cmd, what, log=logfile, ok=ok, on_line=on_line, env=env)
    except proc.CommandFailed as e:
        # The log goes with the unpublished entry: the message carries its excerpt.
        raise ImageError(f"{what}: `{cmd[0]}` " + (
            "is not installed" if e.status is None else
            f"failed (exit {e.status}):\n{e.excerpt}")) from None


def _build(rec: Recipe, client_pub: str, out: Path, work: Path,
           detail: Callable[[str], None] | None) -> None:
    host_private, host_public = _keypair()
    logfile = out / BUILD_LOG
    overlay = work / "rig-files.tar"
    _overlay_tar(rec, client_pub, host_private, host_public, overlay)
    rootfs_tar = work / "rootfs.tar"
    mode = "root" if os.geteuid() == 0 else "unshare"
    cmd = ["mmdebstrap", f"--mode={mode}", f"--variant={rec.variant}", "--format=tar",
           "--aptopt=APT::Install-Recommends \"false\"",
           "--include=" + ",".join(rec.packages)]
    cmd += [f"--dpkgopt={opt}" for opt in rec.dpkg_options]
    cmd += [
        # Debian's postinst made host keys of every type; the guest offers only ours.
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        f"--customize-hook=tar-in {overlay} /",
        f"--customize-hook=download /var/lib/dpkg/status {work / 'dpkg-status'}",
        rec.suite, str(rootfs_tar), rec.mirror,
    ]
    with _chroot_parent(work) as tmpdir:
        _run(cmd, logfile, f"mmdebstrap for {rec.path}", on_line=detail,
             env={"TMPDIR": str(tmpdir)})
    # The tree plus metadata overhead plus the recipe's free space, in 4 KiB blocks.
    blocks = (int(rootfs_tar.stat().st_size * 1.2) + rec.free_mb * 2**20) // 4096
    disk = out / DISK
    # genext2fs takes owners and modes from the tarball, so no root is needed (mke2fs -d
    # reads tarballs only from e2fsprogs 1.47.1 on); tune2fs then makes the ext2 an ext4.
    _run(["genext2fs", "-B", "4096", "-b", str(blocks), "-i", "8192", "-L", "rig-root",
          "-a", str(rootfs_tar), str(disk)], logfile, f"genext2fs for {rec.path}")
    _run([_sbin("tune2fs"), "-O", "extents,uninit_bg,dir_index,has_journal", str(disk)], logfile,
         f"tune2fs for {rec.path}")
    # Exit status 1: e2fsck finished what tune2fs asked of it (uninit_bg, dir_index).
    _run([_sbin("e2fsck"), "-f", "-y", str(disk)], logfile, f"e2fsck for {rec.path}", ok=(0, 1))
    (out / PACKAGES).write_text(_package_versions(work / "dpkg-status"))
    (out / HOST_KEY_PUB).write_text(host_public + "\n")
    shutil.copy(rec.path, out / "recipe.toml")
    # A boot only ever reads the image through an overlay; make an accident loud.
    disk.chmod(0o444)


def _sbin(tool: str) -> str:
    """TOOL from e2fsprogs, which lives in /usr/sbin (or /sbin): not on a normal user's PATH
    on Debian."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path) or tool


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


@contextlib.contextmanager
def _chroot_parent(work: Path) -> Iterator[Path]:
    """Where mmdebstrap makes the chroot it packs into the tarball (its TMPDIR).

    As root: the rig's scratch WORK, swept if the rig is killed.  In unshare mode the
    chroot's root is a subordinate uid, which must reach the chroot: through WORK where every
    folder above it lets others pass (a cache under ~/.cache, mode 0700, does not), else a
    folder of the rig's own in /var/tmp (on disk, where trixie's /tmp is a RAM tmpfs).
    mmdebstrap removes the chroot, and the rig that folder, when done.
    """
    if os.geteuid() == 0:
        yield work
        return
    if _reachable_by_others(work.parent):
        work.chmod(0o711)
        yield work
        return
    folder = Path(tempfile.mkdtemp(prefix=f"umem-rig-image.{os.getpid()}.", dir=VAR_TMP))
    try:
        folder.chmod(0o711)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _package_versions(status: Path) -> str:
    lines, name = [], ""
    for line in status.read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split(None, 1)[1]
        elif line.startswith("Version: ") and name:
            lines.append(f"{name} {line.split(None, 1)[1]}")
    return "\n".join(sorted(lines)) + "\n"
