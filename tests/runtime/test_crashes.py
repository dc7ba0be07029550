"""Crash patterns that stop a kind of test, from the crashes a guest suite's run gave."""

from rig.runtime.crashes import Cell, CrashPolicy, Kind

CHECKS = ("registration", "no_side_effect", "coherent_after_cpu_write")
REGIONS = ("anon-written", "anon-untouched", "zero-page", "file-shared-rw")


def crash_while(crashes, policy):
    """Run the matrix in pytest's order (check, region, access), crashing where CRASHES says,
    skipping what POLICY stops; return what ran and what was stopped, with why."""
    ran, stopped = [], {}
    for check in CHECKS:
        for region in REGIONS:
            for access in ("ro-mr", "rw-mr"):
                cell = Cell(check, region, access)
                test = f"test_{check}[{region}-{access}]"
                if (why := policy.why_not(cell)) is not None:
                    stopped[test] = why
                elif crashes(cell):
                    policy.record(test, cell)
                else:
                    ran.append(test)
    return ran, stopped


def test_a_bug_on_every_read_only_registration_costs_three_crashes_not_the_suite():
    policy = CrashPolicy()
    ran, stopped = crash_while(lambda c: c.access == "ro-mr", policy)
    assert list(policy.crashed) == ["test_registration[anon-written-ro-mr]",
                                    "test_registration[anon-untouched-ro-mr]",
                                    "test_no_side_effect[anon-written-ro-mr]"]
    assert all(t.endswith("-rw-mr]") for t in ran) and len(ran) == len(CHECKS) * len(REGIONS)
    assert all(t.endswith("-ro-mr]") for t in stopped)
    assert Kind(access="ro-mr") in policy.stopped()
    assert stopped["test_coherent_after_cpu_write[zero-page-ro-mr]"].startswith(
        "not run: tests of ro-mr MRs crashed the guest 3 times (test_registration[")


def test_one_cell_crashing_stops_that_cell_only():
    policy = CrashPolicy()
    ran, stopped = crash_while(lambda c: (c.region, c.access) == ("zero-page", "ro-mr"), policy)
    assert list(stopped) == ["test_coherent_after_cpu_write[zero-page-ro-mr]"]
    assert "tests of region zero-page with ro-mr MRs crashed the guest 2 times" in stopped[
        "test_coherent_after_cpu_write[zero-page-ro-mr]"]
    assert len(ran) == len(CHECKS) * len(REGIONS) * 2 - 3


def test_a_region_crashing_with_both_accesses_stops_the_region():
    policy = CrashPolicy()
    ran, stopped = crash_while(lambda c: c.region == "file-shared-rw", policy)
    assert len(policy.crashed) == 2
    assert set(stopped) == {f"test_{c}[file-shared-rw-{a}]" for c in CHECKS[1:]
                            for a in ("ro-mr", "rw-mr")}
    assert not any("file-shared-rw" in t for t in ran)


def test_one_crash_stops_nothing_and_crashes_outside_the_matrix_are_no_pattern():
    policy = CrashPolicy()
    policy.record("test_registration[zero-page-ro-mr]", Cell("registration", "zero-page",
                                                                "ro-mr"))
    policy.record("cow.c: R/O GUP pin", Cell("cow", "", ""))
    policy.record("cow.c: R/W GUP pin", Cell("cow", "", ""))
    assert policy.stopped() == {}
    assert policy.why_not(Cell("registration", "anon-written", "ro-mr")) is None
