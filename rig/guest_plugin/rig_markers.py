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
