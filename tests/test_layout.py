"""The package's shape: every module imports on its own (no import cycle hides behind
another import), and the layers of rig/ import only downwards (LAYERS)."""
import ast
import importlib
import subprocess
import sys

import pytest
from support.paths import PROJECT

from rig.core.status import InfraError, RigError

RIG = PROJECT / "rig"
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


# Which layers each layer of rig/ may import (its own always): arrows only downwards.  A suite
# builds its programs from a kernel source (kselftest-mm), so the runtime reaches the kernel
# layer; results are the runtime's vocabulary (TestResult), so it reaches them too.
LAYERS = {
    "core": set(),
    "kernel": {"core"},
    "guest": {"core"},
    "results": {"core"},
    "runtime": {"core", "kernel", "guest", "results"},
    "flows": {"core", "kernel", "guest", "results", "runtime"},
    "commands": {"core", "kernel", "guest", "results", "runtime", "flows"},
    "cli": {"core", "kernel", "guest", "results", "runtime", "flows", "commands"},
}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _imports(source: str) -> set[str]:
    """The rig modules and packages SOURCE imports (absolute imports: the package uses no
    other kind, see test_imports_are_absolute)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("rig.")}


def upward(module: str, source: str) -> list[str]:
    """The imports of MODULE (its text SOURCE) that point at a layer it may not use."""
    me = _layer(module)
    return sorted(m for m in _imports(source) if _layer(m) != me
                  and _layer(m) not in LAYERS[me])


def _sources() -> dict[str, str]:
    return {"rig." + ".".join(p.relative_to(RIG).with_suffix("").parts): p.read_text()
            for p in RIG.rglob("*.py") if "guest_plugin" not in p.parts}


def test_every_module_is_in_a_layer():
    stray = [m for m in _sources() if m != "rig.__init__" and _layer(m) not in LAYERS]
    assert not stray, f"not in any layer of {sorted(LAYERS)}: {stray}"


@pytest.mark.parametrize("module", sorted(m for m in _sources() if m != "rig.__init__"))
def test_arrows_only_point_downwards(module):
    assert not upward(module, _sources()[module])


def test_imports_are_absolute():
    relative = [m for m, src in _sources().items()
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(src)))]
    assert not relative


def test_an_upward_import_is_found():
    """The check itself, on two lines a careless change could add."""
    assert upward("rig.results.report", "from rig.runtime.suites import SUITES\n") == [
        "rig.runtime.suites"]
    assert upward("rig.core.cache", "import rig.kernel.build\n") == ["rig.kernel.build"]
    assert upward("rig.flows.vet", "from rig.kernel import patches\n") == []


# Exceptions that are neither bad input nor broken machinery: what the kernel under test did
# (the run records it as that test's verdict), and private signals inside one module.
VERDICTS = {"GuestCrashed", "Hung"}


def test_every_error_has_one_root():
    """User input (RigError: exit 2) or infrastructure (InfraError: an infra-error outcome)."""
    stray = []
    for name in MODULES:
        for obj in vars(importlib.import_module(name)).values():
            if isinstance(obj, type) and issubclass(obj, BaseException) \
                    and obj.__module__ == name:
                roots = [r for r in (RigError, InfraError) if issubclass(obj, r)]
                if len(roots) != 1 and obj.__name__ not in VERDICTS | {RigError.__name__,
                                                                     InfraError.__name__} \
                        and not obj.__name__.startswith("_"):
                    stray.append(f"{name}.{obj.__name__}")
    assert not stray
