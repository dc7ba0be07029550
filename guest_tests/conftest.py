"""Fixtures and hooks: the loopback QPs, the test driver, observations and the kernel log.

Every test records, as JUnit properties (xunit1 keeps them per testcase):
  cell          {"region", "access", "check"}
  doc           the first line of the test's docstring
  observations  what was observed, whatever the verdict ("raw_*" keys vary between boots)
  kmsg          the kernel log lines logged while the test ran
A splat in those lines (splat-patterns.txt) fails the test.
"""

from __future__ import annotations

import json
import os
import signal

import cells
import pytest
import umem_dev
from kmsg import KernelLog, load_patterns, splats
from loopback import Loopback
from pyverbs.pyverbs_error import PyverbsError
from regions import LENGTH

RDMA_DEVICE_ENV = "UMEM_TEST_RDMA_DEVICE"
TIMEOUT_ENV = "UMEM_TEST_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
OBSERVATIONS = pytest.StashKey[dict]()
KERNEL_LOG = pytest.StashKey[list]()
TIMEOUT = pytest.StashKey[float]()
DRIVER_PROBLEM = pytest.StashKey[str]()
SPLAT_PATTERNS = load_patterns()


@pytest.fixture(scope="session")
def loopback():
    device = os.environ.get(RDMA_DEVICE_ENV, "rxe0")
    problem = ""
    try:
        loop = Loopback(device, LENGTH)
    except (PyverbsError, OSError, RuntimeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        pytest.fail(f"cannot set up loopback RC QPs on RDMA device {device!r} "
                    f"(set {RDMA_DEVICE_ENV} to use another): {problem}", pytrace=False)
    yield loop
    loop.close()


@pytest.fixture
def obs(request) -> dict:
    observations: dict = {}
    request.node.stash[OBSERVATIONS] = observations
    return observations


@pytest.fixture
def open_cell(request, loopback, obs):
    """open_cell(kind, access): a context manager for a fresh region registered as an MR.

    Everything it creates is also torn down inside the test's call, so the kernel log read
    around the call covers registration, deregistration, munmap and the driver's release.
    """
    check = request.node.originalname.removeprefix("test_")

    def _open(kind, access):
        return cells.open_cell(kind, access, check, loopback, obs)
    return _open


def pytest_collection_modifyitems(items):
    # recorded at collection, so that a test whose setup fails still names its cell
    for item in items:
        params = getattr(item, "callspec", None)
        if params is None or "kind" not in params.params:
            continue
        cell = {"region": params.params["kind"].name, "access": params.params["access"].name,
                "check": item.originalname.removeprefix("test_")}
        doc = (item.function.__doc__ or "").strip().splitlines()
        item.user_properties.append(("cell", json.dumps(cell)))
        item.user_properties.append(("doc", doc[0] if doc else ""))


def pytest_runtest_setup(item):
    """A driver cell without its driver is an error that says why, never a skip: a candidate
    whose module does not load must not pass for one that has nothing to report.  (A hook
    rather than a fixture: under TCG every function-scoped fixture costs milliseconds.)"""
    callspec = getattr(item, "callspec", None)
    kind = callspec.params.get("kind") if callspec else None
    if kind is None or kind.backing != "driver":
        return
    if DRIVER_PROBLEM not in item.config.stash:
        item.config.stash[DRIVER_PROBLEM] = umem_dev.ensure_loaded()
    if item.config.stash[DRIVER_PROBLEM]:
        pytest.fail(item.config.stash[DRIVER_PROBLEM], pytrace=False)


def pytest_configure(config):
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise pytest.UsageError(f"{TIMEOUT_ENV}={value!r} is not a positive number of seconds")
    config.stash[TIMEOUT] = seconds


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Reads the kernel log around the test and bounds its time (python3-pytest-timeout is
    not in the image; a test stuck inside the kernel is the host's to catch)."""
    seconds = item.config.stash[TIMEOUT]

    def timed_out(signum, frame):
        pytest.fail(f"the test ran longer than {seconds:g} s ({TIMEOUT_ENV})")

    log = KernelLog()
    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)
    lines = log.new_lines()
    log.close()
    item.stash[KERNEL_LOG] = lines


def pytest_runtest_teardown(item):
    # here rather than after the call, so that a test whose setup failed has them too
    item.user_properties.append(
        ("observations", json.dumps(item.stash.get(OBSERVATIONS, {}), sort_keys=True)))
    item.user_properties.append(("kmsg", json.dumps(item.stash.get(KERNEL_LOG, []))))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A splat in the kernel log fails the test, whatever the test itself concluded."""
    report = (yield).get_result()
    if call.when != "call":
        return
    found = splats(item.stash.get(KERNEL_LOG, []), SPLAT_PATTERNS)
    if not found:
        return
    text = "kernel log splat during the test:\n" + "\n".join(found)
    if report.failed:
        report.sections.append(("kernel log splat", text))
        return
    report.outcome = "failed"
    report.longrepr = text
    if hasattr(report, "wasxfail"):
        del report.wasxfail
