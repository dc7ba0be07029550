"""The test suites the test stage can run in a guest, by name (see base.py for what a suite is).

=============  ==========================================================================
umem           guest_tests/: what ibv_reg_mr() does to each kind of memory (the rig's own)
kselftest-mm   the kernel's mm selftests cow, gup_longterm and gup_test (KTAP)
rdma-core      rdma-core's own tests (test_mr.py, ...) on rxe0
=============  ==========================================================================
"""

from __future__ import annotations

from rig.runtime.suites.base import Suite, SuiteError
from rig.runtime.suites.kselftest_mm import KselftestMM
from rig.runtime.suites.rdma_core import RdmaCore
from rig.runtime.suites.umem import UmemSuite

SUITES: dict[str, type[Suite]] = {s.name: s for s in (UmemSuite, KselftestMM, RdmaCore)}


def get(name: str) -> Suite:
    """The suite called NAME; SuiteError naming the known ones if there is none."""
    if name not in SUITES:
        raise SuiteError(f"no suite named {name!r} (known: {', '.join(SUITES)})")
    return SUITES[name]()


def split_select(select: tuple[str, ...], suites: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """--select values per suite: "SUITE:NAME" is that suite's, a plain NAME the umem suite's
    (as before there were suites).  A suite with none runs all its tests."""
    chosen: dict[str, list[str]] = {s: [] for s in suites}
    for item in select:
        suite, sep, name = item.partition(":")
        if not sep or suite not in SUITES:
            suite, name = UmemSuite.name, item
        if suite not in chosen:
            raise SuiteError(f"--select {item}: the suite {suite!r} is not being run "
                             f"(suites: {', '.join(suites)})")
        chosen[suite].append(name)
    return {s: tuple(names) for s, names in chosen.items()}
