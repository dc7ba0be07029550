"""Call traces decoded with the kernel's own decode_stacktrace.sh (from the cached 6.1 source)
on an ELF with debug information.  The ELF and the trace are synthetic (a two-function C file
compiled with -g, one frame line in the kernel's format): a debug vmlinux takes a full debug
build, which the e2e run of the debug configuration covers."""

import shutil
import subprocess
from pathlib import Path

import pytest

from rig.core.cache import Cache
from rig.flows import config
from rig.kernel import decode, sandbox, sources

SETTINGS = sandbox.Settings.load()


@pytest.fixture(scope="module")
def tree() -> Path:
    cfg = config.load()
    return sources.prepare(cfg.variant(cfg.base).source, Cache()).tree


TRACE = "[   12.3] Call Trace:\n[   12.3]  umem_pin+0x4/0x10\n"


def _debug_elf(tmp_path: Path, tree: Path) -> Path:
    """A two-function ELF with debug information, and the tree's script beside it."""
    (tmp_path / "umem.c").write_text("int umem_pin(int x)\n{\n\treturn x * 3;\n}\n"
                                     "int main(void) { return umem_pin(2); }\n")
    elf = tmp_path / "vmlinux-synthetic"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(elf), "umem.c"], cwd=tmp_path, check=True)
    (tmp_path / "scripts").mkdir()
    shutil.copy(tree / "scripts" / "decode_stacktrace.sh", tmp_path / "scripts")
    return elf


def test_a_frame_gets_its_file_and_line(tmp_path, tree):
    elf = _debug_elf(tmp_path, tree)
    assert decode.has_debug_info(elf)
    assert "umem_pin (umem.c:2)" in decode.decode(TRACE, elf, tmp_path)


@pytest.mark.skipif(sandbox.unavailable(SETTINGS) is not None, reason="no sandbox here")
def test_a_trace_is_decoded_in_the_sandbox(tmp_path, tree):
    """The same with the script run in the sandbox (rig/data/sandbox.toml)."""
    elf = _debug_elf(tmp_path, tree)
    assert "umem_pin (umem.c:2)" in decode.decode(TRACE, elf, tmp_path, SETTINGS)


def test_without_debug_information_the_text_is_kept(tmp_path, tree):
    elf = tmp_path / "stripped"
    (tmp_path / "a.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-s", "-o", str(elf), "a.c"], cwd=tmp_path, check=True)
    assert not decode.has_debug_info(elf)
    text = "[   12.3]  umem_pin+0x4/0x10\n"
    assert decode.decode(text, elf, tree) == text
