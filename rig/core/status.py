"""How the rig ends: one exit status for every command, and the error that means bad input.

Every command returns an ExitStatus.  Anything a user can get wrong (a file that is not there,
a variant that does not exist, a patch that is not a patch...) raises a RigError subclass,
which the command line turns into one line on stderr and NO_VERDICT, never a traceback.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0                   # every variant ran its tests and no candidate regressed
    REGRESSION = 1           # some candidate regressed against the base
    NO_VERDICT = 2           # some variant has no verdict or lost tests, or the input was bad
    INTERRUPTED = 130        # Ctrl-C (128 + SIGINT)

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitStatus.OK: "no regression, every variant ran",
    ExitStatus.REGRESSION: "a candidate regressed",
    ExitStatus.NO_VERDICT: "a variant has no verdict or lost tests, or the input was refused",
    ExitStatus.INTERRUPTED: "interrupted",
}


class RigError(Exception):
    """Bad input, or a condition the user must fix: the message names what and why.
    cli.main maps it to exit status 2 (NO_VERDICT)."""


class InfraError(Exception):
    """The machinery the rig drives failed (a command, the sandbox, QEMU, the guest's boot or
    SSH, a lab, a suite's preparation): not the input's fault and not the kernel's verdict.
    The stage that meets one records it on the variant (outcome infra-error, or the outcome a
    BootError carries), and the run goes on with the others."""
