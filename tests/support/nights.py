"""Nights of the nightly job, made of the committed results document."""

import copy

from rig.core.model import Outcome
from rig.results import schema as results
from support.paths import FIXTURES

V1 = results.load(FIXTURES / "results" / "results-v1.synthetic.json")


def night(date: str, rfc_like_base=False, wia_built=False) -> results.Results:
    """V1 as run on DATE; umem-rfc reverted to the base's verdicts, or write-if-able built."""
    res = copy.deepcopy(V1)
    for r in res.runs:
        r.started = f"{date}T02:00:00+00:00"
    if rfc_like_base:
        res.variant("umem-rfc").tests = copy.deepcopy(res.variant("base").tests)
    if wia_built:
        wia = res.variant("write-if-able")
        wia.outcome, wia.errors = Outcome.OK, []
        wia.tests = copy.deepcopy(res.variant("umem-rfc").tests)
    return res
