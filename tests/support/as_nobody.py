"""Run a function as the user nobody, from a test running as root: a forked child drops to
nobody's uid and gid (effective only) and hands back what the function returned, as text."""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def as_nobody(fn: Callable[[], object]) -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # pragma: no cover - the child
        try:
            os.close(read)
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            os.write(write, str(fn()).encode())
        except BaseException as e:                    # noqa: BLE001 - said to the parent
            os.write(write, f"raised {e!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        said = fh.read()
    os.waitpid(pid, 0)
    return said
