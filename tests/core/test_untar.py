"""rig/core/untar.py on this Python and on Debian 12's own (3.11.2, no tarfile filter, where
bench/run.py stopped with a traceback): the repository's own guest_tests archive (what the
benchmark unpacks) comes out whole with plain modes, and hostile archives (made here, each
one trick) are refused before anything is written."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.paths import PROJECT

ROOT = PROJECT
DEBIAN_12_PYTHON = Path("/usr/bin/python3.11")

# Run rig.core.untar.extract on an archive under an interpreter; print what came out or the error.
_SCRIPT = """
import json, os, sys, tarfile
sys.path.insert(0, sys.argv[1])
from rig.core import untar
archive, dest = sys.argv[2], sys.argv[3]
try:
    with tarfile.open(archive) as tar:
        untar.extract(tar, __import__("pathlib").Path(dest), archive)
except untar.UnsafeArchive as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({"filter": hasattr(tarfile, "data_filter"), "files": {
        os.path.relpath(os.path.join(d, n), dest): os.lstat(os.path.join(d, n)).st_mode & 0o7777
        for d, dirs, files in os.walk(dest) for n in dirs + files}}))
"""


def _pythons() -> list[str]:
    found = [sys.executable]
    if DEBIAN_12_PYTHON.exists():
        found.append(str(DEBIAN_12_PYTHON))
    return found


def _extract(python: str, archive: Path, dest: Path) -> dict:
    dest.mkdir()
    out = subprocess.run([python, "-c", _SCRIPT, str(ROOT), str(archive), str(dest)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
            link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


@pytest.mark.parametrize("python", _pythons())
def test_the_guest_tests_archive_comes_out_whole(python, tmp_path):
    archive = tmp_path / "guest_tests.tar"
    archive.write_bytes(subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "guest_tests"],
                                       capture_output=True, check=True).stdout)
    got = _extract(python, archive, tmp_path / "out")
    with tarfile.open(archive) as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
    assert set(got["files"]) == names
    assert (tmp_path / "out" / "guest_tests" / "conftest.py").read_bytes() == \
        (ROOT / "guest_tests" / "conftest.py").read_bytes()
    assert not any(mode & 0o7022 for mode in got["files"].values()), got["files"]


HOSTILE = {
    "absolute": (_member("/tmp/rig-untar-absolute"),),
    "climbs": (_member("a/../../rig-untar-climbs"),),
    "symlink out": (_member("guest_tests", tarfile.SYMTYPE, link="/"),
                    _member("guest_tests/rig-untar-symlink")),
    "hard link": (_member("passwd", tarfile.LNKTYPE, link="/etc/passwd"),),
    "device": (_member("null", tarfile.CHRTYPE),),
    "fifo": (_member("pipe", tarfile.FIFOTYPE),),
}


@pytest.mark.parametrize("python", _pythons())
@pytest.mark.parametrize("trick", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_before_anything_is_written(python, trick, tmp_path):
    members = [_member("first-and-harmless")] + list(HOSTILE[trick])
    archive = _archive(tmp_path / "hostile.tar", *((m, b"x") for m in members))
    got = _extract(python, archive, tmp_path / "out")
    assert "refused member" in got.get("refused", ""), got
    assert str(archive) in got["refused"]
    assert not list((tmp_path / "out").iterdir())
    assert not Path("/tmp/rig-untar-absolute").exists()
    assert not (tmp_path / "rig-untar-climbs").exists()


@pytest.mark.parametrize("python", _pythons())
def test_modes_are_plain_whatever_the_archive_says(python, tmp_path):
    archive = _archive(tmp_path / "modes.tar",
                       (_member("setuid", mode=0o6777), b"x"),
                       (_member("script", mode=0o775), b"x"),
                       (_member("dir", tarfile.DIRTYPE, mode=0o777), b""))
    files = _extract(python, archive, tmp_path / "out")["files"]
    assert files["setuid"] & 0o7022 == 0 and files["script"] & 0o100
    assert files["dir"] & 0o7022 == 0
