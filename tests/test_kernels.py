"""Which kernels the defaults build and run: the variants and the opt-in release candidate."""

from rig import config


def test_an_opt_in_variant_is_defined_but_runs_only_where_named():
    assert "debian-7.3-rc" not in [v.name for v in config.load().variants]
    named = config.load(variants=["debian-7.3-rc"])
    assert [v.name for v in named.variants] == ["base", "debian-7.3-rc"]
    assert named.variant("debian-7.3-rc").source.suite == "experimental"
