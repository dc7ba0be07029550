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
    rfc = root / "patches" / "umem-rfc"
    cfg = config.load(extra_patches=[rfc, rfc], variants=[])
    # beside the umem-rfc variant, as a nightly's incoming series: each name once
    names = [v.name for v in cfg.variants]
    assert names[-2:] == ["umem-rfc-candidate", "umem-rfc-candidate-candidate"]
    assert len(set(names)) == len(names)
    cand = cfg.variants[-2]
    assert cand.series == str(rfc) and cand.source == cfg.variant("base").source
    assert cand.patches == cfg.variant("umem-rfc").patches


def test_a_variant_adds_its_own_fragments_to_the_runs():
    """The 7.x variants build memfd_secret in (kconfigs/secretmem.config); the others do not,
    so their kernels' cache keys stay what they were."""
    cfg = config.load(variants=["debian-7.2"])
    frags = {v.name: [f.name for f in v.fragments] for v in cfg.variants}
    assert frags["base"] == ["qemu-guest.config", "rdma.config", "mm.config"]
    assert frags["debian-7.2"] == [*frags["base"], "secretmem.config"]


def test_a_fragment_outside_kconfigs_or_missing_is_refused_naming_the_file(tmp_path):
    f = tmp_path / "c.toml"
    for name, why in (("../README.md", "cannot be a name"), ("nope.config", "is not a file")):
        f.write_text(f'[[variants]]\nname = "b"\nsource = "debian-6-1"\nbase = true\n'
                     f'fragments = ["{name}"]\n')
        with pytest.raises(config.ConfigFileError, match=f"{f}.*variant b: fragments.*{why}"):
            config.load(f)
