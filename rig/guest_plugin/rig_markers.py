"""pytest plugin the rig loads in the guest: marks each test's start and end in the kernel log.

Each marker carries the boot's token (rig/guest/markers.py), from the environment: the host
believes no marker without it, so the kernel under test cannot forge one.

The serial console carries the kernel log to the host even when the guest dies, so after a
panic or a hang the host knows which test was running (the JUnit file is lost with the guest).
After crashes that show a pattern, the host names kinds of test not to run again; the plugin
leaves them out and says which it left (rig/runtime/crashes.py).
"""

import json
import os

import pytest

TOKEN = os.environ.get("RIG_MARKER_TOKEN", "")


def _kmsg(text: str) -> None:
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, f"umem-rig {TOKEN}: {text}\n".encode())
    finally:
        os.close(fd)


def pytest_runtest_logstart(nodeid, location):
    _kmsg(f"test start {nodeid}")


def pytest_runtest_logfinish(nodeid, location):
    _kmsg(f"test end {nodeid}")


def _cell(item) -> dict:
    """The cell the suite's conftest recorded at collection ({} for a test without one)."""
    for name, value in item.user_properties:
        if name == "cell":
            return json.loads(value)
    return {}


@pytest.hookimpl(trylast=True)         # after the suite's conftest has named each test's cell
def pytest_collection_modifyitems(config, items):
    """Leave out the tests of the kinds in $RIG_STOPPED_KINDS (they kept crashing the guest)
    but those it names as having run to their end in an earlier boot, and write which and why
    to /tmp/rig-stopped.json for the host to record as lost."""
    path = os.environ.get("RIG_STOPPED_KINDS")
    if not path:
        return
    with open(path) as fh:
        stops = json.load(fh)
    kinds, ran = stops["kinds"], set(stops["ran"])
    keep, left, said = [], [], []
    for item in items:
        cell = _cell(item)
        why = None if item.nodeid in ran else next((k["why"] for k in kinds if cell and all(
            not k[f] or k[f] == cell.get(f) for f in ("check", "region", "access"))), None)
        if why is None:
            keep.append(item)
        else:
            left.append(item)
            said.append({"id": item.name, **cell, "why": why})
    with open("/tmp/rig-stopped.json", "w") as fh:
        json.dump(said, fh)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = keep
