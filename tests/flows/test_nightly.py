"""The nightly job acts on news: two recorded nights (the same real four-variant run kept on
two dates) have none, so nothing is bisected although umem-rfc regresses against the base on
both; a verdict that changed between them is news; an empty incoming folder is nothing to do."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.paths import FIXTURES

from rig.core.model import Outcome, StageError
from rig.core.status import ExitStatus
from rig.flows import nightly
from rig.results import schema as results
from rig.results.schema import Verdict

REAL = FIXTURES / "results" / "real-4-variants.json"
FLIP = "test_coherent_after_rdma_write[anon-written-rw-mr]"   # passes on every kernel


def nights(tmp_path: Path, *dates: str) -> Path:
    root = tmp_path / "nights"
    for date in dates:
        (root / date).mkdir(parents=True)
        shutil.copy(REAL, root / date / "results.json")
    return root


def test_two_recorded_nights_with_the_same_verdicts_have_no_news(tmp_path):
    root = nights(tmp_path, "2026-11-26", "2026-11-27")
    before = nightly.previous_night(root, "2026-11-27")
    tonight = results.load(root / "2026-11-27" / "results.json")
    assert before is not None
    assert nightly.news(before, tonight) == []
    assert nightly.NightlyOutput("", news=[]).exit_status is ExitStatus.OK


def test_the_first_night_measures_news_against_the_base(tmp_path):
    tonight = results.load(REAL)
    found = {n.variant: n for n in nightly.news(None, tonight)}
    assert sorted(found) == ["umem-rfc", "write-if-able"]
    assert len(found["umem-rfc"].regressed) == 4 and len(found["write-if-able"].regressed) == 2


def test_a_verdict_that_changed_since_the_night_before_is_news():
    before = results.load(REAL)
    tonight = copy.deepcopy(before)
    # constructed here: tonight one test of write-if-able fails that passed the night before
    changed = next(t for t in tonight.variant("write-if-able").tests if t.id == FLIP)
    changed.verdict = Verdict.FAILED
    found = nightly.news(before, tonight)
    assert found == [nightly.News("write-if-able", (FLIP,))]
    assert nightly.NightlyOutput("", news=found).exit_status is ExitStatus.REGRESSION


def test_a_variant_that_lost_its_verdict_is_news_once():
    before = results.load(REAL)
    tonight = copy.deepcopy(before)
    broken = tonight.variant("upstream")
    broken.outcome, broken.tests = Outcome.BUILD_FAILED, []
    broken.errors = [StageError("build", "build failed (full log: x)", "mm/gup.c:1: error: x")]
    found = nightly.news(before, tonight)
    assert [(n.variant, n.lost_verdict.startswith("upstream: build-failed")) for n in found] \
        == [("upstream", True)]
    assert nightly.NightlyOutput("", news=found).exit_status is ExitStatus.NO_VERDICT
    assert nightly.news(tonight, tonight) == []          # the next night: no longer news


def test_nothing_incoming_is_nothing_to_do(tmp_path):
    root = nights(tmp_path, "2026-11-26")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.mbox").write_text("\n")
    env = dict(os.environ, RIG_CACHE=str(tmp_path / "cache"))
    for incoming in ("missing", "empty", "empty.mbox"):
        done = subprocess.run([sys.executable, "-m", "rig.cli", "nightly", str(root),
                               "--incoming", str(tmp_path / incoming)], capture_output=True,
                              text=True, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("nothing to do tonight: "), done.stdout
    assert sorted(p.name for p in root.iterdir()) == ["2026-11-26"]
    assert not (tmp_path / "cache").exists()
