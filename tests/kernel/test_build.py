"""Build stage: cache keys change exactly when an input changes; build errors are excerpted."""

import dataclasses
import shutil

import pytest
from support.paths import FIXTURES

from rig.core import proc
from rig.core.cache import Cache
from rig.core.model import BuildSettings, Outcome, SourceSpec, Variant
from rig.core.progress import Progress
from rig.flows.config import load, project_root
from rig.kernel import patches
from rig.kernel.build import Builder
from rig.kernel.kconfig import MergedConfig

ROOT = project_root()
FIXTURES = FIXTURES / "build"


@pytest.fixture
def builder(tmp_path):
    driver = tmp_path / "driver"
    shutil.copytree(ROOT / "guest_tests" / "driver", driver)
    return Builder(BuildSettings(driver), Cache(tmp_path / "cache"), Progress(live=False))


def _config(text="CONFIG_A=y\n"):
    return MergedConfig(text, "k", "tinyconfig", ())


def test_key_changes_exactly_when_an_input_changes(builder):
    cfg = load()
    base, rfc = cfg.variant("base"), cfg.variant("umem-rfc")
    key = builder.key(base, "6.1.192-2", _config())
    # unchanged inputs, even through a renamed variant: the same key
    assert builder.key(dataclasses.replace(base, name="other"), "6.1.192-2", _config()) == key
    changed = {
        "source version": builder.key(base, "6.1.192-3", _config()),
        "config": builder.key(base, "6.1.192-2", _config("CONFIG_A=m\n")),
        "patches": builder.key(rfc, "6.1.192-2", _config()),
        "first k patches": builder.key(cfg.variant("write-if-able").first(1), "6.1.192-2",
                                       _config()),
    }
    driver_c = builder.settings.driver / "umem_test.c"
    driver_c.write_text(driver_c.read_text() + "\n/* changed */\n")
    changed["driver source"] = builder.key(base, "6.1.192-2", _config())
    builder._toolchain = dataclasses.replace(builder._toolchain, gcc="gcc (Debian 13.2.0-1) 13.2.0")
    changed["toolchain"] = builder.key(base, "6.1.192-2", _config("CONFIG_A=y\n"))
    assert len(set(changed.values()) | {key}) == len(changed) + 1, changed


def test_a_source_that_cannot_be_had_is_no_build_failure(builder, tmp_path):
    """Nothing was built, so it says nothing of the kernel (nor of a series on it): an error
    of the rig's infrastructure, named, not a build that failed."""
    gone = SourceSpec("gone", "tarball", path=tmp_path / "linux-7.9.tar.xz")
    done = builder.build(Variant("v", gone, ()))
    assert done.outcome is Outcome.INFRA_ERROR
    assert (done.error.stage, done.error.message) == (
        "source", f"source gone: tarball {tmp_path / 'linux-7.9.tar.xz'} does not exist")


def test_patch_identity_is_its_diff_not_its_mail_headers():
    mbox = patches.load(ROOT / "tests" / "fixtures" / "patches" / "series.mbox")
    folder = patches.load(ROOT / "tests" / "fixtures" / "patches" / "series-ok")
    assert [p.sha256 for p in mbox] == [p.sha256 for p in folder]


def test_first_compiler_error_is_shown_from_a_real_build_log():
    log = (FIXTURES / "needs-missing-flag.build.log").read_text()
    excerpt = proc.excerpt(log)
    first = excerpt.splitlines()
    assert any("umem.c" in line and "error:" in line and "FOLL_WRITE_IF_ABLE" in line
               for line in first[:3]), excerpt
    assert len(first) <= 12
    assert "CC " not in excerpt
