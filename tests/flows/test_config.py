"""The run configuration: the embedded defaults, a user's file over them, flags over both."""

import pytest

from rig.flows import config


def test_defaults_name_the_variants_with_base_first():
    cfg = config.load()
    assert [v.name for v in cfg.variants] == ["base", "umem-rfc", "write-if-able", "upstream",
                                            "debian-7.2"]
    assert cfg.base == "base"
    assert cfg.variant("umem-rfc").patches, "the umem-rfc patch set should load"
    assert cfg.variant("upstream").source.package == "linux-source-6.12"
    assert not cfg.unloadable


def test_variant_flag_keeps_the_base(tmp_path):
    cfg = config.load(variants=["umem-rfc"], out=tmp_path)
    assert [v.name for v in cfg.variants] == ["base", "umem-rfc"]


def test_user_file_overrides_and_errors_name_the_file(tmp_path):
    f = tmp_path / "rig.toml"
    f.write_text('[run]\naccel = "tcg"\nparallel = 2\n')
    cfg = config.load(f)
    assert (cfg.accel, cfg.parallel) == ("tcg", 2)
    f.write_text("[run\n")
    with pytest.raises(config.ConfigFileError, match=str(f)):
        config.load(f)
    with pytest.raises(config.ConfigFileError, match="does not exist"):
        config.load(tmp_path / "missing.toml")


def test_unknown_variant_is_named():
    with pytest.raises(config.ConfigFileError, match="no variant named 'nope'"):
        config.load(variants=["nope"])


def test_extra_patch_becomes_a_candidate_on_the_base():
    root = config.project_root()
    cfg = config.load(extra_patches=[root / "patches" / "umem-rfc"], variants=[])
    cand = cfg.variants[-1]
    assert cand.name == "umem-rfc" or cand.series.endswith("umem-rfc")
    assert cand.source == cfg.variant("base").source
