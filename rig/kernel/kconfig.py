"""Kernel configuration: fragments merged onto a minimal base, then checked option by option.

The kernel's own scripts/kconfig/merge_config.sh does the merge and `make olddefconfig`
resolves dependencies; afterwards every option a fragment asked for must have survived, or
the build stops with an error naming the option and the fragment (never a silent drop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rig.core import proc, safefs
from rig.core.cache import Cache, digest
from rig.core.model import PreparedSource
from rig.core.status import RigError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


class ConfigError(RigError):
    pass


@dataclass(frozen=True)
class Request:
    option: str
    value: str                       # "y", "m", "n", a number or a quoted string
    fragment: Path
    line: int


@dataclass(frozen=True)
class MergedConfig:
    text: str                        # the final .config
    key: str                         # hash of everything that produced it
    base: str                        # e.g. tinyconfig
    fragments: tuple[Path, ...]


def parse(text: str) -> dict[str, str]:
    """Options of a .config or fragment; `# CONFIG_X is not set` reads as "n"."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = "n"
    return values


def requests(fragment: Path) -> list[Request]:
    if not fragment.is_file():
        raise ConfigError(f"config fragment {fragment} does not exist")
    found = []
    for n, raw in enumerate(fragment.read_text().splitlines(), 1):
        line = raw.strip()
        if m := _SET.match(line) or _UNSET.match(line):
            value = m.group(2) if m.re is _SET else "n"
            found.append(Request(m.group(1), value, fragment, n))
        elif line and not line.startswith("#"):
            raise ConfigError(f"{fragment}:{n}: not a config line: {raw!r}")
    return found


def _depends_on(tree: Path, option: str) -> str:
    """The `depends on` lines of OPTION's Kconfig entry, to say why it was dropped."""
    symbol = option.removeprefix("CONFIG_")
    head = re.compile(rf"^\s*(menu)?config\s+{re.escape(symbol)}\s*$")
    for kconfig in safefs.files(tree, "Kconfig"):     # the work tree: a series' links too
        try:
            lines = safefs.read_text(tree, kconfig).splitlines()
        except (OSError, safefs.LinkRefused):
            continue
        for i, line in enumerate(lines):
            if head.match(line):
                deps = []
                for follow in lines[i + 1:]:
                    if re.match(r"^\s*(menu)?config\s", follow) or follow.startswith(
                            ("endmenu", "menu ", "if ", "endif")):
                        break
                    if follow.strip().startswith("depends on"):
                        deps.append(follow.strip())
                where = kconfig
                return f"{where}: " + ("; ".join(deps) if deps else "no `depends on`")
    return "no Kconfig entry in this tree"


def check(final: str, wanted: list[Request], tree: Path) -> None:
    """Raise ConfigError naming every requested option the final config does not have."""
    have = parse(final)
    dropped = []
    for req in wanted:
        got = have.get(req.option, "n")
        if got != req.value:
            dropped.append(
                f"  {req.option}={req.value} (from {req.fragment.name}:{req.line}) "
                f"is {got if got != 'n' else 'not set'} in the final .config "
                f"[{_depends_on(tree, req.option)}]")
    if dropped:
        raise ConfigError("config options did not survive olddefconfig:\n" + "\n".join(dropped))


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        proc.run(argv, what, cwd=cwd)
    except proc.CommandFailed as e:
        raise ConfigError(e.detailed()) from None


def merge(source: PreparedSource, base: str, fragments: tuple[Path, ...],
          cache: Cache) -> MergedConfig:
    """The validated .config for BASE + FRAGMENTS on SOURCE, from the cache when possible."""
    wanted = [r for f in fragments for r in requests(f)]
    key = digest("kconfig-v1", source.version, base, [f.name for f in fragments],
                 *[f.read_bytes() for f in fragments])
    with cache.lock("config", key):
        entry = cache.lookup("config", key)
        if entry is None:
            with cache.scratch("kconfig") as objdir:
                make = ["make", "-s", "-C", str(source.tree), f"O={objdir}"]
                _run([*make, base], f"make {base}")
                _run([str(source.tree / "scripts/kconfig/merge_config.sh"), "-m", "-O",
                      str(objdir), str(objdir / ".config"), *(str(f.resolve()) for f in fragments)],
                     "merge_config.sh", cwd=source.tree)
                _run([*make, "olddefconfig"], "make olddefconfig")
                final = (objdir / ".config").read_text()
            check(final, wanted, source.tree)
            with cache.publish("config", key) as out:
                (out / ".config").write_text(final)
            entry = cache.lookup("config", key)
    return MergedConfig((entry / ".config").read_text(), key, base, fragments)
