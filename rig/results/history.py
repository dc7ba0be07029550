"""`rig history`: every night's verdicts on one page, the nights a verdict changed marked.

A nightly job keeps each night's results.json, as DIR/results-YYYY-MM-DD.json or as
DIR/<night>/results.json (see docs/nightly.md).  The page has one table per variant: a row
per test, a column per night, and a cell that differs from the test's previous verdict is
marked in colour and in words ("was PASS"), as is a variant's outcome when it changes (a
kernel that stopped building).  A file that cannot be read is listed on the page, not fatal:
one bad night must not hide the others.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from rig.core.status import ExitStatus, RigError
from rig.results.compare import CompareError, compare, no_verdict_reason
from rig.results.report import LABELS, plain
from rig.results.schema import Results, ResultsError, TestResult, Verdict, load

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Night:
    label: str                       # the date, from the path or from when the run started
    path: Path
    results: Results
    started: str = ""

    @property
    def exit_status(self) -> int | None:
        try:
            return compare(self.results).exit_status()
        except CompareError:
            return None


@dataclass
class Mark:
    """One cell: a verdict or an outcome, and whether it changed since the night before."""

    label: str
    css: str                         # a verdict's value, "ok"/"no-verdict" or "none"
    title: str = ""
    was: str = ""                    # the previous label, when this one differs from it
    was_css: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.was)


@dataclass
class Row:
    id: str
    cells: list[Mark]

    @property
    def changes(self) -> int:
        return sum(c.changed for c in self.cells)


@dataclass
class Table:
    variant: str
    status: list[Mark]               # the variant's outcome per night
    rows: list[Row]


@dataclass
class Event:
    """A change, for the list at the top of the page."""

    night: str
    variant: str
    what: str                        # a test id, or "outcome"
    was: Mark                        # the mark before, as the night before showed it
    now: Mark


@dataclass
class History:
    nights: list[Night]
    tables: list[Table]
    problems: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        out = []
        for t in self.tables:
            for row in [("outcome", t.status)] + [(r.id, r.cells) for r in t.rows]:
                out += [Event(self.nights[i].label, t.variant, row[0],
                              Mark(m.was, m.was_css), m) for i, m in enumerate(row[1])
                        if m.changed]
        return sorted(out, key=lambda e: e.night, reverse=True)


def find(directory: Path) -> list[Path]:
    """results*.json in DIRECTORY and results.json one folder down, oldest name first."""
    found = list(directory.glob("results*.json")) + list(directory.glob("*/results.json"))
    return sorted(p for p in found if p.is_file())


def _label(path: Path, directory: Path, results: Results) -> tuple[str, str]:
    started = results.runs[0].started if results.runs else ""
    m = _DATE.search(str(path.relative_to(directory)))
    return (m.group(0) if m else started[:10] or path.parent.name), started


def load_nights(directory: Path, last: int = 0) -> tuple[list[Night], list[str]]:
    """The nights found in DIRECTORY, oldest first (the LAST ones only, if given), and the
    files that could not be read, each with why."""
    nights, problems = [], []
    for path in find(directory):
        try:
            res = load(path)
        except ResultsError as exc:
            problems.append(str(exc))
            continue
        label, started = _label(path, directory, res)
        nights.append(Night(label, path, res, started))
    nights.sort(key=lambda n: (n.label, n.started))
    for a, b in itertools.pairwise(nights):
        if a.label == b.label:           # two runs in one night: tell them apart by the time
            a.label, b.label = f"{a.label} {a.started[11:16]}", f"{b.label} {b.started[11:16]}"
    return (nights[-last:] if last else nights), problems


def _test_mark(t: TestResult | None, outcome_ok: bool, reason: str) -> Mark:
    if not outcome_ok:
        return Mark("NOT RUN", "none", reason)
    if t is None:
        return Mark("ABSENT", "none", "not in this night's results")
    return Mark(LABELS[t.verdict], t.verdict.value, t.message.split("\n")[0])


def build(nights: list[Night], problems: list[str] = ()) -> History:
    names = list(dict.fromkeys(
        v.name for n in nights for v in sorted(n.results.variants, key=lambda v: not v.is_base)))
    tables = []
    for name in names:
        per_night = [next((v for v in n.results.variants if v.name == name), None)
                     for n in nights]
        ids = list(dict.fromkeys(t.id for v in per_night if v for t in v.tests))
        status, rows = [], {i: Row(i, []) for i in ids}
        last_outcome: Mark | None = None
        last_verdict: dict[str, Mark] = {}
        for v in per_night:
            if v is None:
                status.append(Mark("—", "none", "not in this night's run"))
                for row in rows.values():
                    row.cells.append(Mark("—", "none", "not in this night's run"))
                continue
            outcome = v.outcome.value
            mark = Mark(outcome, "ok" if v.has_verdict else "no-verdict",
                        "" if v.has_verdict else no_verdict_reason(v))
            if last_outcome and outcome != last_outcome.label:
                mark.was, mark.was_css = last_outcome.label, last_outcome.css
            last_outcome = mark
            status.append(mark)
            tests = {t.id: t for t in v.tests}
            for test_id, row in rows.items():
                cell = _test_mark(tests.get(test_id), v.has_verdict, mark.title)
                t = tests.get(test_id)
                # a test that never ran (lost, or no verdict at all) keeps the verdict before
                if v.has_verdict and t is not None and t.verdict is not Verdict.LOST:
                    before = last_verdict.get(test_id)
                    if before and before.label != cell.label:
                        cell.was, cell.was_css = before.label, before.css
                    last_verdict[test_id] = cell
                row.cells.append(cell)
        tables.append(Table(name, status, list(rows.values())))
    return History(nights, tables, list(problems))


def render(history: History) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("rig", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, finalize=plain)
    meanings = {int(s): s.meaning for s in ExitStatus}
    return env.get_template("history.html.j2").render(history=history, exit_meaning=meanings)


def write(directory: Path, out: Path | None = None, last: int = 0) -> tuple[History, Path]:
    """Render the history of the nights in DIRECTORY into OUT (DIRECTORY/history.html)."""
    if not directory.is_dir():
        raise RigError(f"{directory}: not a directory")
    nights, problems = load_nights(directory, last)
    if not nights:
        raise RigError(f"{directory}: no readable results*.json or */results.json in it"
                       + "".join(f"\n  skipped {p}" for p in problems))
    history = build(nights, problems)
    out = out or directory / "history.html"
    out.write_text(render(history))
    return history, out


