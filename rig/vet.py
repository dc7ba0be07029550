"""Vetting: test a patch or series from the list against the base, and say what it changes.

The series (an mbox, a .patch, a series folder) goes on top of the base variant or of the one
named with --onto; both kernels run the guest suite, the report is written as by a run, and
a short plain-text summary for a reply on the list: the series, what it fixed and regressed
with the observations that changed, the kernel it ran on, how to reproduce.  A patch set that
cannot be read is refused before anything is built or written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import machinery
from . import patches as patchlib
from .cache import Cache
from .compare import Change, Comparison, VariantComparison, base_summary
from .config import RunConfig
from .model import Outcome, Patch, Variant
from .progress import Progress
from .report import show_observed
from .results import VariantResult, Verdict
from .run import Runner, RunOutput
from .status import RigError
from .text import variant_name

SUMMARY = "vet-summary.txt"
LIMIT = 10                       # cells of one kind listed before pointing to the report
_NOT_RUN = {
    Outcome.PATCH_FAILED: "The series does not apply",
    Outcome.BUILD_FAILED: "The kernel with the series does not build",
    Outcome.BOOT_FAILED: "The kernel with the series did not boot",
    Outcome.PANICKED: "The kernel with the series panicked while booting",
    Outcome.HUNG: "The kernel with the series hung while booting",
    Outcome.INFRA_ERROR: "The rig could not test the series",
}


def candidate(onto: Variant, series: Sequence[Patch], path: Path) -> Variant:
    """ONTO plus SERIES, named for the file or folder it came from."""
    name = variant_name(path.name if path.is_dir() else path.stem)
    if name == onto.name:
        name += "-candidate"
    return Variant(name, onto.source, onto.fragments, onto.patches + tuple(series), str(path))


def _cell(vc: VariantComparison, change: Change) -> list[str]:
    cells = [c for c in vc.cells if c.change is change]
    lines = []
    for c in cells[:LIMIT]:
        t = c.test
        where = " ".join(filter(None, (t.region, t.access)))
        verdicts = c.base.verdict.value if c.base else "-"
        if c.other and (not c.base or c.other.verdict is not c.base.verdict):
            verdicts += f" -> {c.other.verdict.value}"
        lines.append(f"  {t.check} [{where}]: {verdicts}")
        lines += [f"      {d.key}: {show_observed(d.base)} -> {show_observed(d.other)}"
                  for d in c.differences if d.key != "verdict"][:3]
    if len(cells) > LIMIT:
        lines.append(f"  ... and {len(cells) - LIMIT} more in report.html")
    return lines


def _release(v: VariantResult) -> str:
    return f"kernel {v.environment.kernel_release}" if v.environment.kernel_release else ""


def _kernel(v: VariantResult) -> str:
    env = v.environment
    release = f" ({_release(v)})" if _release(v) else ""
    return f"{env.source} {env.source_version}{release}".strip()


def summary(comparison: Comparison, name: str, series: Sequence[Patch], command: str) -> str:
    """The reply: the series, the verdict, fixed/regressed/changed cells, environment."""
    vc = next(v for v in comparison.variants if v.name == name)
    base, cand = comparison.base, vc.variant
    onto = len(base.environment.patches)
    lines = [f"Series ({len(series)} patch{'es' * (len(series) > 1)}):"]
    for p in series:
        lines.append(f"  {p.prefix + ' ' if p.prefix else ''}{p.subject}")
        lines += [f"    From: {p.author}"] if p.author else []
        lines += [f"    Message-Id: <{p.message_id}>"] if p.message_id else []
    lines.append("")
    if build := machinery.files(series):
        sandbox = cand.environment.sandbox or "not recorded"
        how = (f"Applied and built WITHOUT a sandbox ({sandbox}): its code ran on the host"
               if sandbox.startswith("none") else
               f"Applied and built in the sandbox: {sandbox}")
        lines += ["BUILD MACHINERY: the series changes files that run on the host while the "
                  + "kernel is built:", *(f"  {f}" for f in build), f"  {how}",
                  "  Read those changes before trusting the result.", ""]
    if refused := cand.environment.sandbox_refused:
        lines += ["The sandbox refused writes while the series was built (build log):",
                  *(f"  {line}" for line in refused), ""]
    if not cand.has_verdict:
        err = cand.errors[0] if cand.errors else None
        lines.append(f"{_NOT_RUN.get(cand.outcome, cand.outcome.value)}: "
                     f"{err.message if err else 'no error recorded'}")
        if err and err.excerpt:
            lines += ["", *(f"  {line}" for line in err.excerpt.strip().splitlines()[:12])]
        lines += ["", f"What was tested: {base_summary(base)}"]
    elif not base.has_verdict:
        lines.append(f"Not comparable: {base_summary(base)}")
    else:
        regressed = vc.count(Change.REGRESSED)
        others = "".join(f", {n} {c.value}" for c in (Change.LOST, Change.NEW,
                                                      Change.NOT_COMPARABLE)
                         if (n := vc.count(c)))
        lines.append(f"Result: {'REGRESSION' if regressed else 'no regression'}: "
                     f"{vc.count(Change.FIXED)} fixed, {regressed} regressed, "
                     f"{vc.count(Change.CHANGED)} changed{others}, of {len(base.tests)} tests")
        for change, title in ((Change.REGRESSED, "Regressed"),
                              (Change.LOST, "Lost (ran on the base, not with the series)"),
                              (Change.FIXED, "Fixed"),
                              (Change.CHANGED, "Changed (same pass/fail, different behaviour)")):
            if cells := _cell(vc, change):
                lines += ["", f"{title}:", *cells]
        crashed = [t.id for t in cand.tests if t.verdict is Verdict.CRASHED]
        if crashed:
            lines += ["", f"The guest crashed in: {', '.join(crashed)}"]
    env = (cand if cand.has_verdict else base).environment
    on = f"{base.name} (+{onto} patches)" if onto else base.name
    qemu = f"QEMU {env.qemu_version or '?'} ({env.accelerator or '?'})"
    lines += ["",
              f"Tested on: {_kernel(base)}, {qemu}, soft-RoCE (rdma_rxe)",
              f"  onto {on}; with the series: {_release(cand) or cand.outcome.value}",
              f"  config {env.config_hash[:12] or '?'}, guest image {env.image_hash[:12] or '?'}",
              "",
              f"Reproduce with umem-rig: {command}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VetOutput:
    run: RunOutput
    candidate: str                   # the candidate variant's name
    summary: Path                    # vet-summary.txt


def vet(cfg: RunConfig, cache: Cache, progress: Progress, series_path: Path,
        command: str) -> VetOutput:
    """Run CFG's base (already the --onto variant, if any) and it plus the series at
    SERIES_PATH; write the reports and the summary.  Bad input raises before any work."""
    series = patchlib.load(series_path)
    onto = cfg.variant(cfg.base)
    if onto.name in cfg.unloadable:
        raise RigError(f"cannot vet on top of {onto.name}: {cfg.unloadable[onto.name]}")
    cand = candidate(onto, series, series_path)
    out = Runner(dataclasses.replace(cfg, variants=[onto, cand]), cache, progress).run()
    path = out.out / SUMMARY
    path.write_text(summary(out.comparison, cand.name, series, command))
    return VetOutput(out, cand.name, path)
