"""End to end: Debian's source packages through the real apt: the candidate remembered while
apt's lists are unchanged, and an unknown package named."""

import pytest

from rig.kernel import sources


def test_candidate_is_remembered_until_the_lists_change(tmp_path, monkeypatch):
    memo = tmp_path / "memo.json"
    version = sources.debian_candidate("linux-source-6.1", memo)
    assert version.startswith("6.1.")
    asked = []
    monkeypatch.setattr(sources, "_apt_candidate", lambda pkg, archive: asked.append(pkg) or "x")
    assert sources.debian_candidate("linux-source-6.1", memo) == version and not asked
    monkeypatch.setattr(sources, "_lists_stamp", lambda lists: "after apt-get update")
    assert sources.debian_candidate("linux-source-6.1", memo) == "x" and asked


def test_unknown_package_is_named():
    with pytest.raises(sources.SourceError, match="umem-rig-no-such-package"):
        sources._apt_candidate("umem-rig-no-such-package", None)
