"""KTAP (and the TAP 13 that kselftest prints) in, one result per test line out.

    TAP version 13
    1..3
    # [RUN] R/O longterm GUP pin ... with shared zeropage
    ok 1 Longterm R/O pin is reliable
    # [RUN] ... with memfd
    not ok 2 Longterm R/O pin is reliable
    ok 3 # SKIP PIN_LONGTERM_TEST_START failed

A result line is "ok" or "not ok", the test's number, an optional description and an
optional directive after " # " (SKIP, XFAIL, XPASS, TODO, error) with its reason; the "#"
lines before it are its diagnostics.  The kernel's format (Documentation/dev-tools/ktap.rst)
and kselftest.h (ksft_test_result_*) differ in places; both are read:

==========================  =========  ==========================================
line                        verdict    why
==========================  =========  ==========================================
ok N desc                   passed
ok N [desc] # SKIP reason   skipped    "not ok ... # SKIP" too: KTAP says skip
ok N [desc] # XFAIL reason  xfailed    kselftest's expected failure
ok N [desc] # XPASS reason  xpassed    kselftest's unexpected pass: a failure
not ok N [desc] # TODO      xfailed    TAP's expected failure; "ok ... # TODO" xpassed
not ok N [desc] # error     error      kselftest's ksft_test_result_error()
not ok N desc               failed
==========================  =========  ==========================================

Any other line (the kernel's log, where the output came over the console) is kept with the
result it came before.  Indented subtests are read as results of their own (the mm selftests
have none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rig.core import datafiles
from rig.results.schema import Verdict

_RESULT = re.compile(r"^\s*(?P<ok>ok|not ok) (?P<num>\d+)(?: (?P<rest>.*))?$")
_DIRECTIVE = re.compile(r"^(?P<word>SKIP|XFAIL|XPASS|TODO|error)\b\s*(?P<reason>.*)$",
                        re.IGNORECASE)
_PLAN = re.compile(r"^\s*1\.\.(?P<count>\d+)")
_DIAGNOSTIC = re.compile(r"^\s*# ?(?P<text>.*)$")
_BAIL = re.compile(r"^\s*Bail out!\s*(?P<reason>.*)$")
_VERSION = re.compile(r"^\s*K?TAP version \d+")


@dataclass
class Line:
    """One result line, with the diagnostics printed since the previous one."""

    number: int
    verdict: Verdict
    description: str                 # what the test printed after its number
    reason: str = ""                 # the directive's reason (skip, xfail), or ""
    diagnostics: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)      # non-KTAP lines since the last result


@dataclass
class Report:
    plan: int | None = None          # the "1..N" count, if printed
    results: list[Line] = field(default_factory=list)
    bail_out: str | None = None      # "Bail out!"'s reason, if the program gave up
    trailing: list[str] = field(default_factory=list)   # diagnostics after the last result
    cut: str = ""                    # why only the first part was read, if it was cut


def parse(text: str) -> Report:
    """TEXT's results; only its first [parse] ktap_bytes (guest-limits.toml) are read: the
    program and the kernel under test print it, as much as they like."""
    report = Report()
    cap = datafiles.guest_limits("parse")["ktap_bytes"]
    if len(text) > cap:
        text = text[:cap]
        report.cut = (f"more than {cap} characters of output ([parse] ktap_bytes): only "
                      "the first were read")
    pending: list[str] = []
    other: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if m := _RESULT.match(line):
            report.results.append(_result(m, pending))
            report.results[-1].other = other
            pending, other = [], []
        elif m := _PLAN.match(line):
            report.plan = int(m["count"]) if report.plan is None else report.plan
        elif m := _BAIL.match(line):
            report.bail_out = m["reason"].strip()
        elif m := _DIAGNOSTIC.match(line):
            pending.append(m["text"].rstrip())
        elif line.strip() and not _VERSION.match(line):
            other.append(line)
    report.trailing = pending
    return report


def _result(m: re.Match[str], diagnostics: list[str]) -> Line:
    ok = m["ok"] == "ok"
    rest = m["rest"] or ""
    # "ok 3 # SKIP why" has no description; a description may itself hold a "#"
    description, _, directive = ("", "", rest[1:]) if rest.startswith("#") else \
        rest.partition(" # ")
    description = description.strip()
    d = _DIRECTIVE.match(directive.strip()) if directive else None
    if d is None:
        # "desc #  text" (ksft_test_result_code without a directive): text is diagnostic
        verdict = Verdict.PASSED if ok else Verdict.FAILED
        if directive.strip():
            description = f"{description} # {directive.strip()}".strip()
        return Line(int(m["num"]), verdict, description, "", diagnostics)
    word = d["word"].upper()
    verdict = {
        "SKIP": Verdict.SKIPPED,
        "XFAIL": Verdict.XFAILED,
        "XPASS": Verdict.XPASSED,
        "TODO": Verdict.XPASSED if ok else Verdict.XFAILED,
        "ERROR": Verdict.ERROR,
    }[word]
    return Line(int(m["num"]), verdict, description, d["reason"].strip(), diagnostics)
