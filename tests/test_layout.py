"""The package's shape: every module imports on its own (no import cycle hides behind
another import), and no stage library reaches back into the command layer."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

RIG = Path(__file__).resolve().parent.parent / "rig"
MODULES = sorted("rig." + ".".join(p.relative_to(RIG).with_suffix("").parts)
                 for p in RIG.rglob("*.py")
                 if p.name != "__init__.py" and "guest_plugin" not in p.parts)


_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "rig" or m.startswith("rig.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


def test_each_module_imports_alone():
    """Each rig module imported first, into an interpreter that has no rig module yet."""
    done = subprocess.run([sys.executable, "-c", _ALONE, *MODULES], capture_output=True,
                          text=True, cwd=RIG.parent, check=False)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
    assert len(MODULES) > 30


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("path", sorted(p for p in RIG.glob("*.py") if p.name != "cli.py"),
                         ids=lambda p: p.name)
def test_libraries_never_import_the_command_layer(path):
    bad = {i for i in _imports(path)
           if i.lstrip(".").removeprefix("rig.").split(".")[0] in ("cli", "commands")}
    assert not bad, f"{path.name} imports {sorted(bad)}"
