"""The report, from a results document alone: HTML for a browser, short text for a mail reply.

Both are jinja2 templates under rig/templates/ fed by the view built here, so any old
results.json re-renders.  Everything is grouped by suite, each with its own matrix: the umem
suite's region x access x check, another suite's test groups (a kselftest program run, an
rdma-core test class) x tests.  The HTML is one self-contained page (inline CSS, no scripts) and
autoescaped: every string from the guest or the console is data, never markup, and a link
only ever goes to an http(s) URL.  The text is
plain, short enough for a reply on the list.  Both replace control characters from consoles.
"""

from __future__ import annotations

import json
import shlex
import urllib.parse
from dataclasses import dataclass
from typing import Any

import jinja2
import markupsafe

from rig.core import datafiles
from rig.core.text import printable
from rig.results.compare import (
    ABSENT,
    FAILING,
    CellChange,
    Change,
    Comparison,
    VariantComparison,
    compare,
    flatten,
    is_raw,
)
from rig.results.schema import Results, SuiteInfo, TestResult, VariantResult, Verdict

LABELS = {
    Verdict.PASSED: "PASS", Verdict.FAILED: "FAIL", Verdict.ERROR: "ERROR",
    Verdict.SKIPPED: "SKIP", Verdict.XFAILED: "XFAIL", Verdict.XPASSED: "XPASS",
    Verdict.CRASHED: "CRASH", Verdict.LOST: "LOST",
}
# symbol + word, so a change reads without colour
MARKERS = {
    Change.FIXED: "▲ FIXED", Change.REGRESSED: "▼ REGRESSED", Change.CHANGED: "Δ CHANGED",
    Change.NEW: "+ NEW", Change.LOST: "⊘ LOST", Change.FLAKY: "~ FLAKY",
}
# how many cells of one kind the text lists before it refers to the HTML report
TEXT_LIMIT = 8
# each suite's word for what its tests fall in: the report's, so results need no suite code
GROUPS: dict[str, str] = datafiles.toml("suite-groups.toml")


@dataclass
class Cell:
    """One variant's result for one row of the matrix."""

    variant: VariantResult
    test: TestResult | None
    change: CellChange | None            # None in the base column and where not compared

    @property
    def label(self) -> str:
        if self.test:
            return LABELS[self.test.verdict]
        return "NOT RUN" if not self.variant.has_verdict else "ABSENT"

    @property
    def css(self) -> str:
        return self.test.verdict.value if self.test else "none"

    @property
    def marker(self) -> str:
        return MARKERS.get(self.change.change, "") if self.change else ""

    @property
    def mark(self) -> str:
        return self.change.change.value if self.change and self.marker else ""

    @property
    def explained(self) -> bool:
        """Whether the verdict comes with a reason worth showing (failures, xfails, crashes)."""
        return bool(self.test) and self.test.verdict not in (Verdict.PASSED, Verdict.SKIPPED)

    @property
    def title(self) -> str:
        """Hover text: the verdict's message and the stable observations."""
        if not self.test:
            return self.label
        obs = [f"{k}={show(v)}" for k, v in flatten(self.test.observations).items()
               if not is_raw(k)]
        return "\n".join(filter(None, [self.test.message.splitlines()[0]
                                       if self.test.message else "", *obs]))

    def differs(self, key: str) -> bool:
        return bool(self.change) and any(d.key == key for d in self.change.differences)


@dataclass
class Row:
    index: int
    suite: str
    id: str
    region: str
    access: str
    check: str
    doc: str
    cells: list[Cell]

    @property
    def notable(self) -> bool:
        """Worth opening: a change against the base, or a failure anywhere."""
        return any(c.mark in ("fixed", "regressed", "lost", "changed") or
                   (c.test and c.test.verdict in FAILING) for c in self.cells)

    @property
    def ran(self) -> list[Cell]:
        """The cells of variants whose suite ran: the others have nothing to show."""
        return [c for c in self.cells if c.variant.has_verdict]

    def observations(self) -> list[tuple[str, bool, list[str]]]:
        """(key, volatile, value per ran cell): stable keys first, each in first-seen order."""
        flat = [flatten(c.test.observations) if c.test else {} for c in self.ran]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        keys.sort(key=is_raw)
        return [(k, is_raw(k), [show(f.get(k, ABSENT)) for f in flat]) for k in keys]


@dataclass
class Group:
    region: str
    accesses: list[tuple[str, list[Row]]]


@dataclass
class SuiteView:
    """One suite's part of the report."""

    name: str
    groups: list[Group]
    rows: list[Row]
    cells: bool                      # its tests are cells with an access (the umem suite)
    group: str                       # what its tests' regions are ("program run", ...)
    infos: list[SuiteInfo | None]    # per variant, what became of the suite there

    def changes(self, vc: VariantComparison) -> list[CellChange]:
        return [c for c in vc.notable() if c.suite == self.name]

    @property
    def origin(self) -> str:
        """Where its tests came from (the same for every variant that ran it)."""
        return next((i.origin for i in self.infos if i and i.origin), "")


def render(results: Results) -> str:
    """The HTML report."""
    return _env(True).get_template("report.html.j2").render(_view(results))


def render_text(results: Results) -> str:
    """The plain-text report, short enough to paste into a reply on the list."""
    return _env(False).get_template("report.txt.j2").render(_view(results))


def render_template(name: str, **context: Any) -> str:
    """Plain text from the template NAME, with the text report's filters: for the other
    texts the rig writes (the vet summary)."""
    return _env(False).get_template(name).render(**context)


def _view(results: Results) -> dict[str, Any]:
    comparison = compare(results)
    variants = [comparison.base] + [v.variant for v in comparison.variants]
    rows = _rows(comparison, variants)
    suites = []
    for name in dict.fromkeys([r.suite for r in rows] +
                              [n for v in variants for n in v.suite_names()]):
        mine = [r for r in rows if r.suite == name]
        suites.append(SuiteView(name, _groups(mine), mine, any(r.access for r in mine),
                                GROUPS.get(name, "group"),
                                [v.suite(name) for v in variants]))
    stages = list(dict.fromkeys(s for v in variants for s in v.timings))
    return {
        "results": results, "comparison": comparison, "variants": variants,
        "suites": suites, "multi": len(suites) > 1, "rows": rows, "stages": stages,
        "exit_status": int(comparison.exit_status()),
        "exit_meaning": comparison.exit_status().meaning,
        "command": next((shlex.join(r.command) for r in results.runs if r.command), "rig run"),
        "labels": LABELS, "markers": MARKERS, "limit": TEXT_LIMIT,
        "row_of": {(r.suite, r.id): r for r in rows},
    }


def _rows(comparison: Comparison, variants: list[VariantResult]) -> list[Row]:
    by_variant = [{t.key: t for t in v.tests} for v in variants]
    changes = [{}] + [{c.key: c for c in vc.cells} for vc in comparison.variants]
    firsts: dict[tuple[str, str], TestResult] = {}
    for v in variants:
        for t in v.tests:
            firsts.setdefault(t.key, t)
    # the suites' own order of suites, regions, accesses and checks, as first seen; odd
    # results (no region) last in their suite
    order: dict[str, dict[str, int]] = {"suite": {}, "region": {}, "access": {}, "check": {}}
    for t in firsts.values():
        for kind, value in (("suite", t.suite), ("region", t.region), ("access", t.access),
                            ("check", t.check)):
            order[kind].setdefault(value, len(order[kind]))

    def key(t: TestResult) -> tuple:
        return (order["suite"][t.suite], not t.region, order["region"][t.region],
                order["access"][t.access], order["check"][t.check])

    rows = []
    for i, t in enumerate(sorted(firsts.values(), key=key)):
        cells = [Cell(v, tests.get(t.key), ch.get(t.key))
                 for v, tests, ch in zip(variants, by_variant, changes, strict=True)]
        rows.append(Row(i, t.suite, t.id, t.region, t.access, t.check, t.doc, cells))
    return rows


def _groups(rows: list[Row]) -> list[Group]:
    groups: list[Group] = []
    for row in rows:
        if not groups or groups[-1].region != row.region:
            groups.append(Group(row.region, []))
        accesses = groups[-1].accesses
        if not accesses or accesses[-1][0] != row.access:
            accesses.append((row.access, []))
        accesses[-1][1].append(row)
    return groups


def show(value: Any, absent: str = "—") -> str:
    if value is ABSENT:
        return absent
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def show_observed(value: Any) -> str:
    """An observation as JSON, or "(not recorded)" where one side has none: for plain text."""
    return show(value, "(not recorded)")


def plain(value: Any) -> Any:
    """A template's finalize: every value printed with its control characters escaped."""
    # A macro's output (Markup) was made of values that came through here already.
    if not isinstance(value, str) or isinstance(value, markupsafe.Markup):
        return value
    return printable(value)


_LINKABLE = ("http", "https")


def link(url: str) -> str:
    """URL if it is an http(s) link, else "": a javascript: or data: URL is never an href."""
    return url if urllib.parse.urlsplit(url.strip()).scheme.lower() in _LINKABLE else ""


def _env(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rig", "templates"), autoescape=html,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, finalize=plain)
    # a mail reply stays ASCII where the rig has a choice
    env.filters["show"] = show if html else lambda v: show(v, repr(ABSENT))
    env.filters["seconds"] = lambda s: f"{s:.1f} s"
    env.filters["first_line"] = lambda s: s.splitlines()[0] if s else ""
    env.filters["short"] = lambda s: s[:12]
    env.filters["shell"] = shlex.join
    env.filters["link"] = link
    env.filters["cellname"] = lambda r: " ".join(filter(None, (r.region, r.access)))
    env.filters["observed"] = show_observed
    env.globals["Change"] = Change
    return env
