"""`rig bisect`'s executor: run the steps a Bisection asks for, and write what was found.

The semantics (ktest.pl's: the ends first, skips, retries) are rig/flows/bisect/search.py's; the words
and JSON are rig/flows/bisect/report.py's.  When the whole series does not build (or apply) while
the base does, the executor first finds the patch that breaks the build, a bisection on
buildability with builds only, and then bisects behaviour over the longest prefix that
builds; both answers are reported.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rig.core.model import Outcome, Patch, Variant
from rig.core.status import ExitStatus
from rig.core.text import one_line, variant_name
from rig.flows.bisect.report import document, step_line, summary
from rig.flows.bisect.search import Answer, BisectError, Bisection, BuildBisection, Found
from rig.flows.config import RunConfig
from rig.flows.matrix import Runner, now, rig_version, write_outputs
from rig.flows.vet import candidate
from rig.kernel import patches as patchlib
from rig.kernel import sources
from rig.results.schema import Results, RunInfo, VariantResult


@dataclass(frozen=True)
class BisectRequest:
    """What to bisect: exactly one of TARGET (a series on top of the base or ONTO), VARIANT
    (a configured variant's series) or GIT (a tree, with TARGET its range A..B)."""

    target: str | None = None
    variant: str | None = None
    git: Path | None = None
    onto: str | None = None
    tests: tuple[str, ...] = ()      # test ids to judge by; () = those the ends differ in
    retries: int = 0


@dataclass
class Plan:
    """What to bisect: VARIANT's patches after the first OFFSET (those come from --onto)."""

    variant: Variant
    offset: int = 0

    @property
    def series(self) -> tuple[Patch, ...]:
        return self.variant.patches[self.offset:]

    def at(self, k: int, attempt: int = 1) -> Variant:
        name = f"{self.variant.name}@{k}" + (f".run{attempt}" if attempt > 1 else "")
        return dataclasses.replace(self.variant.first(self.offset + k), name=name)


@dataclass
class BisectOutput:
    bisection: Bisection
    out: Path
    runs: list[VariantResult] = field(default_factory=list)
    # when the whole series does not build: the search for the patch that breaks it
    build: BuildBisection | None = None

    @property
    def exit_status(self) -> ExitStatus:
        """OK when one patch is named, or nothing flips; NO_VERDICT when no patch can be."""
        answer = self.bisection.answer
        found = answer is not None and answer.found in (Found.EXACT, Found.NOTHING)
        return ExitStatus.OK if found else ExitStatus.NO_VERDICT


def execute(runner: Runner, plan: Plan, bisection: Bisection, out: Path,
            command: str) -> BisectOutput:
    """Run the steps BISECTION asks for with RUNNER (image prepared) and write bisect.log,
    bisect.json, summary.txt and the report of every run into OUT.  Whatever stops it, what
    was found so far is written."""
    out.mkdir(parents=True, exist_ok=True)
    result = BisectOutput(bisection, out)
    started = now()
    series = list(plan.series)
    with open(out / "bisect.log", "w") as log:
        onto = f" after {plan.offset} of the onto variant" if plan.offset else ""
        log.write(f"# {command}\n# {plan.variant.name}: {len(series)} patches on "
                  f"{plan.variant.source.name}{onto}; tests: "
                  f"{', '.join(bisection.tests) or 'those the ends differ in'}; "
                  f"retries: {bisection.retries}\n")
        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            runner.progress.log(line)

        try:
            _steps(runner, plan, result, say)
            if _unbuildable_end(result.bisection):
                _find_build_break(runner, plan, result, say)
        finally:
            result.bisection.finish()
            answer = result.bisection.answer
            say(f"# {answer.found.value}: {one_line(answer.message)}")
            _write(result, plan, command, started)
    return result


def _steps(runner: Runner, plan: Plan, result: BisectOutput, say) -> None:
    bisection, series = result.bisection, list(plan.series)
    while (k := bisection.current) is not None:
        start = time.monotonic()
        if k == 0 and result.runs and result.runs[0].name == plan.at(0).name:
            run = result.runs[0]              # the base already ran: its verdicts count again
        else:
            run = runner.variant(plan.at(k, bisection.attempt))
            result.runs.append(run)
        say(step_line(bisection.feed(run, time.monotonic() - start), series))


def _unbuildable_end(bisection: Bisection) -> bool:
    """The whole series did not build or apply, while the base did: search for the patch
    that breaks it, then bisect behaviour over the prefix that builds."""
    end = next((s for s in reversed(bisection.steps) if s.k == bisection.n), None)
    return (bisection.answer is not None and bisection.answer.found is Found.FAILED
            and 0 in bisection.decided and bisection.n > 1 and end is not None
            and end.outcome in (Outcome.BUILD_FAILED, Outcome.PATCH_FAILED))


def _find_build_break(runner: Runner, plan: Plan, result: BisectOutput, say) -> None:
    series = list(plan.series)
    end = result.runs[-1]
    search = BuildBisection(len(series), end.errors[0].excerpt or end.errors[0].message
                            if end.errors else "")
    result.build = search
    while (k := search.current) is not None:
        built = runner.builder.build(plan.at(k))
        error = built.error.excerpt or built.error.message if built.error else ""
        step = search.feed(k, built.outcome, built.seconds, error)
        say(f"build k={k} (up to {k}/{len(series)} {series[k - 1].subject}): "
            f"{step.outcome.value} [{step.seconds:.1f} s]")
    first = search.first_broken
    say(f"# patch {first}/{len(series)} breaks the build: {series[first - 1].subject}")
    old = result.bisection
    if first == 1:
        old.answer = Answer(Found.FAILED, message="patch 1 breaks the build: no prefix of the "
                            "series builds, so there is no behaviour to bisect")
        return
    result.bisection = Bisection(first - 1, old.tests, old.retries)
    _steps(runner, plan, result, say)


def _write(result: BisectOutput, plan: Plan, command: str, started: str) -> None:
    bisection, out, series = result.bisection, result.out, list(plan.series)
    version = next((r.environment.source_version for r in result.runs
                    if r.environment.source_version), "")
    (out / "bisect.json").write_text(json.dumps(
        document(bisection, series, plan.variant, plan.offset, version, result.build),
        indent=1) + "\n")
    (out / "summary.txt").write_text(summary(bisection, series, plan.variant.name, command,
                                             result.build))
    if result.runs:
        base = bisection.decided.get(0, result.runs[0])
        for run in result.runs:
            run.is_base = run is base
        write_outputs(Results([RunInfo(started, now(), rig_version(), platform.node(),
                                       sys.argv)], result.runs), out)


def plan(req: BisectRequest, cfg: RunConfig) -> Plan:
    """The Plan for REQ; BisectError (or a patch or source error) when it cannot be made."""
    chosen = [x for x in (req.target and not req.git, req.variant, req.git) if x]
    if len(chosen) != 1:
        raise BisectError("give exactly one of: a SERIES, --variant NAME, or --git TREE A..B")
    if req.onto and (req.variant or req.git):
        raise BisectError("--onto goes with a SERIES only")
    if req.variant:
        variant = cfg.variant(req.variant)
        if variant.name in cfg.unloadable:
            raise BisectError(f"variant {variant.name}: {cfg.unloadable[variant.name]}")
        return Plan(variant)
    if req.git:
        if not req.target:
            raise BisectError("--git TREE needs a commit range A..B")
        source, series = sources.git_series(req.git, req.target, cfg.out / "series")
        name = variant_name(f"{source.name}-{req.target.replace('..', '-')}")
        return Plan(Variant(name, source, cfg.fragments, tuple(series),
                            f"{req.git}:{req.target}"))
    onto = cfg.variant(cfg.base)
    if onto.name in cfg.unloadable:
        raise BisectError(f"cannot build on {onto.name}: {cfg.unloadable[onto.name]}")
    assert req.target is not None
    target = Path(req.target)
    return Plan(candidate(onto, patchlib.load(target), target), len(onto.patches))
