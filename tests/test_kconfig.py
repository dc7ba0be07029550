"""Fragments merged onto tinyconfig with the kernel's own tools, and every option checked.

The merges (e2e) run against the real Debian 6.1 source, fetched into the rig's cache once;
the check runs on a final .config captured from such a merge (tests/fixtures/kconfig).
"""

from pathlib import Path

import pytest

from rig.core.cache import Cache
from rig.core.model import SourceSpec
from rig.flows.config import project_root
from rig.kernel import kconfig, sources

KCONFIGS = project_root() / "kconfigs"
FIXTURES = Path(__file__).parent / "fixtures" / "kconfig"


@pytest.fixture(scope="module")
def source():
    return sources.prepare(SourceSpec("debian-6-1", "debian", "linux-source-6.1"), Cache())


def test_fragment_lines_are_parsed_with_their_origin(tmp_path):
    frag = tmp_path / "x.config"
    frag.write_text("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"s\"\n")
    reqs = kconfig.requests(frag)
    assert [(r.option, r.value, r.line) for r in reqs] == [
        ("CONFIG_A", "y", 2), ("CONFIG_B", "n", 3), ("CONFIG_C", '"s"', 4)]


def test_a_line_that_is_not_config_is_refused(tmp_path):
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_A=y\nRDMA_RXE=y\n")
    with pytest.raises(kconfig.ConfigError, match=r"bad.config:2: not a config line"):
        kconfig.requests(frag)


def test_a_dropped_option_is_named_with_its_fragment_and_dependencies():
    frags = (KCONFIGS / "qemu-guest.config", KCONFIGS / "rdma.config", FIXTURES / "no-inet.config")
    wanted = [r for f in frags for r in kconfig.requests(f)]
    with pytest.raises(kconfig.ConfigError) as err:
        kconfig.check((FIXTURES / "no-inet.final.config").read_text(), wanted,
                      FIXTURES / "linux-6.1")
    lines = str(err.value).splitlines()
    rxe = next(line for line in lines if "CONFIG_RDMA_RXE" in line)
    assert rxe.startswith("  CONFIG_RDMA_RXE=y (from rdma.config:")
    assert rxe.endswith("is not set in the final .config [drivers/infiniband/sw/rxe/Kconfig: "
                        "depends on INET && PCI && INFINIBAND; depends on INFINIBAND_VIRT_DMA]")
    assert not any("CONFIG_PROC_PAGE_MONITOR" in line for line in lines)


@pytest.mark.e2e
def test_project_fragments_survive_olddefconfig(source, tmp_path):
    frags = (KCONFIGS / "qemu-guest.config", KCONFIGS / "rdma.config")
    merged = kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path))
    final = kconfig.parse(merged.text)
    assert final["CONFIG_RDMA_RXE"] == "y"
    assert final["CONFIG_PROC_PAGE_MONITOR"] == "y"
    # the same inputs are a cache hit with the same key
    again = kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path))
    assert again.key == merged.key and again.text == merged.text


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_debug_fragment_survives_too(source, tmp_path):
    frags = tuple(KCONFIGS / f for f in ("qemu-guest.config", "rdma.config", "debug.config"))
    final = kconfig.parse(kconfig.merge(source, "tinyconfig", frags, Cache(tmp_path)).text)
    assert final["CONFIG_KASAN"] == "y" and final["CONFIG_PROVE_LOCKING"] == "y"
