"""End to end: `rig bisect` of real series (fixtures/bisect) on the real base kernel."""

import json

from support.paths import FIXTURES

from rig import cli

FIXTURES = FIXTURES / "bisect"


def test_bisect_series_6_end_to_end(tmp_path):
    """Builds and boots Debian's 6.1 five or six times: base, full series, then the steps."""
    out = tmp_path / "bisect"
    status = cli.main(["bisect", str(FIXTURES / "series-6"), "--out", str(out)])
    doc = json.loads((out / "bisect.json").read_text())
    assert status == 0, (out / "summary.txt").read_text()
    assert doc["result"]["found"] == "exact" and doc["result"]["first"] == 5
    steps = [(s["k"], s["state"]) for s in doc["steps"]]
    assert steps[:3] == [(0, "before"), (6, "after"), (3, "skip")]
    assert doc["steps"][2]["outcome"] == "build-failed"
    assert doc["runs_beyond_ends"] <= 4
    text = (out / "summary.txt").read_text()
    assert "First patch that changes the verdicts: 5/6\n" \
           "  [PATCH 5/6] IB/umem: Don't force write access for read-only MRs\n" in text
    # the evidence: the tests that flip at patch 5, with what changed
    assert "  * test_coherent_after_cpu_write[zero-page-ro-mr]: passed -> failed\n" in text
    assert "  * test_registration[drv-shared-ro-ro-mr]: failed -> passed\n" in text


def test_bisect_a_series_whose_fifth_patch_breaks_the_build_and_fourth_changes_behaviour(
        tmp_path):
    """series-6-breaks-at-5: the whole series does not build.  The rig names patch 5 as the
    one that breaks the build, with gcc's error, then bisects behaviour over 1..4: patch 4."""
    out = tmp_path / "bisect"
    status = cli.main(["bisect", str(FIXTURES / "series-6-breaks-at-5"), "--out", str(out),
                       "--select", "coherent_after_cpu_write and (zero-page or anon-untouched)"])
    doc = json.loads((out / "bisect.json").read_text())
    text = (out / "summary.txt").read_text()
    assert status == 0, text
    assert doc["build_break"]["first"] == 5
    assert "umem_pin_flags" in doc["build_break"]["error"] and "error:" in \
        doc["build_break"]["error"]
    assert doc["result"]["found"] == "exact" and doc["result"]["first"] == 4, text
    assert text.startswith("umem-rig bisect: series-6-breaks-at-5, 6 patches\n\n"
                           "The series does not build from patch 5/6 on:\n"
                           "  [PATCH 5/6] IB/umem: Take the pin flags from umem_pin_flags()\n")
    assert "First patch that changes the verdicts: 4/6\n" \
           "  [PATCH 4/6] IB/umem: Don't force write access for read-only MRs\n" in text
    assert "* test_coherent_after_cpu_write[zero-page-ro-mr]: passed -> failed" in text
