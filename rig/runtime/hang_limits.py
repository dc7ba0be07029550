"""How long each test took on the base variant, so a hang is called after a multiple of that
test's own time (rig/data/test-limits.toml), not one limit for every test.

The times come from the console: the printk timestamps of a test's trusted start and end
markers (rig/guest/markers.py), so a test that hangs the guest, and with it pytest's JUnit
file, is still timed where it did end on the base.  They are kept in the cache, merged run
after run, and read by the next runs of every variant.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping

from rig.core import datafiles
from rig.core.cache import Cache

_MARK = re.compile(r"\[\s*(?P<at>\d+\.\d+)\] umem-rig: test (?P<kind>start|end) "
                   r"(?P<node>\S{1,300})")
MAX_TESTS = 20000                      # a bound on the file, whatever the console says


def measure(console: str) -> dict[str, float]:
    """Seconds each test took, from a trusted console (markers.trusted)."""
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for m in _MARK.finditer(console):
        at = float(m["at"])
        if m["kind"] == "start":
            started[m["node"]] = at
        elif m["node"] in started:
            took[m["node"]] = round(max(0.0, at - started.pop(m["node"])), 3)
    return took


def _path(cache: Cache):
    return cache.root / "timings" / "tests.json"


def load(cache: Cache) -> dict[str, float]:
    """The times kept so far; none if there are none or the file is not what record() wrote."""
    try:
        data = json.loads(_path(cache).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and v >= 0}


def record(cache: Cache, took: Mapping[str, float]) -> None:
    """Merge TOOK (the base's) into the kept times."""
    if not took:
        return
    path = _path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**load(cache), **took}
    merged = dict(list(merged.items())[-MAX_TESTS:])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, sort_keys=True))
    os.replace(tmp, path)


def silence(learned: Mapping[str, float], untimed: float, quiet: Callable[[], float],
            running: Callable[[], str | None]) -> Callable[[], float]:
    """How long the console may stay quiet now: the running test's limit if the base timed
    it, else UNTIMED.  RUNNING (it reads the console) is asked only once the console has
    been quiet longer than the least limit a timed test can have."""
    limits = datafiles.toml("test-limits.toml")
    least = limits["floor"] + limits["margin"]
    if not learned:
        return lambda: untimed

    def now() -> float:
        if quiet() <= least:
            return least
        took = learned.get(running() or "")
        return untimed if took is None else \
            max(limits["floor"], limits["factor"] * took) + limits["margin"]
    return now
