"""Fragments merged onto tinyconfig with the kernel's own tools, and every option checked.

The check runs on a final .config captured from such a merge (tests/fixtures/kconfig); the
merges themselves are in tests/e2e/test_kconfig_e2e.py.
"""

import pytest
from support.paths import FIXTURES

from rig.flows.config import project_root
from rig.kernel import kconfig

KCONFIGS = project_root() / "kconfigs"
FIXTURES = FIXTURES / "kconfig"


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


