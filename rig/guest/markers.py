"""The rig's markers in the kernel log, and which of them to believe.

The suites mark each test's (or program run's) start and end by writing "umem-rig" lines
to /dev/kmsg, which the serial console carries out (rig/runtime/suites/).  The kernel under test
prints into the same log, so it could write such a line itself and pin its own splats on an
innocent test.  Each marker therefore carries a token the harness makes for that boot and
hands to the guest only in the commands it runs there once the guest is up (over SSH; in a
lab job, in the suite's disk):
not on the kernel command line, not in the image, so no kernel can know it in advance.
trusted() keeps only the markers with the boot's token.
"""

from __future__ import annotations

import re
import secrets

ENV = "RIG_MARKER_TOKEN"        # how guest_plugin/rig_markers.py gets it: the suite's command
_MARKER = re.compile(r"umem-rig(?: (?P<token>[^\s:]*))?: (?=(?:test|run) (?:start|end) )")


def new_token() -> str:
    return secrets.token_hex(16)


def prefix(token: str) -> str:
    """What a marker the guest writes for this boot starts with."""
    return f"umem-rig {token}: "


def trusted(console: str, token: str) -> str:
    """CONSOLE with the markers that carry TOKEN in the form the suites read ("umem-rig: test
    start X"), and every other line that looks like a marker (a forged one) left out."""
    lines = console.splitlines(keepends=True)
    out = []
    for line in lines:
        found = list(_MARKER.finditer(line))
        if not found:
            out.append(line)
        elif token and len(found) == 1 and found[0]["token"] == token:
            m = found[0]
            out.append(line[:m.start()] + "umem-rig: " + line[m.end():])
    return "".join(out)
