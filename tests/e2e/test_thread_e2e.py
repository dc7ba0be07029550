"""End to end: a thread b4 cannot fetch says why."""

import pytest

from rig.kernel import thread
from rig.kernel.thread import ThreadError


def test_a_thread_that_cannot_be_fetched_says_why():
    """Goes to lore.kernel.org: with the network, lore has no such thread; without it (as
    where this was written, which reaches only package registries), lore is not reached.
    Either way one clear error."""
    with pytest.raises(ThreadError, match=r"^<no-such-thread@umem-rig.invalid>: cannot fetch "
                                          r"the thread from lore"):
        thread.fetch("<no-such-thread@umem-rig.invalid>")
