"""pytest plugin the rig loads in the guest: marks each test's start and end in the kernel log.

The serial console carries the kernel log to the host even when the guest dies, so after a
panic or a hang the host knows which test was running (the JUnit file is lost with the guest).
"""

import os


def _kmsg(text: str) -> None:
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, f"umem-rig: {text}\n".encode())
    finally:
        os.close(fd)


def pytest_runtest_logstart(nodeid, location):
    _kmsg(f"test start {nodeid}")


def pytest_runtest_logfinish(nodeid, location):
    _kmsg(f"test end {nodeid}")


def pytest_collection_modifyitems(config, items):
    """Keep only the tests named in $RIG_SELECT (one name a line: test_x or test_x[cell])."""
    path = os.environ.get("RIG_SELECT")
    if not path:
        return
    with open(path) as fh:
        wanted = {line.strip() for line in fh if line.strip()}
    keep = [i for i in items if i.name in wanted or getattr(i, "originalname", "") in wanted]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
