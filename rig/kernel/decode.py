"""Call traces decoded to file:line, where the variant's vmlinux has debug information (the
debug configuration): the kernel's own scripts/decode_stacktrace.sh does it, from the tree
the variant was built from, on the vmlinux the build kept.  That script is the series' too:
it runs in the sandbox (rig/kernel/sandbox.py) as the build did."""

from __future__ import annotations

from pathlib import Path

from rig.core import proc
from rig.kernel import sandbox as sandboxlib


def has_debug_info(vmlinux: Path) -> bool:
    try:
        sections = proc.run(["readelf", "-S", "-W", str(vmlinux)], "readelf", check=False)
    except proc.CommandFailed:
        return False
    return sections.status == 0 and ".debug_info" in sections.stdout


def box(settings: sandboxlib.Settings, vmlinux: Path, tree: Path) -> sandboxlib.Box:
    """The script comes from the work tree, which a series may have changed: it reads the
    tree and the vmlinux, and writes nothing."""
    return sandboxlib.Box(settings, readable=(tree, vmlinux.parent))


def decode(text: str, vmlinux: Path, tree: Path,
           sandbox: sandboxlib.Settings | None = None) -> str:
    """TEXT with each trace frame followed by its file:line (paths relative to TREE); TEXT
    itself when there is nothing to decode it with.  With SANDBOX, the script runs in it."""
    script = tree / "scripts" / "decode_stacktrace.sh"
    if not text.strip() or not script.is_file() or not has_debug_info(vmlinux):
        return text
    try:
        done = proc.run(["bash", str(script), str(vmlinux), str(tree)],
                        "decode_stacktrace.sh", input=text, check=False,
                        sandbox=box(sandbox, vmlinux, tree) if sandbox else None)
    except proc.CommandFailed:
        return text
    return done.stdout if done.status == 0 and done.stdout.strip() else text
