"""End to end: a real guest of the base variant leaves hostile files where the rig fetches its
results, and the rig's real fetch (rig.guest.machine.Guest.get over the guest's own sftp-server)
takes nothing from it but plain files under the destination, with the rig's modes.

In the guest: a setuid and a world-writable file, a setgid one in a subfolder, links to host
paths (a file and a folder, canaries of this test), a FIFO, a file past the size cap, a name
with an OSC 52 escape in it, and the JUnit file the umem suite fetches made a link to a
canary.  Nothing outside the destination may change, and every refused one is named.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rig.core import datafiles
from rig.core.cache import Cache
from rig.core.model import BootRequest
from rig.guest import ssh
from rig.guest.image import ensure_image
from rig.guest.machine import boot
from rig.runtime.suites.umem import GUEST_XML

LEFT = "/tmp/rig-left"                 # the folder the guest fills


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode,
                                         p.read_bytes() if p.is_file() and not p.is_symlink()
                                         else b"")
            for p in sorted(folder.rglob("*"))}


def test_a_guests_files_come_back_as_plain_files_under_the_destination_only(base_kernel,
                                                                            tmp_path: Path):
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "canary").write_text("host data")
    (host / "dir" / "canary").write_text("host data")
    before = _snapshot(host)
    cap = datafiles.guest_limits("fetch")["file_bytes"]
    out = tmp_path / "out"
    req = BootRequest(Path(base_kernel), ensure_image(Cache()), accel="tcg",
                      console_log=tmp_path / "console.log")
    with boot(req) as guest:
        made = guest.run(f"""set -e
            rm -rf {LEFT} && mkdir -p {LEFT}/sub
            echo '<testsuite/>' > {LEFT}/junit.xml && chmod 4777 {LEFT}/junit.xml
            echo world > {LEFT}/world && chmod 0666 {LEFT}/world
            echo group > {LEFT}/sub/setgid && chmod 2666 {LEFT}/sub/setgid
            ln -s {host / 'canary'} {LEFT}/link
            ln -s {host / 'dir'} {LEFT}/linkdir
            mkfifo {LEFT}/fifo
            truncate -s {cap + 1} {LEFT}/huge
            echo x > "{LEFT}/$(printf 'osc\\033]52;c;aGk=\\007')"
            ln -sf {host / 'canary'} {GUEST_XML}""", timeout=60)
        assert made.status == 0, made.stderr
        with pytest.raises(ssh.Refused) as folder:
            guest.get(LEFT, out / "left")
        with pytest.raises(ssh.Refused) as junit:
            guest.get(GUEST_XML, out / "umem.xml")

    assert _snapshot(host) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "host", "out"]
    fetched = out / "left"
    assert sorted(_snapshot(fetched)) == ["junit.xml", "sub", "sub/setgid", "world"]
    assert (fetched / "junit.xml").read_text() == "<testsuite/>\n"
    for name in ("junit.xml", "world", "sub/setgid"):
        assert stat.S_IMODE((fetched / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((fetched / "sub").stat().st_mode) == 0o755
    said = str(folder.value)
    for what in (f"{LEFT}/link: a symbolic link", f"{LEFT}/linkdir: a symbolic link",
                 f"{LEFT}/fifo: a FIFO", f"{LEFT}/huge: more than {cap} bytes",
                 "the name 'osc\\x1b]52;c;aGk=\\x07' has a control character"):
        assert what in said, said
    assert f"{GUEST_XML}: a symbolic link" in str(junit.value)
    assert not os.path.lexists(out / "umem.xml")
