"""Run configuration: the embedded defaults, a user's TOML file over them, flags over both."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from rig.core import datafiles
from rig.core.model import GUEST_MEMORY_MB, BuildSettings, SourceSpec, Variant
from rig.core.status import RigError
from rig.core.text import check_name
from rig.kernel import patches as patchlib
from rig.runtime import lab as lablib
from rig.runtime.suites import SUITES

_HOST_RESERVE_MB = 2048              # left to the builds and the rig itself


class ConfigFileError(RigError):
    pass


@dataclass(frozen=True)
class Timeouts:
    boot: float = 120
    silence: float = 60
    test: float = 30
    suite: float = 1200


@dataclass
class RunConfig:
    project: Path
    out: Path
    accel: str
    parallel: int
    jobs: int
    base_config: str
    fragments: tuple[Path, ...]
    install_packages: bool
    timeouts: Timeouts
    variants: list[Variant]
    base: str
    # variants whose patch set could not even be read: name -> the error, reported as
    # patch-failed while the others go on
    unloadable: dict[str, str] = field(default_factory=dict)
    # --select: which tests run ("EXPR" for the umem suite, "SUITE:EXPR" for another's;
    # rig/runtime/suites/ says what EXPR means to each); () = all
    select: tuple[str, ...] = ()
    lab: lablib.LabSettings | None = None   # --lab: boot on this lab, not in a local QEMU
    sandbox: bool = True             # build a series only in the sandbox (rig/kernel/sandbox.py)
    suites: tuple[str, ...] = ("umem",)          # the test suites each variant runs, in order
    suite_settings: dict[str, dict] = field(default_factory=dict)   # [suites.NAME] tables
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    vet_tree: Path | None = None     # [vet] tree: the kernel git tree `rig vet` uses
    confirm: int = 0                 # [run] confirm: re-runs of each test a candidate changed
    restore: bool = True             # [run] restore: a crashed guest is restored, not rebooted

    @property
    def build_settings(self) -> BuildSettings:
        return BuildSettings(self.project / "guest_tests" / "driver", self.base_config,
                             self.jobs, sandbox=self.sandbox)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise ConfigFileError(f"no variant named {name!r} (known: {known})")


def project_root() -> Path:
    """The checkout holding kconfigs/, patches/ and guest_tests/ (the rig runs from it)."""
    env = os.environ.get("RIG_PROJECT")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "kconfigs").is_dir():
        raise ConfigFileError(f"{root} is not a umem-rig checkout (no kconfigs/); "
                              "set RIG_PROJECT to the checkout")
    return root


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(
            base.get(k), dict) else v
    return merged


def read(path: Path | None) -> dict:
    data = datafiles.toml("default.toml")
    if path is not None:
        try:
            user = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigFileError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"config file {path}: cannot read it: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"config file {path}: {exc}") from None
        data = _merge(data, user)
    _check(data, path)
    return data


# TOML has nan and inf; no setting means either
_FINITE = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "number", lambda _, x: isinstance(x, int | float) and not isinstance(x, bool)
    and math.isfinite(x))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_FINITE)


def _check(data: dict, path: Path | None) -> None:
    """DATA against rig/data/config-schema.toml: the first thing wrong, named by its key."""
    error = jsonschema.exceptions.best_match(
        _Validator(datafiles.toml("config-schema.toml")).iter_errors(data))
    if error is not None:
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error.absolute_path)
        raise ConfigFileError(f"config file {path or '(the defaults)'}: "
                              f"{where.lstrip('.') or 'top level'}: {error.message}")


def auto_parallel(variants: int) -> int:
    """Variants booted side by side: a core and a guest's memory each, as the host has them.

    Under TCG a guest keeps one core busy; builds are serialised per source anyway.
    """
    by_memory = (_available_mb() - _HOST_RESERVE_MB) // GUEST_MEMORY_MB
    return max(1, min(os.cpu_count() or 1, by_memory, variants))


def _available_mb() -> int:
    """MemAvailable: free memory plus the page cache the kernel can drop."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) >> 10
    except OSError:
        pass
    return GUEST_MEMORY_MB + _HOST_RESERVE_MB


def source_spec(name: str, table: dict, root: Path) -> SourceSpec:
    kind = table.get("kind")
    path = table.get("path")
    return SourceSpec(name=name, kind=kind or "", package=table.get("package", ""),
                      suite=table.get("suite", table.get("release", "")),   # older name
                      path=(root / path) if path else None, ref=table.get("ref", ""))


def load(path: Path | None = None, *, variants: list[str] | None = None,
         extra_patches: list[Path] | None = None, accel: str | None = None,
         out: Path | None = None, debug: bool | None = None, onto: str | None = None,
         select: list[str] | None = None, lab: str | None = None,
         sandbox: bool | None = None, suites: list[str] | None = None) -> RunConfig:
    root = project_root()
    data = read(path)
    run = data["run"]
    debug = run.get("debug", False) if debug is None else debug
    where = f"config file {path or '(the defaults)'}"
    frags = _fragments(run["fragments"], root, f"{where}: [run] fragments")
    if debug:
        frags.append(root / "kconfigs" / "debug.config")
    sources = {n: source_spec(n, t, root) for n, t in data.get("sources", {}).items()}
    chosen, unloadable, base_name = _variants(data.get("variants", []), sources, frags, root,
                                              where, variants or [])
    cfg = RunConfig(
        project=root, out=Path(out or run["out"]), accel=accel or run["accel"],
        parallel=1, jobs=int(run["jobs"]) or os.cpu_count() or 1,
        base_config=run["base_config"], fragments=tuple(frags),
        install_packages=bool(run["install_packages"]),
        timeouts=Timeouts(**data.get("timeouts", {})), variants=chosen, base=base_name,
        unloadable=unloadable, select=tuple(select or ()),
        sandbox=bool(run["sandbox"]) if sandbox is None else sandbox,
        suites=tuple(suites or run.get("suites", ["umem"])),
        suite_settings=data.get("suites", {}), sources=sources, confirm=int(run["confirm"]),
        restore=bool(run["restore"]),
        vet_tree=root / Path(data["vet"]["tree"]).expanduser() if data["vet"]["tree"] else None)
    unknown = [s for s in cfg.suites if s not in SUITES]
    if unknown or len(set(cfg.suites)) != len(cfg.suites):
        raise ConfigFileError(f"suites {list(cfg.suites)}: each must be one of "
                              f"{', '.join(SUITES)}, once")
    if onto:
        cfg.base = cfg.variant(onto).name
    added = _add_patches(cfg, extra_patches or [])
    if variants:
        for name in variants:
            cfg.variant(name)
        keep = {cfg.base, *variants, *added}
        cfg.variants = [v for v in cfg.variants if v.name in keep]
    if lab:
        try:
            cfg.lab = lablib.settings(lab, data.get("labs", {}), root)
        except lablib.LabError as exc:
            raise ConfigFileError(str(exc)) from None
    cfg.parallel = (auto_parallel(len(cfg.variants)) if run["parallel"] == "auto"
                    else run["parallel"])
    return cfg


def _fragments(names: list[str], root: Path, where: str) -> list[Path]:
    """The kconfigs/ files NAMES name: a plain name of a file there, nothing outside it."""
    paths = []
    for name in names:
        path = root / "kconfigs" / check_name(name, f"{where}:", ConfigFileError)
        if not path.is_file():
            raise ConfigFileError(f"{where}: {name!r} is not a file in {root / 'kconfigs'}")
        paths.append(path)
    return paths


def _variants(tables: list[dict], sources: dict[str, SourceSpec], frags: list[Path], root: Path,
              where: str, wanted: list[str]) -> tuple[list[Variant], dict[str, str], str]:
    """The [[variants]] tables as variants (opt-in ones only where WANTED), the series that
    would not load by name, and the base's name."""
    chosen: list[Variant] = []
    unloadable: dict[str, str] = {}
    base_name = ""
    for table in tables:
        name = check_name(table["name"], f"{where}: variant", ConfigFileError)
        if name in (v.name for v in chosen):
            raise ConfigFileError(f"{where}: variant {name}: named twice")
        if table.get("source") not in sources:
            raise ConfigFileError(f"{where}: variant {name}: unknown source "
                                  f"{table.get('source')!r}")
        if table.get("opt_in") and name not in wanted:
            continue            # defined, but run only where named (--variant)
        series: tuple = ()
        if table.get("patches"):
            try:
                series = tuple(patchlib.load(root / table["patches"]))
            except patchlib.PatchError as exc:
                unloadable[name] = str(exc)
        own = _fragments(table.get("fragments", []), root, f"{where}: variant {name}: fragments")
        chosen.append(Variant(name, sources[table["source"]], (*frags, *own), series,
                              table.get("patches", "")))
        if table.get("base"):
            if base_name:
                raise ConfigFileError(f"{where}: variants {base_name} and {name} are both "
                                      "marked base = true: one variant is the base")
            base_name = name
    if not base_name:
        raise ConfigFileError(f"{where}: no variant is marked base = true")
    return chosen, unloadable, base_name


def _add_patches(cfg: RunConfig, extra_patches: list[Path]) -> list[str]:
    """A variant for each --patch, on the base; their names.  A name a variant has already
    (patches/umem-rfc given to a nightly beside the umem-rfc variant) gains "-candidate": one
    run's variants are named once each, as results.json holds them."""
    names = []
    for extra in extra_patches:
        onto = cfg.variant(cfg.base)
        name = check_name(extra.stem if extra.is_file() else extra.name,
                          f"--patch {extra}: variant name", ConfigFileError)
        while name in {v.name for v in cfg.variants}:
            name += "-candidate"
        series = tuple(patchlib.load(extra))   # a bad --patch is the user's error: raise
        cfg.variants.append(Variant(name, onto.source, onto.fragments,
                                    onto.patches + series, str(extra)))
        names.append(name)
    return names
