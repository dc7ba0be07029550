"""End to end: fragments merged onto tinyconfig in the real Debian 6.1 source, fetched into the
rig's cache once, with the kernel's own tools."""

import pytest

from rig.core.cache import Cache
from rig.core.model import SourceSpec
from rig.flows.config import project_root
from rig.kernel import kconfig, sources

KCONFIGS = project_root() / "kconfigs"


@pytest.fixture(scope="module")
def source():
    return sources.prepare(SourceSpec("debian-6-1", "debian", "linux-source-6.1"), Cache())


def test_project_fragments_survive_olddefconfig(source, tmp_path):
    frags = (KCONFIGS / "qemu-guest.config", KCONFIGS / "rdma.config")
    merged = kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path))
    final = kconfig.parse(merged.text)
    assert final["CONFIG_RDMA_RXE"] == "y"
    assert final["CONFIG_PROC_PAGE_MONITOR"] == "y"
    # the same inputs are a cache hit with the same key
    again = kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path))
    assert again.key == merged.key and again.text == merged.text


def test_option_dropped_for_an_unmet_dependency_is_named(source, tmp_path):
    # RDMA_RXE depends on INET; a fragment that turns INET off must not lose RXE silently.
    no_inet = tmp_path / "no-inet.config"
    no_inet.write_text("# CONFIG_INET is not set\n")
    frags = (KCONFIGS / "qemu-guest.config", KCONFIGS / "rdma.config", no_inet)
    with pytest.raises(kconfig.ConfigError) as err:
        kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path))
    text = str(err.value)
    assert "CONFIG_RDMA_RXE=y (from rdma.config:" in text
    assert "not set in the final .config" in text
    assert "depends on INET" in text


def test_debug_fragment_survives_too(source, tmp_path):
    frags = tuple(KCONFIGS / f for f in ("qemu-guest.config", "rdma.config", "debug.config"))
    final = kconfig.parse(kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path)).text)
    assert final["CONFIG_KASAN"] == "y" and final["CONFIG_PROVE_LOCKING"] == "y"
