"""`rig history --series`: every series the list follower vetted, each revision with its
verdict, where it was vetted, and what became of the answer; the series whose newest vet is
the latest first.  Read from the follower's state (state.py), which keeps each vet's summary:
what the summary said is what the answer said."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from rig.core.status import ExitStatus
from rig.core.text import printable
from rig.flows.watch.state import Row, State

# states a vet reached: its summary is kept; "failed" is a vet that killed the rig each time
_VETTED = ("vetted", "answered", "sending", "sent", "unanswerable", "failed", "muted")
_ANSWER = {"vetted": "not answered yet", "answered": "answer in the outbox",
           "sending": "sending was cut short (in the outbox)", "sent": "answer sent",
           "unanswerable": "no answer (its thread names no one to answer)",
           "failed": "no answer", "muted": "muted: no answer"}


@dataclass(frozen=True)
class Vet:
    revision: int
    when: float
    verdict: str                     # the summary's Result: line, or why there is none
    base: str                        # where it was vetted, from the summary
    partial: str                     # the summary's word on patches not vetted
    answer: str
    report: Path | None


def _line(summary: str, prefix: str) -> str:
    return next((ln.strip() for ln in summary.splitlines() if ln.strip().startswith(prefix)), "")


def _vet(row: Row) -> Vet:
    said = row.summary
    verdict = _line(said, "Result:").removeprefix("Result: ")
    if not verdict:
        verdict = ("the vet ended the rig each time it was tried" if row.state == "failed"
                   else next((ln.strip() for ln in said.splitlines() if ln.strip()),
                             "no summary"))
        if row.status is not None and row.status != int(ExitStatus.OK):
            verdict = f"no verdict: {verdict}"
    report = Path(row.out) / "report.html" if row.out else None
    return Vet(row.revision, row.answered or row.updated, verdict,
               _line(said, "Base:").removeprefix("Base: "),
               _line(said, "Partial:"), _ANSWER[row.state],
               report if report is not None and report.is_file() else None)


def text(path: Path) -> str:
    """The vetted series of the state database at PATH, as lines for a terminal."""
    if not path.exists():
        return f"{path.parent}: nothing watched yet\n"
    st = State(path)
    try:
        rows = [r for r in st.all() if r.state in _VETTED and (r.summary or r.state == "failed")]
    finally:
        st.close()
    # each vet read once: a revision's report is looked for on disk
    by_topic = [[(r, _vet(r)) for r in g] for _, g in itertools.groupby(
        sorted(rows, key=lambda r: r.topic), key=lambda r: r.topic)]
    by_topic.sort(key=lambda g: max(vet.when for _, vet in g), reverse=True)
    lines = [f"state: {path}", f"vetted series ({len(by_topic)}):"]
    for group in by_topic:
        newest = max((r for r, _ in group), key=lambda r: r.revision)
        lines.append(f"  {newest.subject} ({newest.author}) <{newest.message_id}>")
        for vet in sorted((vet for _, vet in group), key=lambda v: -v.revision):
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(vet.when))
            lines.append(f"    v{vet.revision} {when}: {vet.verdict}")
            lines += [f"      {what}" for what in (vet.partial, f"base: {vet.base}"
                                                   if vet.base else "", vet.answer) if what]
            if vet.report:
                lines.append(f"      report: {vet.report}")
    return printable("\n".join(lines) + "\n")
