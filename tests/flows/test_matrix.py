"""The matrix run (rig/flows/matrix.py): a stage every variant needs that fails ends the run
before any build; a confirmation runs exactly the tests a candidate changed."""

from __future__ import annotations

import gzip

import pytest
from support.paths import FIXTURES

from rig import cli
from rig.core import hostdeps
from rig.flows import matrix
from rig.results import schema as results

STAGES = ["source", "build", "image", "boot"]


@pytest.mark.skipif(bool(hostdeps.missing(hostdeps.required(STAGES))),
                    reason="the host packages are not all installed (a run would stop there)")
def test_an_image_that_cannot_be_built_stops_the_run_before_any_kernel(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "image").write_text("not a folder: the image cannot be stored\n")
    status = cli.main(["run", "--variant", "base", "--variant", "umem-rfc",
                       "--out", str(tmp_path / "out"), "--cache", str(cache)])
    said = capsys.readouterr().err.splitlines()[-1]     # after the progress lines
    assert status == 2
    assert said == ("rig: image failed, which every variant needs (stopped before building any "
                    f"kernel): {cache / 'image'}: File exists")
    assert not any((cache / kind).exists() for kind in ("source", "kernel", "work", "apt"))


def test_a_confirmation_runs_exactly_the_changed_tests_of_each_suite():
    """On a real run's umem-rfc (fixtures/results/real-4-variants-3-suites.json.gz): a umem
    cell by its id, a kselftest-mm test by its program run, an rdma-core test by its id."""
    path = FIXTURES / "results" / "real-4-variants-3-suites.json.gz"
    res = results.Results.from_json(gzip.decompress(path.read_bytes()).decode(), str(path))
    rfc = res.variant("umem-rfc")
    umem = next(t for t in rfc.tests if t.suite == "umem" and t.access)
    kself = next(t for t in rfc.tests if t.suite == "kselftest-mm")
    rdma = next(t for t in rfc.tests if t.suite == "rdma-core")
    chosen = matrix._select(rfc, {umem.key, kself.key, rdma.key})
    assert chosen == {"umem": (umem.id,), "kselftest-mm": (kself.region,),
                      "rdma-core": (rdma.id,)}
    assert matrix._select(rfc, set()) == {}
