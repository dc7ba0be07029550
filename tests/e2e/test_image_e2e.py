"""End to end: the guest image built by the recipe, and found in the cache the second time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rig.core.cache import Cache
from rig.guest import image


def test_cached_image(tmp_path: Path):
    """The real image (built on first use, about a minute): contents and pinned host key."""
    result = image.ensure_image(Cache())
    assert result.path.stat().st_mode & 0o222 == 0, "the cached image must be read-only"
    assert result.host_key_pub.startswith("ssh-ed25519 ")
    dump = subprocess.run(["debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub",
                           str(result.path)], check=True, capture_output=True, text=True).stdout
    assert dump.split()[:2] == result.host_key_pub.split()[:2]
    keys = subprocess.run(["debugfs", "-R", "cat /root/.ssh/authorized_keys", str(result.path)],
                          check=True, capture_output=True, text=True).stdout
    assert keys.split()[:2] == result.client_key.with_suffix(".pub").read_text().split()[:2]
    # A second call is a cache hit: same entry, nothing rebuilt.
    again = image.ensure_image(Cache(), log=lambda msg: pytest.fail(f"rebuilt: {msg}"))
    assert again == result
