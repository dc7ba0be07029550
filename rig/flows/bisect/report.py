"""What a bisection found, in words (summary.txt, bisect.log lines) and as JSON (bisect.json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from rig.core.model import Outcome, Patch, Variant
from rig.core.text import few, one_line, printable
from rig.flows.bisect.search import Bisection, BuildBisection, Found, Step
from rig.results import report
from rig.results.compare import differences
from rig.results.report import show_observed

SCHEMA = "umem-rig/bisect"
VERSION = 1
EVIDENCE_LIMIT = 12              # chosen tests the summary details; bisect.json has them all


def step_line(step: Step, patches: Sequence[Patch]) -> str:
    """One line of the bisect log."""
    n = len(patches)
    what = "base" if step.k == 0 else f"up to {step.k}/{n} {patches[step.k - 1].subject}"
    again = f" run {step.attempt}" if step.attempt > 1 else ""
    line = f"k={step.k}{again} ({what}): {step.outcome.value}, {step.state.value} " \
           f"[{step.seconds:.1f} s]"
    seen = {i: v for i, v in step.verdicts.items() if v is not None}
    if len(seen) > 4:
        counts: dict[str, int] = {}
        for v in seen.values():
            counts[v] = counts.get(v, 0) + 1
        line += f": {len(seen)} tests: " + ", ".join(f"{c} {v}" for v, c in counts.items())
    elif seen:
        line += ": " + "; ".join(f"{i} {v}" for i, v in seen.items())
    return printable(line + (f" ({one_line(step.reason)})" if step.reason else ""))


def evidence(bisection: Bisection, limit: int = EVIDENCE_LIMIT) -> list[str]:
    """The chosen tests before and after the flip: verdicts, then observations that differ."""
    answer = bisection.answer
    if answer is None or answer.found not in (Found.EXACT, Found.RANGE):
        return []
    lo, hi = answer.first - 1, answer.last
    before, after = bisection.decided[lo], bisection.decided[hi]
    b = {t.id: t for t in before.tests}
    a = {t.id: t for t in after.tests}
    lines = [f"with {_applied(lo)} ({before.name}) -> with {_applied(hi)} ({after.name}):"]
    # the tests that changed first, so that a long list still starts with what matters
    chosen = sorted(bisection.tests, key=lambda i: b[i].verdict is a[i].verdict)
    for test_id in chosen[:limit]:
        tb, ta = b[test_id], a[test_id]
        mark = "  " if tb.verdict is ta.verdict else "* "
        lines.append(f"  {mark}{test_id}: {tb.verdict.value} -> {ta.verdict.value}")
        lines += [f"      {d.key}: {show_observed(d.base)} -> {show_observed(d.other)}"
                  for d in [d for d in differences(tb, ta) if d.key != "verdict"][:3]]
    if len(chosen) > limit:
        lines.append(f"  ... and {len(chosen) - limit} more tests in bisect.json")
    return lines


def _applied(k: int) -> str:
    return "no patches" if k == 0 else "patch 1" if k == 1 else f"patches 1..{k}"


def build_break(build: BuildBisection, patches: Sequence[Patch]) -> list[str]:
    """The patch that breaks the build, with its first error, and the build-only steps."""
    n, first = len(patches), build.first_broken
    p = patches[first - 1]
    lines = [f"The series does not build from patch {first}/{n} on:",
             f"  {p.prefix + ' ' if p.prefix else ''}{p.subject}"]
    if error := build.errors.get(first, ""):
        lines += [f"    {line}" for line in error.strip().splitlines()]
    lines.append(f"  found in {len(build.steps)} build(s): " + ", ".join(
        f"k={s.k} {'builds' if s.outcome is Outcome.OK else s.outcome.value}"
        for s in build.steps))
    if first > 1:
        lines += ["", f"Bisected within patches 1..{first - 1}, the longest prefix that builds:"]
    return lines


def summary(bisection: Bisection, patches: Sequence[Patch], series: str, command: str,
            build: BuildBisection | None = None) -> str:
    """The plain-text summary (templates/bisect-summary.txt.j2)."""
    assert bisection.answer is not None
    return report.render_template(
        "bisect-summary.txt.j2", series=series, n=len(patches), patches=patches,
        bisection=bisection, answer=bisection.answer, Found=Found, command=command,
        build_lines=build_break(build, patches) if build is not None else [],
        chosen=few(bisection.tests), evidence=evidence(bisection),
        steps=[step_line(s, patches) for s in bisection.steps])


def document(bisection: Bisection, patches: Sequence[Patch], variant: Variant, offset: int,
             version: str, build: BuildBisection | None = None) -> dict:
    """The result JSON (schema umem-rig/bisect, version 1; "build_break" only when the whole
    series did not build)."""
    answer = bisection.answer
    assert answer is not None
    doc = {
        "schema": SCHEMA, "version": VERSION,
        "series": {"name": variant.name, "origin": variant.series,
                   "source": variant.source.name, "source_version": version,
                   "patches_before": offset,
                   "patches": [{"k": k, "subject": p.subject, "author": p.author,
                                "message_id": p.message_id, "sha256": p.sha256,
                                "origin": str(p.origin)} for k, p in enumerate(patches, 1)]},
        "tests": bisection.tests, "retries": bisection.retries,
        "result": asdict(answer),
        "runs_beyond_ends": bisection.runs_beyond_ends, "bound": bisection.bound,
        "steps": [asdict(s) for s in bisection.steps],
    }
    if build is not None:
        doc["build_break"] = {"first": build.first_broken,
                              "error": build.errors.get(build.first_broken, ""),
                              "steps": [asdict(s) for s in build.steps]}
    return doc
