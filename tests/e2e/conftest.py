"""Every test in this folder is end to end: it builds, boots and tests real kernels (or runs
another real thing: a fresh Debian root, a LAVA lab), so it carries the e2e mark, which
`tox -e unit` leaves out.  The mark is set here, before pytest's -m deselects by it."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
