"""pytest plugin the rig loads with rdma-core's tests: the options their run_tests.py reads.

rdma-core's tests read their device, port and GID from args_parser.parser, which
run_tests.py fills from its own command line before unittest runs them.  Under pytest the rig
fills it from $RIG_RDMA_ARGS (run_tests.py's options, e.g. "--dev rxe0") before collection.
"""

import gc
import os
import shlex
import sys

import pytest


def pytest_configure(config):
    from args_parser import parser

    argv = sys.argv
    sys.argv = ["run_tests.py", *shlex.split(os.environ.get("RIG_RDMA_ARGS", ""))]
    try:
        parser.parse_args()
    finally:
        sys.argv = argv


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Collect the test's garbage before its end marker: pyverbs 44 crashes freeing some
    objects whose creation failed (a QP type rxe lacks), and the crash then belongs to the
    test that made them, not to whichever test the collector happens to run in."""
    gc.collect()
