"""The matrix run (rig/flows/matrix.py): a stage every variant needs that fails ends the run
before any build; a confirmation runs exactly the tests a candidate changed; builds of other
sources go on while one source's variants wait for its tree."""

from __future__ import annotations

import dataclasses
import gzip
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.paths import FIXTURES

from rig import cli
from rig.core import hostdeps
from rig.core.cache import Cache
from rig.core.model import BuildResult, ImageResult, Outcome
from rig.core.progress import Progress
from rig.flows import config, matrix
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


class _StandInBuilds:
    """Synthetic builds, to watch the schedule: each says when it starts and ends; the
    base's holds until the other source's has started."""

    def __init__(self):
        self.said: list[str] = []
        self.other_started = threading.Event()

    def build(self, variant):
        self.said.append(f"{variant.name} build")
        if variant.source.name == "debian-6-12":
            self.other_started.set()
        else:
            assert self.other_started.wait(30), "the other source waited for this one"
        self.said.append(f"{variant.name} built")
        return BuildResult(variant.name, Outcome.OK, "key", Path("/nonexistent"))


def test_other_sources_build_while_one_builds_and_a_waiting_variant_holds_no_test_slot(
        tmp_path):
    """One test at a time (parallel 1): the 6.12 variant builds beside the 6.1 base, and
    umem-rfc, whose tree the base holds, builds after it; results in the configured order."""
    cfg = dataclasses.replace(config.load(variants=["umem-rfc", "upstream"], out=tmp_path),
                              parallel=1)
    runner = matrix.Runner(cfg, Cache(tmp_path / "cache"), Progress(live=False))
    runner.builder = builds = _StandInBuilds()
    runner.image = ImageResult(Path("/nonexistent"), "image", "", Path("/nonexistent"))
    runner._test = lambda vr, variant, built, select, console: builds.said.append(
        f"{variant.name} tested")
    with ThreadPoolExecutor(max_workers=cfg.parallel) as pool:
        got = runner.every_variant(pool)
    assert [v.name for v in got] == ["base", "umem-rfc", "upstream"]
    said = builds.said
    assert said.index("upstream build") < said.index("base built")
    assert said.index("base built") < said.index("umem-rfc build")
    assert all(said.index(f"{v} built") < said.index(f"{v} tested") for v in
               ("base", "umem-rfc", "upstream"))
