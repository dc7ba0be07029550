"""Bisection, the decision logic alone: which k (the base plus the first k patches of a
series) to run next, fed each run's VariantResult, so tests drive it with recorded results.
rig/flows/bisect/executor.py runs the steps; rig/flows/bisect/report.py writes what was found.

Semantics follow ktest.pl's bisect where they apply:
- the two ends run first: k=0 (good) and k=N (bad); the chosen tests are the ones given, or
  every test whose verdict differs between the ends;
- a step "flips" when any chosen test's verdict differs from the base's; the search keeps the
  last k known not to flip (lo) and the first known to flip (hi), testing the middle;
- a step without verdicts (patch, build or boot failed, a chosen test not observed) is skipped
  and the untested k nearest the middle tried instead; if skips hide the flip, the answer is
  the range lo+1..hi, as `git bisect` says "only skipped commits left";
- with retries R > 0 a step's verdicts count only once they repeat, within 1 + R runs (a
  patch or build failure is not retried: it would fail the same way); a step whose verdicts
  never repeat is flaky and skipped.
Without skips or retries it needs at most ceil(log2 N) test runs beyond the two ends.
"""


from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from rig.core.model import Outcome
from rig.core.status import RigError
from rig.core.text import few
from rig.results.compare import no_verdict_reason
from rig.results.schema import VariantResult, Verdict

# Steps whose failure a rerun cannot change (ktest skips a commit that does not build).
_FINAL = frozenset({Outcome.PATCH_FAILED, Outcome.BUILD_FAILED})


class BisectError(RigError):
    """A bisection that cannot start (bad range, no patches); the message says why."""


class State(str, enum.Enum):
    BEFORE = "before"                # the chosen tests have the base's verdicts
    AFTER = "after"                  # some chosen test's verdict differs from the base's
    SKIP = "skip"                    # no verdicts to judge by
    AGAIN = "again"                  # verdicts not yet repeated: run this k once more


class Found(str, enum.Enum):
    EXACT = "exact"                  # patch FIRST is the first that flips
    RANGE = "range"                  # skipped steps hide it among patches FIRST..LAST
    NOTHING = "nothing"              # the ends agree on every chosen test: nothing flips
    FAILED = "failed"                # an end has no verdicts: no bisection possible


@dataclass
class Step:
    """One test run at one k, as logged."""

    k: int
    attempt: int                     # 1 for the first run at this k
    name: str                        # the run's variant name in results.json
    outcome: Outcome
    state: State
    verdicts: dict[str, str | None]  # chosen tests (all tests at an end before the choice)
    seconds: float
    reason: str = ""                 # why skipped, or what did not repeat


@dataclass
class Answer:
    found: Found
    first: int = 0                   # 1-based positions in the series
    last: int = 0
    message: str = ""


@dataclass
class _Run:
    key: tuple
    verdicts: dict[str, Verdict] | None
    reason: str
    result: VariantResult


class Bisection:
    """The decision logic.  `current` is the k to run next (None when done); feed() it the
    VariantResult of that run; `answer` holds the outcome when done."""

    def __init__(self, n: int, tests: Sequence[str] = (), retries: int = 0):
        if n < 1:
            raise BisectError("nothing to bisect: the series has no patches")
        if retries < 0:
            raise BisectError(f"retries must be 0 or more, not {retries}")
        self.n = n
        self.tests = list(dict.fromkeys(tests))
        self.retries = retries
        self.steps: list[Step] = []
        self.decided: dict[int, VariantResult] = {}      # k -> the run whose verdicts counted
        self.skipped: dict[int, str] = {}                # k -> why
        self.lo, self.hi = 0, n
        self.current: int | None = 0
        self.answer: Answer | None = None
        self._base: dict[str, Verdict] = {}
        self._runs: list[_Run] = []

    @property
    def attempt(self) -> int:
        """The number of the next run at `current`, from 1."""
        return len(self._runs) + 1

    @property
    def runs_beyond_ends(self) -> int:
        return sum(1 for s in self.steps if s.k not in (0, self.n))

    @property
    def bound(self) -> int:
        """The most runs beyond the ends that a bisection without skips or retries needs,
        plus one, as the issue states it."""
        return math.ceil(math.log2(self.n)) + 1 if self.n > 1 else 1

    def feed(self, run: VariantResult, seconds: float | None = None) -> Step:
        k = self.current
        if k is None:
            raise BisectError("the bisection is over: no step is waiting for a result")
        verdicts, reason = self._observe(run)
        # a failed boot's message names its console log, so only the outcome has to repeat
        key = (("verdicts", tuple(sorted((i, v.value) for i, v in verdicts.items())))
               if verdicts is not None else ("none", run.outcome.value))
        self._runs.append(_Run(key, verdicts, reason, run))
        repeats = sum(1 for r in self._runs if r.key == key)
        attempt = len(self._runs)
        if run.outcome in _FINAL or repeats >= (2 if self.retries else 1):
            state = self._decide(k, verdicts, reason, run)
        elif attempt > self.retries:
            reason = self._flaky()
            state = self._decide(k, None, reason, run)
        else:
            state = State.AGAIN
            reason = "verdicts must repeat to count: running again"
        shown = {i: v.value for i, v in verdicts.items()} if verdicts is not None else \
            {i: _verdict_of(run, i) for i in self.tests}
        step = Step(k, attempt, run.name, run.outcome, state, shown,
                    round(sum(run.timings.values()) if seconds is None else seconds, 3), reason)
        self.steps.append(step)
        if state is not State.AGAIN:
            self._runs = []
            if self.answer is None:
                self._advance()
            else:
                self.current = None
        return step

    def _observe(self, run: VariantResult) -> tuple[dict[str, Verdict] | None, str]:
        if not run.has_verdict:
            return None, no_verdict_reason(run)
        found = {t.id: t.verdict for t in run.tests}
        if not self.tests:
            return found, ""
        absent = [i for i in self.tests if i not in found]
        lost = [i for i in self.tests if found.get(i) is Verdict.LOST]
        if absent or lost:
            why = [f"{few(absent)} not in its results"] if absent else []
            why += [f"{few(lost)} lost (the guest crashed before)"] if lost else []
            return None, "not observed: " + "; ".join(why)
        return {i: found[i] for i in self.tests}, ""

    def _flaky(self) -> str:
        seen = [r.verdicts for r in self._runs if r.verdicts is not None]
        ids = [i for i in dict.fromkeys(i for s in seen for i in s)
               if len({s.get(i) for s in seen}) > 1]
        what = f"; varying: {few(ids)}" if ids else ""
        return f"flaky: no verdicts repeated in {len(self._runs)} runs{what}"

    def _decide(self, k: int, verdicts: dict[str, Verdict] | None, reason: str,
                run: VariantResult) -> State:
        if verdicts is None:
            if k in (0, self.n):
                end = "the base" if k == 0 else "the full series"
                hint = "; choose the tests to judge by" if reason.startswith("flaky") and \
                    not self.tests else ""
                self.answer = Answer(Found.FAILED, message=f"cannot bisect: {end} "
                                     f"({run.name}) has no verdicts: {reason}{hint}")
            else:
                self.skipped[k] = reason
            return State.SKIP
        self.decided[k] = run
        if k == 0:
            self._base = verdicts
            return State.BEFORE
        if k == self.n and not self.tests:
            self.tests = [i for i, v in self._base.items()
                          if i in verdicts and v is not verdicts[i]
                          and Verdict.LOST not in (v, verdicts[i])]
        if all(verdicts.get(i) is self._base.get(i) for i in self.tests):
            if k == self.n:
                self.answer = Answer(Found.NOTHING, message=(
                    "nothing to bisect: the chosen tests have the same verdicts with the "
                    "whole series as on the base" if self.tests else
                    "nothing to bisect: no test's verdict differs between the base and the "
                    "whole series"))
                return State.BEFORE
            self.lo = k
            return State.BEFORE
        self.hi = k
        return State.AFTER

    def _advance(self) -> None:
        if not self.steps or self.steps[-1].k == 0:
            self.current = self.n
            return
        mid = (self.lo + self.hi) // 2
        todo = sorted((c for c in range(self.lo + 1, self.hi) if c not in self.skipped),
                      key=lambda c: (abs(c - mid), c < mid))
        if todo:
            self.current = todo[0]
            return
        self.current = None
        if self.hi - self.lo == 1:
            self.answer = Answer(Found.EXACT, self.hi, self.hi,
                                 f"patch {self.hi} of {self.n} is the first that changes the "
                                 "chosen tests' verdicts")
        else:
            hidden = sorted(k for k in self.skipped if self.lo < k < self.hi)
            self.answer = Answer(Found.RANGE, self.lo + 1, self.hi,
                                 f"the first patch that changes the chosen tests' verdicts is "
                                 f"one of patches {self.lo + 1}..{self.hi} of {self.n}: "
                                 f"{_span(hidden)} could not be tested")

    def finish(self) -> None:
        """Stop early (interrupted, or the rig failed): what is known becomes the answer."""
        if self.answer is None:
            self.current = None
            self.answer = Answer(Found.FAILED, message="stopped before the bisection "
                                 f"ended: the first flip is among patches {self.lo + 1}.."
                                 f"{self.hi}")


def _verdict_of(run: VariantResult, test_id: str) -> str | None:
    return next((t.verdict.value for t in run.tests if t.id == test_id), None)


def _span(ks: list[int]) -> str:
    if not ks:
        return "no step"
    return ("step " if len(ks) == 1 else "steps ") + ", ".join(f"k={k}" for k in ks)


@dataclass
class BuildStep:
    """One build-only step of the search for the patch that breaks the build."""

    k: int
    outcome: Outcome                 # OK, or PATCH_FAILED / BUILD_FAILED
    seconds: float
    error: str = ""                  # the build's first error lines


class BuildBisection:
    """The first prefix of a series that does not build (or apply), when its whole does not:
    k=0 built, k=N did not; binary search between, each step a build only.  Assumes a series
    stays broken once a patch broke it, as ktest's build bisection does."""

    def __init__(self, n: int, end_error: str = ""):
        self.n = n
        self.lo, self.hi = 0, n
        self.steps: list[BuildStep] = []
        self.errors: dict[int, str] = {n: end_error}     # k -> the first error lines
        self.current: int | None = None
        self._next()

    def feed(self, k: int, outcome: Outcome, seconds: float, error: str = "") -> BuildStep:
        if k != self.current:
            raise BisectError(f"build step k={k} was not asked for (next: {self.current})")
        step = BuildStep(k, outcome, round(seconds, 3), error)
        self.steps.append(step)
        if outcome is Outcome.OK:
            self.lo = k
        else:
            self.hi = k
            self.errors[k] = error
        self._next()
        return step

    def _next(self) -> None:
        self.current = (self.lo + self.hi) // 2 if self.hi - self.lo > 1 else None

    @property
    def first_broken(self) -> int:
        """Patch first_broken is the first whose prefix does not build (when current is None)."""
        return self.hi
