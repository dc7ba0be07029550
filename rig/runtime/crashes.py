"""Which tests to stop running when tests of one kind keep crashing the guest.

A patch that BUGs on every read-only registration would otherwise cost a reboot per read-only
test and then give up, losing every other test with it.  Instead, once the crashes show a
pattern, the tests of that kind are not run again, and every other test still runs.  RULES
say which patterns count, as (the fields a kind fixes, the fields its crashes must vary in,
each with at least REPEATS values): a check with one MR access crashing in two regions; one
cell crashing in two checks; a region crashing with both accesses; an access crashing in two
regions and two checks (the registration itself crashes).  The tests of a stopped kind that
had not run yet are recorded as lost, with the crashes that stopped them; one that ran to its
end in a boot a later crash took down runs again (its result went with that boot, and it got
through: on Debian's 7.2 the two ODP oopses of memfd_secret stop that region, and the pinned
registrations of it, refused before, are still observed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    """Where a test sits in the matrix, as the guest suite names it."""

    check: str
    region: str
    access: str


@dataclass(frozen=True)
class Kind:
    """A kind of test: the fields given must all match."""

    check: str = ""
    region: str = ""
    access: str = ""

    def matches(self, cell: Cell) -> bool:
        return all(not want or want == have for want, have in
                   ((self.check, cell.check), (self.region, cell.region),
                    (self.access, cell.access)))

    def describe(self) -> str:
        parts = [f"check {self.check}" if self.check else "",
                 f"region {self.region}" if self.region else "",
                 f"{self.access} MRs" if self.access else ""]
        return " with ".join(p for p in parts if p)


@dataclass(frozen=True)
class Stops:
    """What the next boot of a suite leaves out: the KINDS that kept crashing, each with what
    its tests are told, but not the tests of them that RAN to their end in an earlier boot
    (keys as the suite's running_test() gives them)."""

    kinds: Mapping[Kind, str] = field(default_factory=dict)
    ran: frozenset[str] = frozenset()


REPEATS = 2                          # distinct values a crash pattern must vary in
RULES = (
    (("check", "access"), ("region",)),
    (("region", "access"), ("check",)),
    (("region",), ("access",)),
    (("access",), ("region", "check")),
)


class CrashPolicy:
    """Fed each crashed test; says which kinds to stop and why."""

    def __init__(self, repeats: int = REPEATS):
        self.repeats = repeats
        self.crashed: dict[str, Cell] = {}          # test id -> its cell, in crash order

    def record(self, test_id: str, cell: Cell) -> None:
        self.crashed[test_id] = cell

    def stopped(self) -> dict[Kind, list[str]]:
        """Each kind that keeps crashing, with the crashed tests that show it."""
        found: dict[Kind, list[str]] = {}
        cells = {i: c for i, c in self.crashed.items() if c.region}   # cells of the matrix
        for fixed, varying in RULES:
            for cell in cells.values():
                kind = Kind(**{f: getattr(cell, f) for f in fixed})
                ids = [i for i, c in cells.items() if kind.matches(c)]
                if kind not in found and all(
                        len({getattr(cells[i], f) for i in ids}) >= self.repeats
                        for f in varying):
                    found[kind] = ids
        return found

    def why_not(self, cell: Cell) -> str | None:
        """Why a test of CELL is not run, or None when it runs."""
        return next((self.why(kind) for kind in self.stopped() if kind.matches(cell)), None)

    def why(self, kind: Kind) -> str:
        """What a test of KIND that does not run is told, naming the crashes that stopped it."""
        ids = self.stopped().get(kind, [])
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        return f"not run: tests of {kind.describe()} crashed the guest {len(ids)} times ({shown})"
