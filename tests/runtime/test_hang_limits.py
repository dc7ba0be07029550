"""Per-test hang limits from the base's own times (rig/runtime/hang_limits.py), measured on
real consoles (tests/fixtures/console: a run with a WARN in a test, and a test that hung)."""

import json

import pytest
from support.paths import FIXTURES

from rig.core import datafiles
from rig.core.cache import Cache
from rig.runtime import hang_limits

CONSOLE = FIXTURES / "console"
LIMITS = datafiles.toml("test-limits.toml")


def test_each_test_that_ended_is_timed_from_its_markers():
    took = hang_limits.measure((CONSOLE / "warn-during-test.log").read_text())
    # [   11.862945] start ... [   12.339847] end
    assert took["test_umem.py::test_registration[anon-written-ro-mr]"] == pytest.approx(0.477)
    assert all(0 <= t < 60 for t in took.values()) and len(took) > 1


def test_a_test_that_never_ended_is_not_timed():
    console = (CONSOLE / "hang-in-test.log").read_text()
    hung = console.rsplit("umem-rig: test start ", 1)[1].split()[0]
    assert hung not in hang_limits.measure(console)


def test_the_running_test_gets_a_multiple_of_its_time_with_a_floor():
    learned = {"slow": 3.0, "quick": 0.1}
    for node, want in (("slow", LIMITS["factor"] * 3.0 + LIMITS["margin"]),
                       ("quick", LIMITS["floor"] + LIMITS["margin"]), ("never-timed", 45.0)):
        limit = hang_limits.silence(learned, 45.0, lambda: 100.0, lambda n=node: n)
        assert limit() == want


def test_the_console_is_read_only_once_it_has_been_quiet_a_while():
    def running():
        raise AssertionError("read the console while the tests were moving")
    limit = hang_limits.silence({"t": 1.0}, 45.0, lambda: 1.0, running)
    assert limit() == LIMITS["floor"] + LIMITS["margin"]
    assert hang_limits.silence({}, 45.0, lambda: 100.0, running)() == 45.0


def test_times_are_kept_in_the_cache_and_a_bad_file_is_no_times(tmp_path):
    cache = Cache(tmp_path)
    hang_limits.record(cache, {"a": 1.5})
    hang_limits.record(cache, {"b": 0.25, "a": 2.0})
    assert hang_limits.load(cache) == {"a": 2.0, "b": 0.25}
    path = tmp_path / "timings" / "tests.json"
    for bad in ("[1, 2]", "{half", json.dumps({"a": "x", "b": -1, "c": 0.5})):
        path.write_text(bad)
        assert hang_limits.load(cache) == ({"c": 0.5} if bad.startswith('{"a"') else {})
