"""Every variant against the base, test by test, and the headline and exit status from it.

A test is known by its suite and id.  Per test: fixed (fail -> pass), regressed (pass -> fail), lost (the base ran it, the
candidate did not: skipped, errored, never ran after a crash, or absent), changed (the same
verdict with different stable observations, or another verdict on the same side of pass/fail,
such as passed -> xfailed or skipped -> passed), unchanged, new (only in the variant),
not-comparable (the base itself lost it, or neither ran it and for different reasons, such
as skipped -> error).  Pass is passed or xfailed; fail is failed, error,
crashed or a strict xpass.  A crash on a candidate is a failure it caused, so against a
passing base it regresses; the tests the crash kept from running are lost.  Lost coverage is
never news that can pass: it keeps the exit status at NO_VERDICT.  A variant (or a base)
whose suites never ran has no verdict at all, and is reported with the reason instead; one
suite that never ran (its tests did not build) leaves the others' verdicts standing.  Where a
run has more than one suite, the headline counts each suite on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from rig.core.model import Outcome
from rig.core.status import ExitStatus, RigError
from rig.core.text import few
from rig.results.schema import Results, TestResult, VariantResult, Verdict

PASSING = frozenset({Verdict.PASSED, Verdict.XFAILED})
FAILING = frozenset({Verdict.FAILED, Verdict.ERROR, Verdict.CRASHED, Verdict.XPASSED})
# verdicts that say what the kernel did; the others say the test did not get to look
RAN = frozenset({Verdict.PASSED, Verdict.XFAILED, Verdict.FAILED, Verdict.CRASHED,
                 Verdict.XPASSED})



class CompareError(RigError):
    """Results that cannot be compared (no base); the message says why."""


class Change(str, enum.Enum):
    FIXED = "fixed"
    REGRESSED = "regressed"
    LOST = "lost"
    FLAKY = "flaky"          # fixed or regressed once, but a re-run changed its mind
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    NEW = "new"
    NOT_COMPARABLE = "not-comparable"


class _Absent:
    """An observation one side did not record at all (as opposed to recording null)."""

    def __repr__(self) -> str:
        return "(not recorded)"


ABSENT = _Absent()


@dataclass(frozen=True)
class Difference:
    key: str             # an observation key, dotted for nested ones, or "verdict"
    base: Any
    other: Any


@dataclass
class CellChange:
    """One test id in one variant, against the base."""

    id: str
    change: Change
    base: TestResult | None
    other: TestResult | None
    differences: list[Difference] = field(default_factory=list)

    @property
    def suite(self) -> str:
        return self.test.suite

    @property
    def key(self) -> tuple[str, str]:
        return self.test.key

    @property
    def test(self) -> TestResult:
        """The result that names the cell (the variant's, or the base's when missing)."""
        found = self.other or self.base
        assert found is not None
        return found


@dataclass
class VariantComparison:
    variant: VariantResult
    base: VariantResult
    cells: list[CellChange]

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def comparable(self) -> bool:
        return self.variant.has_verdict and self.base.has_verdict

    def count(self, change: Change, suite: str | None = None) -> int:
        return sum(1 for c in self.cells
                   if c.change is change and (suite is None or c.suite == suite))

    def suites(self) -> list[str]:
        """The suites of the base and the variant, in the order they ran."""
        return list(dict.fromkeys(self.base.suite_names() + self.variant.suite_names()))

    def notable(self) -> list[CellChange]:
        """Regressed, lost, fixed, then changed cells: what a maintainer reads first."""
        order = (Change.REGRESSED, Change.LOST, Change.FIXED, Change.FLAKY, Change.CHANGED)
        return sorted((c for c in self.cells if c.change in order),
                      key=lambda c: order.index(c.change))

    def headline(self) -> str:
        v, b = self.variant, self.base
        if not v.has_verdict:
            return f"{v.name}: {no_verdict_reason(v)}"
        if not b.has_verdict:
            return f"{v.name} vs {b.name}: not comparable, {b.name} has no verdict"
        suites = self.suites()
        if len(suites) <= 1:
            line = f"{v.name} vs {b.name}: {self._counts(None)}"
        else:
            line = f"{v.name} vs {b.name}: " + "; ".join(
                f"{name} {self._counts(name)}" if _ran(b, name) and _ran(v, name) else
                f"{name} {_suite_outcome(b if not _ran(b, name) else v, name)}"
                for name in suites)
        crashed = [t.id for t in v.tests if t.verdict is Verdict.CRASHED]
        if crashed:
            return f"{line}; the guest crashed in {few(crashed, 2)}"
        return f"{line}; {no_verdict_reason(v)}" if v.outcome is not Outcome.OK else line

    def _counts(self, suite: str | None) -> str:
        counts = [f"{self.count(c, suite)} {c.value}" for c in
                  (Change.FIXED, Change.REGRESSED, Change.CHANGED)]
        counts += [f"{n} {c.value}" for c in (Change.LOST, Change.FLAKY, Change.NEW,
                                              Change.NOT_COMPARABLE)
                   if (n := self.count(c, suite))]
        return ", ".join(counts)

    def complete(self) -> bool:
        """Whether every suite of the base and the variant gave verdicts on both."""
        return all(_ran(self.base, s) and _ran(self.variant, s) for s in self.suites())


@dataclass
class Comparison:
    base: VariantResult
    variants: list[VariantComparison]

    def headline(self) -> list[str]:
        """One sentence per variant, the base first."""
        return [base_summary(self.base)] + [v.headline() for v in self.variants]

    def explained_headline(self) -> list[str]:
        """The headline, each variant without a verdict followed by its first error lines
        (the compiler's error, the hunk that does not apply, the console before a panic)."""
        lines = []
        for line, v in zip(self.headline(), [self.base] + [vc.variant for vc in self.variants],
                           strict=True):
            lines.append(line)
            lines += [f"    {x}" for x in failure_lines(v)]
        return lines

    def exit_status(self) -> ExitStatus:
        """REGRESSION if any candidate regressed; else NO_VERDICT if any variant (or the
        base) has no verdict or lost coverage; else OK.  A regression found is
        reported even when another variant failed to build: it stands on its own."""
        if any(v.count(Change.REGRESSED) for v in self.variants):
            return ExitStatus.REGRESSION
        if not self.base.has_verdict or any(
                not v.comparable or v.count(Change.LOST) or v.count(Change.NOT_COMPARABLE)
                or not v.complete() for v in self.variants) or not all(
                    _ran(self.base, s) for s in self.base.suite_names()):
            return ExitStatus.NO_VERDICT
        return ExitStatus.OK


def compare(results: Results) -> Comparison:
    base = results.base
    if base is None:
        names = ", ".join(v.name for v in results.variants) or "none"
        raise CompareError(f"the results have no base variant to compare against "
                           f"(variants: {names})")
    return Comparison(base, [VariantComparison(v, base, _cells(base, v) if
                                               v.has_verdict and base.has_verdict else [])
                             for v in results.variants if not v.is_base])


def flatten(observations: dict[str, Any]) -> dict[str, Any]:
    """Observations with nested objects' keys dotted ("before.zero_page"), in order."""
    flat: dict[str, Any] = {}
    for key, value in observations.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            flat[key] = value
    return flat


def is_raw(key: str) -> bool:
    """Whether a (dotted) observation key is volatile: shown, never compared."""
    return any(part.startswith("raw_") for part in key.split("."))


def stable(observations: dict[str, Any]) -> dict[str, Any]:
    """The observations compared across kernels: flattened, volatile keys left out."""
    return {k: v for k, v in flatten(observations).items() if not is_raw(k)}


def differences(base: TestResult, other: TestResult) -> list[Difference]:
    """What differs between two results of one test: the verdict, then stable observations."""
    diffs = [Difference("verdict", base.verdict.value, other.verdict.value)] \
        if base.verdict is not other.verdict else []
    if not (base.observations and other.observations):
        return diffs    # one side recorded nothing (a crash, a collection error): no news
    b, o = stable(base.observations), stable(other.observations)
    for key in list(b) + [k for k in o if k not in b]:
        if b.get(key, ABSENT) != o.get(key, ABSENT):
            diffs.append(Difference(key, b.get(key, ABSENT), o.get(key, ABSENT)))
    return diffs


def no_verdict_reason(variant: VariantResult) -> str:
    """"build-failed: <first error>", for a variant whose suite never ran."""
    first = variant.errors[0].message if variant.errors else "no error recorded"
    return f"{variant.outcome.value}: {first}"


def failure_lines(variant: VariantResult, limit: int = 8) -> list[str]:
    """The first error's excerpt of a variant that has no verdict; [] for one that has."""
    if variant.has_verdict or not variant.errors:
        return []
    return [line for line in variant.errors[0].excerpt.strip().splitlines()[:limit]
            if line.strip()]


def base_summary(base: VariantResult) -> str:
    if not base.has_verdict:
        return f"{base.name}: {no_verdict_reason(base)}"
    suites = base.suite_names()
    if len(suites) <= 1:
        return f"{base.name}: {_verdicts(base.tests)}"
    return f"{base.name}: " + "; ".join(
        f"{name} {_verdicts([t for t in base.tests if t.suite == name])}"
        if _ran(base, name) else f"{name} {_suite_outcome(base, name)}" for name in suites)


def _verdicts(tests: list[TestResult]) -> str:
    counts: dict[Verdict, int] = {}
    for t in tests:
        counts[t.verdict] = counts.get(t.verdict, 0) + 1
    parts = [f"{n} {v.value}" for v, n in sorted(counts.items(),
                                                   key=lambda kv: list(Verdict).index(kv[0]))]
    return f"{len(tests)} tests: {', '.join(parts)}"


def _ran(variant: VariantResult, suite: str) -> bool:
    """Whether SUITE gave verdicts in VARIANT (a suite it does not list did, if it has tests)."""
    info = variant.suite(suite)
    return info.has_verdict if info else True


def _suite_outcome(variant: VariantResult, suite: str) -> str:
    info = variant.suite(suite)
    return f"{info.outcome.value} in {variant.name}" if info else "not run"


def _cells(base: VariantResult, variant: VariantResult) -> list[CellChange]:
    theirs = {t.key: t for t in variant.tests}
    ours = {t.key: t for t in base.tests}
    cells = [_cell(b, theirs.get(b.key)) for b in base.tests]
    return cells + [CellChange(t.id, Change.NEW, None, t) for t in variant.tests
                    if t.key not in ours]


def _cell(b: TestResult, o: TestResult | None) -> CellChange:
    if o is None:
        return CellChange(b.id, Change.LOST if b.verdict in RAN else Change.UNCHANGED, b, None)
    diffs = differences(b, o)
    if b.verdict is Verdict.LOST or (
            b.verdict not in RAN and o.verdict not in RAN and b.verdict is not o.verdict):
        change = Change.NOT_COMPARABLE           # neither says what its kernel did
    elif b.verdict in RAN and o.verdict not in RAN:
        change = Change.LOST
    elif b.verdict in FAILING and o.verdict in PASSING:
        change = Change.FIXED
    elif b.verdict in PASSING and o.verdict in FAILING:
        change = Change.REGRESSED
    else:
        change = Change.CHANGED if diffs else Change.UNCHANGED
    if change in (Change.FIXED, Change.REGRESSED) and (b.flaky or o.flaky):
        change = Change.FLAKY
    return CellChange(b.id, change, b, o, diffs)

