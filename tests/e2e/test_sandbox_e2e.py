"""End to end: `rig vet` of a patch whose Makefile writes canaries on the host while it builds.

The patch (tests/fixtures/vet/build-canary.synthetic.patch, after issue 15) is one line in
drivers/infiniband/core/Makefile: a $(shell ...) that writes canaries in /tmp, in $(HOME), in
the source tree, in the rig's cache and in its kernel/ entries, beside the cache and in the
home above it.  In the sandbox each write goes to the sandbox's own /tmp or is refused; the
kernel still builds and boots, and the summary flags the Makefile, names the sandbox and
lists the refused writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.paths import FIXTURES

from rig.core.cache import Cache
from rig.flows import vet
from rig.results import schema as results

PATCH = FIXTURES / "vet" / "build-canary.synthetic.patch"
NAME = "rig-build-canary"


def canaries(cache: Path) -> list[Path]:
    """Every place the patch aims at, outside the build directory."""
    return [Path("/tmp") / NAME, Path.home() / NAME, cache / NAME, cache / "kernel" / NAME,
            cache.parent / NAME, cache.parent.parent / NAME,
            *cache.glob(f"work/*/linux/{NAME}")]


def test_vet_a_patch_whose_makefile_writes_on_the_host(tmp_path):
    cache = Cache().root
    left = [p for p in canaries(cache) if p.exists()]
    assert not left, f"canaries from an earlier, unconfined build: remove {left} first"
    out = tmp_path / "vet"
    proc = subprocess.run([sys.executable, "-m", "rig.cli", "vet", str(PATCH), "--out", str(out)],
                          capture_output=True, text=True, timeout=3600, check=False)
    assert (out / vet.SUMMARY).exists(), proc.stderr[-3000:]
    text = (out / vet.SUMMARY).read_text()

    assert [p for p in canaries(cache) if p.exists()] == [], text

    # the verdict says why: the Makefile is build machinery, built in the sandbox, which
    # refused its writes
    assert ("BUILD MACHINERY: the series changes files that run on the host while the kernel "
            "is built:\n  drivers/infiniband/core/Makefile\n"
            "  Applied and built in the sandbox: bubblewrap ") in text
    assert "The sandbox refused writes while the series was built (build log):\n" in text
    cand = results.load(out / "results.json").variant("build-canary.synthetic")
    refused = cand.environment.sandbox_refused
    # $(srctree) itself (bound read-only), and the cache, beside it and the home above it, as
    # the make saw them; where one of those is under /tmp (RIG_CACHE=/tmp/...) the write went to
    # the sandbox's own tmpfs there, which the host never sees (the canaries above)
    tree = next(iter(cache.glob("work/debian-linux-source-6.1-*/linux")))
    for up in ("", "../../../", "../../../../", "../../../../../"):
        if up and Path(os.path.normpath(tree / up / NAME)).is_relative_to("/tmp"):
            continue
        assert any(line.endswith(f"/linux/{up}{NAME}: Read-only file system")
                   for line in refused), (up, refused)
    assert cand.environment.build_machinery == ["drivers/infiniband/core/Makefile"]
    # the writes were refused, not the build: the kernel built, booted and ran the suite
    assert cand.outcome.value in ("ok", "tests-ran"), (cand.outcome, cand.errors)
    assert proc.returncode in (0, 1), text
    report = (out / "report.txt").read_text()
    assert "! build-canary.synthetic: its patches change build machinery" in report
