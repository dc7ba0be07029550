"""The matrix run: a stage every variant needs that fails ends the run before any build."""

from __future__ import annotations

import pytest

from rig import cli
from rig.core import hostdeps

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
