"""End to end: `rig vet` of the RFC's mbox on the real base kernel."""

from support.paths import FIXTURES
from support.rfc import EXPECT_FIXED, EXPECT_REGRESSED

from rig import cli
from rig.flows import vet
from rig.results import compare
from rig.results import schema as results

VET = FIXTURES / "vet"


def test_vet_the_rfc_end_to_end(tmp_path):
    """Builds and boots Debian's 6.1 with and without the two-patch RFC."""
    out = tmp_path / "vet"
    status = cli.main(["vet", str(VET / "umem-rfc.mbox"), "--out", str(out)])
    text = (out / vet.SUMMARY).read_text()
    assert status == 1, text
    assert "[PATCH RFC 2/2] IB/umem: Don't force write access for read-only MRs" in text
    # the same change as the umem-rfc variant: the same cells fixed and regressed
    [cand] = compare.compare(results.load(out / "results.json")).variants
    assert {c.id for c in cand.cells if c.change is compare.Change.FIXED} == EXPECT_FIXED
    assert {c.id for c in cand.cells if c.change is compare.Change.REGRESSED} == \
        EXPECT_REGRESSED
    assert f"{len(EXPECT_FIXED)} fixed, {len(EXPECT_REGRESSED)} regressed" in text
    assert "  registration [drv-shared-ro ro-mr]: failed -> passed\n" in text
    assert "  coherent_after_cpu_write [zero-page ro-mr]: passed -> failed\n" in text
