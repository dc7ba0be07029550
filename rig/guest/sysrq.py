"""Asking a stuck guest's kernel where it is stuck, before the guest is killed.

SysRq-w prints the stacks of the tasks in uninterruptible sleep (a test looping in msleep()
inside ib_umem_get(), a pin waiting on a lock); SysRq-l the backtraces of the CPUs that are
running, for a task that spins instead (a registration looping inside GUP is never blocked,
so -w alone printed only its header).  Each goes through a new SSH command when sshd
still answers (the stuck task holds nothing sshd needs), or else as a break on the serial
console (QEMU's serial multiplexer: Ctrl-A b, then the command key), which the kernel handles
even when no process can run.  What the console printed meanwhile is the evidence.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from rig.guest.ssh import SSHError

SERIAL_BREAK = b"\x01b"              # QEMU's mux escape (Ctrl-A) then "b": send a break
SSH_TIMEOUT = 5.0
ANSWER = b"sysrq: "                  # sysrq.c's pr_fmt: the key's action, before its dump
ANSWER_WAIT = 3.0                    # a kernel that has not answered by then will not
SETTLE = 0.75                        # console quiet this long once answered: the dump is over
LIMIT = 15.0                         # longest wait for the dump
# blocked tasks (asked over SSH when it answers), then the running CPUs' backtraces, always
# over the serial line: asked from a shell, -l shows that shell's own CPU writing the trigger,
# not the task the serial interrupt finds spinning there
STUCK_KEYS = (("w", True), ("l", False))


class _Console(Protocol):
    child: object
    log_path: Path

    def quiet_for(self) -> float: ...


class _Session(Protocol):
    def run(self, cmd: str, timeout: float) -> object: ...


def stuck_tasks(console: _Console, session: _Session | None) -> str:
    """What the kernel prints for each of STUCK_KEYS, one after the other."""
    return "".join(ask(console, session if ssh else None, key) for key, ssh in STUCK_KEYS)


def ask(console: _Console, session: _Session | None, key: str) -> str:
    """Trigger SysRq KEY and return what the console printed in answer ("" if nothing)."""
    start = console.log_path.stat().st_size
    asked = False
    if session is not None:
        try:
            session.run(f"echo {key} > /proc/sysrq-trigger", timeout=SSH_TIMEOUT)
            asked = True
        except SSHError:                # sshd is gone too: the serial line it is
            asked = False
    if not asked:
        console.child.send(SERIAL_BREAK)
        time.sleep(0.2)
        console.child.send(key.encode())
    asked_at = time.monotonic()
    while ANSWER not in _since(console.log_path, start) \
            and time.monotonic() < asked_at + ANSWER_WAIT:
        time.sleep(0.05)
    # the dump follows its header within moments (printed by the handler, or by the CPUs its
    # NMIs stopped), so a short quiet ends it
    time.sleep(SETTLE)
    while console.quiet_for() < SETTLE and time.monotonic() < asked_at + LIMIT:
        time.sleep(0.05)
    return _since(console.log_path, start).decode("utf-8", "replace").replace("\r", "")


def _since(log_path: Path, start: int) -> bytes:
    with open(log_path, "rb") as log:
        log.seek(start)
        return log.read()
