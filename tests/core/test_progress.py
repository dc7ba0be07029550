"""Plain progress (a CI log): a long stage says what it is doing at least every heartbeat."""

import io
import re
import time

from rig.core.progress import Progress


def test_a_running_stage_prints_a_heartbeat_with_its_detail():
    out = io.StringIO()
    progress = Progress(out, live=False, heartbeat=0.2)
    with progress.stage("base", "build"):
        progress.detail("base", "CC      mm/gup.o")
        time.sleep(0.9)
    progress.close()
    lines = out.getvalue().splitlines()
    beats = [ln for ln in lines if re.fullmatch(r"\d\d:\d\d:\d\d base: build \d+s: CC mm/gup.o",
                                                re.sub(" +", " ", ln))]
    assert len(beats) >= 2, lines
    assert lines[0].endswith("base: build ...") and lines[-1].endswith("base: build done in 0.9s")


def test_a_quiet_progress_prints_nothing_between_stages():
    out = io.StringIO()
    progress = Progress(out, live=False, heartbeat=0.1)
    time.sleep(0.3)
    progress.close()
    assert out.getvalue() == ""
