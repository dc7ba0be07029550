"""`rig bisect`: the first patch of a series that changes the verdicts of chosen tests.

Two halves.  Bisection is the decision logic alone: a state machine that says which k (the
base plus the first k patches of the series) to run next and is fed each run's VariantResult,
so tests drive it with recorded results.  execute() is the executor: it runs the steps with
Runner.variant() and writes the log, the result JSON and the summary.

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

import argparse
import dataclasses
import enum
import json
import math
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import hostdeps
from . import patches as patchlib
from .compare import differences, no_verdict_reason
from .model import Outcome, Patch, SourceSpec, Variant
from .progress import Progress
from .results import Results, RunInfo, VariantResult, Verdict
from .run import Runner, now, rig_version, write_outputs
from .vet import candidate, show, variant_name

SCHEMA = "umem-rig/bisect"
VERSION = 1
EXIT_FOUND, EXIT_NOT_FOUND = 0, 2
EVIDENCE_LIMIT = 12              # chosen tests the summary details; bisect.json has them all
# Steps whose failure a rerun cannot change (ktest skips a commit that does not build).
_FINAL = frozenset({Outcome.PATCH_FAILED, Outcome.BUILD_FAILED})


class BisectError(Exception):
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
            why = [f"{_few(absent)} not in its results"] if absent else []
            why += [f"{_few(lost)} lost (the guest crashed before)"] if lost else []
            return None, "not observed: " + "; ".join(why)
        return {i: found[i] for i in self.tests}, ""

    def _flaky(self) -> str:
        seen = [r.verdicts for r in self._runs if r.verdicts is not None]
        ids = [i for i in dict.fromkeys(i for s in seen for i in s)
               if len({s.get(i) for s in seen}) > 1]
        what = f"; varying: {_few(ids)}" if ids else ""
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


def _few(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _span(ks: list[int]) -> str:
    if not ks:
        return "no step"
    return ("step " if len(ks) == 1 else "steps ") + ", ".join(f"k={k}" for k in ks)


# ---------------------------------------------------------------------------------------------
# What was found, in words


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
    return line + (f" ({_one_line(step.reason)})" if step.reason else "")


def _one_line(text: str) -> str:
    """TEXT with its lines joined: a log line per step (bisect.json keeps them)."""
    return " ".join(text.split())


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
        lines += [f"      {d.key}: {show(d.base)} -> {show(d.other)}"
                  for d in [d for d in differences(tb, ta) if d.key != "verdict"][:3]]
    if len(chosen) > limit:
        lines.append(f"  ... and {len(chosen) - limit} more tests in bisect.json")
    return lines


def _applied(k: int) -> str:
    return "no patches" if k == 0 else "patch 1" if k == 1 else f"patches 1..{k}"


def summary(bisection: Bisection, patches: Sequence[Patch], series: str, command: str) -> str:
    """The plain-text summary: the patch that flips, the evidence, the steps."""
    answer = bisection.answer
    assert answer is not None
    n = bisection.n
    lines = [f"umem-rig bisect: {series}, {n} patch{'es' * (n > 1)}", ""]
    if answer.found is Found.EXACT:
        p = patches[answer.first - 1]
        lines += [f"First patch that changes the verdicts: {answer.first}/{n}",
                  f"  {p.prefix + ' ' if p.prefix else ''}{p.subject}"]
        lines += [f"  {label}: {value}" for label, value in
                  (("From", p.author), ("Message-Id", p.message_id and f"<{p.message_id}>"),
                   ("File", str(p.origin)))
                  if value]
        lines.append(f"  sha256 {p.sha256[:12]}")
    elif answer.found is Found.RANGE:
        lines.append(f"First patch that changes the verdicts: one of {answer.first}..{answer.last}"
                     f" of {n} (skipped steps hide which):")
        lines += [f"  {k}/{n} {patches[k - 1].subject}"
                  + (f"  [skipped: {bisection.skipped[k]}]" if k in bisection.skipped else "")
                  for k in range(answer.first, answer.last + 1)]
    else:
        lines.append(answer.message[:1].upper() + answer.message[1:])
    if bisection.tests:
        lines += ["", f"Chosen tests ({len(bisection.tests)}): {_few(bisection.tests)}"]
    if ev := evidence(bisection):
        lines += ["", "Evidence (* = verdict changed):", *ev]
    lines += ["", (f"Steps: {bisection.runs_beyond_ends} test run(s) beyond the two ends "
                  f"(at most {bisection.bound} without skips or retries):")]
    lines += [f"  {step_line(s, patches)}" for s in bisection.steps]
    lines += ["", f"Reproduce: {command}"]
    return "\n".join(lines) + "\n"


def document(bisection: Bisection, patches: Sequence[Patch], variant: Variant, offset: int,
             version: str) -> dict:
    """The result JSON (schema umem-rig/bisect, version 1)."""
    answer = bisection.answer
    assert answer is not None
    return {
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


# ---------------------------------------------------------------------------------------------
# Running it


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

    @property
    def exit_status(self) -> int:
        answer = self.bisection.answer
        return EXIT_FOUND if answer and answer.found in (Found.EXACT, Found.NOTHING) \
            else EXIT_NOT_FOUND


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
        try:
            while (k := bisection.current) is not None:
                start = time.monotonic()
                run = runner.variant(plan.at(k, bisection.attempt))
                step = bisection.feed(run, time.monotonic() - start)
                result.runs.append(run)
                line = step_line(step, series)
                log.write(line + "\n")
                log.flush()
                runner.progress.log(line)
        finally:
            bisection.finish()
            answer = bisection.answer
            log.write(f"# {answer.found.value}: {_one_line(answer.message)}\n")
            _write(result, plan, command, started)
    return result


def _write(result: BisectOutput, plan: Plan, command: str, started: str) -> None:
    bisection, out, series = result.bisection, result.out, list(plan.series)
    version = next((r.environment.source_version for r in result.runs
                    if r.environment.source_version), "")
    (out / "bisect.json").write_text(json.dumps(
        document(bisection, series, plan.variant, plan.offset, version), indent=1) + "\n")
    (out / "summary.txt").write_text(summary(bisection, series, plan.variant.name, command))
    if result.runs:
        base = bisection.decided.get(0, result.runs[0])
        for run in result.runs:
            run.is_base = run is base
        write_outputs(Results([RunInfo(started, now(), rig_version(), platform.node(),
                                       sys.argv)], result.runs), out)


def git_series(tree: Path, span: str, into: Path) -> tuple[SourceSpec, list[Patch]]:
    """A range A..B of a local git tree as a source (the tree at A) and a patch series
    (`git format-patch A..B`, written to INTO)."""
    if ".." not in span or span.count("..") != 1 or "..." in span:
        raise BisectError(f"{span!r} is not a commit range: give it as A..B")
    if not (tree / ".git").exists() and not (tree / "HEAD").is_file():
        raise BisectError(f"{tree} is not a git repository")
    a, b = span.split("..")

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise BisectError(f"{tree}: git {' '.join(args)}: "
                              f"{(proc.stderr.strip() or 'failed').splitlines()[-1]}")
        return proc.stdout.strip()

    start = git("rev-parse", "--verify", "--end-of-options", f"{a or 'HEAD'}^{{commit}}")
    end = git("rev-parse", "--verify", "--end-of-options", f"{b or 'HEAD'}^{{commit}}")
    if not git("rev-list", f"{start}..{end}"):
        raise BisectError(f"{tree}: {span} holds no commits")
    merges = git("rev-list", "--merges", f"{start}..{end}").split()
    if merges:
        raise BisectError(f"{tree}: {span} has merge commits ({_few([m[:12] for m in merges])})"
                          ": a series applies patch by patch, so bisect a range without merges")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    git("format-patch", "--quiet", "--no-signature", "--zero-commit", "-o", str(into),
        f"{start}..{end}")
    name = variant_name(tree.resolve().name) or "git"
    return SourceSpec(name=name, kind="git", path=tree.resolve(), ref=start), \
        patchlib.load(into)


# ---------------------------------------------------------------------------------------------
# The command


def add_parser(sub, common) -> None:
    p = sub.add_parser("bisect", help="find the first patch of a series that changes verdicts",
                       description="Bisect a patch series (or a git range) to the first patch "
                       "that changes the verdicts of chosen tests.")
    common(p)
    p.add_argument("target", nargs="?", metavar="SERIES|A..B",
                   help="a patch file, mbox or series folder on top of the base (or --onto); "
                   "with --git, a commit range A..B of that tree")
    p.add_argument("--variant", help="bisect this configured variant's patch series")
    p.add_argument("--onto", metavar="VARIANT", help="apply SERIES on top of this variant")
    p.add_argument("--git", type=Path, metavar="TREE",
                   help="bisect the commits A..B of this local kernel git tree")
    p.add_argument("--test", action="append", metavar="ID",
                   help="judge by this test (repeatable; default: every test whose verdict "
                   "differs between the base and the whole series)")
    p.add_argument("--retries", type=int, default=0, metavar="R",
                   help="rerun a step up to R times until its verdicts repeat (flaky tests)")
    p.set_defaults(func=cmd_bisect)


def _plan(args: argparse.Namespace, cfg) -> Plan:
    chosen = [x for x in (args.target and not args.git, args.variant, args.git) if x]
    if len(chosen) != 1:
        raise BisectError("give exactly one of: a SERIES, --variant NAME, or --git TREE A..B")
    if args.onto and (args.variant or args.git):
        raise BisectError("--onto goes with a SERIES only")
    if args.variant:
        variant = cfg.variant(args.variant)
        if variant.name in cfg.unloadable:
            raise BisectError(f"variant {variant.name}: {cfg.unloadable[variant.name]}")
        return Plan(variant)
    if args.git:
        if not args.target:
            raise BisectError("--git TREE needs a commit range A..B")
        source, series = git_series(args.git, args.target, cfg.out / "series")
        name = variant_name(f"{source.name}-{args.target.replace('..', '-')}")
        return Plan(Variant(name, source, cfg.fragments, tuple(series),
                            f"{args.git}:{args.target}"))
    onto = cfg.variant(cfg.base)
    if onto.name in cfg.unloadable:
        raise BisectError(f"cannot build on {onto.name}: {cfg.unloadable[onto.name]}")
    target = Path(args.target)
    return Plan(candidate(onto, patchlib.load(target), target), len(onto.patches))


def cmd_bisect(args: argparse.Namespace) -> int:
    from .cli import _load  # here: cli imports this module
    cfg, cache = _load(args, accel=args.accel, out=args.out or Path("rig-out") / "bisect",
                       debug=args.debug, onto=args.onto)
    try:
        plan = _plan(args, cfg)
        bisection = Bisection(len(plan.series), args.test or (), args.retries)
    except (BisectError, patchlib.PatchError) as exc:
        print(f"rig: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    hostdeps.ensure(["source", "build", "image", "boot"], cfg.install_packages)
    progress = Progress()
    runner = Runner(cfg, cache, progress)
    try:
        runner.prepare_image()
        done = execute(runner, plan, bisection, cfg.out, shlex.join(["rig", *sys.argv[1:]]))
    finally:
        progress.close()
    print((done.out / "summary.txt").read_text(), end="")
    print(f"log: {(done.out / 'bisect.log').resolve()}")
    return done.exit_status
