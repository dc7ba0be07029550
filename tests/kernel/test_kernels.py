"""Which kernels the defaults build and run: the variants and the opt-in release candidate."""

from rig.flows import config


def test_the_defaults_run_debian_7_2_beside_6_1_and_6_12():
    assert [(v.name, v.source.name) for v in config.load().variants] == [
        ("base", "debian-6-1"), ("umem-rfc", "debian-6-1"), ("write-if-able", "debian-6-1"),
        ("upstream", "debian-6-12"), ("debian-7.2", "debian-7-2")]


def test_an_opt_in_variant_is_defined_but_runs_only_where_named():
    assert "debian-7.3-rc" not in [v.name for v in config.load().variants]
    named = config.load(variants=["debian-7.3-rc"])
    assert [v.name for v in named.variants] == ["base", "debian-7.3-rc"]
    assert named.variant("debian-7.3-rc").source.suite == "experimental"
