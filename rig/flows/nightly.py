"""One night of the nightly job: run the matrix with the newest series, keep the night's
results, bisect only what is new since the previous night, and render the history.

News is read from the kept results: a test that passed the night before on a variant and
fails tonight, or a variant that had a verdict and has none tonight.  A candidate that has
regressed against the base for weeks (umem-rfc, by design) is no news, so it is not bisected
again every night.  The first night has no night before it: its news is measured against
the base.  A missing or empty incoming series is nothing to do, not a failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rig.core.cache import Cache
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.flows.bisect.executor import BisectRequest, execute, plan
from rig.flows.bisect.search import Bisection
from rig.flows.config import RunConfig
from rig.flows.matrix import Runner
from rig.results import history
from rig.results.compare import FAILING, PASSING, Change, compare
from rig.results.schema import Results, VariantResult


@dataclass(frozen=True)
class NightlyRequest:
    nights: Path                     # one folder per night: NIGHTS/<date>/results.json
    incoming: Path                   # the newest series: an mbox, a .patch or a series folder
    date: str                        # tonight's folder name, YYYY-MM-DD
    bisect: bool = True
    last: int = 60                   # nights on the history page


@dataclass(frozen=True)
class News:
    """What changed on one variant since the night before."""

    variant: str
    regressed: tuple[str, ...] = ()  # passed the night before (or on the base), fail tonight
    lost_verdict: str = ""           # had a verdict the night before, has none tonight: why


@dataclass
class NightlyOutput:
    message: str
    night: Path | None = None
    news: list[News] = field(default_factory=list)
    bisected: dict[str, Path] = field(default_factory=dict)   # variant -> bisection folder

    @property
    def exit_status(self) -> ExitStatus:
        """REGRESSION for a new regression, NO_VERDICT for a newly lost verdict, else OK."""
        if any(n.regressed for n in self.news):
            return ExitStatus.REGRESSION
        if any(n.lost_verdict for n in self.news):
            return ExitStatus.NO_VERDICT
        return ExitStatus.OK


def nothing_incoming(path: Path) -> str:
    """Why PATH holds no series to test tonight, or "" when it holds something."""
    if not path.exists():
        return f"{path} does not exist"
    if path.is_dir() and not any(p.is_file() and not p.name.startswith(".")
                                 for p in path.iterdir()):
        return f"{path} is an empty folder"
    if path.is_file() and not path.read_bytes().strip():
        return f"{path} is empty"
    return ""


def previous_night(nights: Path, date: str) -> Results | None:
    """The newest readable night before DATE."""
    if not nights.is_dir():
        return None
    earlier = [n for n in history.load_nights(nights)[0] if n.label[:10] < date]
    return earlier[-1].results if earlier else None


def news(previous: Results | None, tonight: Results) -> list[News]:
    """Every candidate's news since PREVIOUS (against tonight's base when there is none)."""
    found = []
    comparison = compare(tonight)
    for vc in comparison.variants:
        v = vc.variant
        before = _variant(previous, v.name)
        if not v.has_verdict:
            if before is None or before.has_verdict:
                found.append(News(v.name, lost_verdict=vc.headline()))
            continue
        if before is None or not before.has_verdict:
            regressed = tuple(c.id for c in vc.cells if c.change is Change.REGRESSED)
        else:
            was = {t.id: t.verdict for t in before.tests}
            regressed = tuple(t.id for t in v.tests
                              if t.verdict in FAILING and was.get(t.id) in PASSING)
        if regressed:
            found.append(News(v.name, regressed))
    return found


def _variant(results: Results | None, name: str) -> VariantResult | None:
    if results is None:
        return None
    return next((v for v in results.variants if v.name == name), None)


def run_night(req: NightlyRequest, cfg: RunConfig, cache: Cache,
              progress: Progress) -> NightlyOutput:
    """Tonight's run, its news and the bisections of it; CFG already has the incoming series
    as a candidate (config.load(extra_patches=[req.incoming]))."""
    night = req.nights / req.date
    previous = previous_night(req.nights, req.date)
    runner = Runner(dataclasses.replace(cfg, out=night), cache, progress)
    tonight = runner.run().results
    found = news(previous, tonight)
    out = NightlyOutput(_describe(found, previous is None), night, found)
    for item in found if req.bisect else ():
        variant = next(v for v in cfg.variants if v.name == item.variant)
        if not item.regressed or not variant.patches:
            continue
        incoming = variant.series == str(req.incoming)
        bisect_req = BisectRequest(target=str(req.incoming) if incoming else None,
                                   variant=None if incoming else variant.name,
                                   tests=item.regressed)
        folder = night / f"bisect-{variant.name}"
        bisect_cfg = dataclasses.replace(cfg, out=folder)
        the_plan = plan(bisect_req, bisect_cfg)
        execute(runner, the_plan, Bisection(len(the_plan.series), bisect_req.tests), folder,
                f"rig nightly {req.nights} --incoming {req.incoming}")
        out.bisected[variant.name] = folder
    history.write(req.nights, last=req.last)
    return out


def _describe(found: list[News], first: bool) -> str:
    since = "against the base (the first night)" if first else "since the night before"
    if not found:
        return f"no news {since}"
    parts = [f"{n.variant}: {len(n.regressed)} newly failing" if n.regressed else
             f"{n.variant}: no verdict ({n.lost_verdict})" for n in found]
    return f"news {since}: " + "; ".join(parts)
