"""The sandbox a series is built in, as the tests that need one find it on this host."""

import pytest

from rig.kernel import sandbox

SETTINGS = sandbox.Settings.load()
WHY = sandbox.unavailable(SETTINGS)          # None where bwrap runs
needs_sandbox = pytest.mark.skipif(WHY is not None, reason=f"no sandbox here: {WHY}")
