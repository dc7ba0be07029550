"""Shared fixtures: the base kernel the end-to-end tests boot, built by the rig itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rig import config
from rig.build import Builder
from rig.cache import Cache
from rig.progress import Progress


@pytest.fixture(scope="session")
def base_kernel() -> Path:
    """RIG_KERNEL if set, else the default base variant's bzImage (a cache hit when built)."""
    if os.environ.get("RIG_KERNEL"):
        return Path(os.environ["RIG_KERNEL"])
    cfg = config.load()
    built = Builder(cfg.build_settings, Cache(), Progress(live=False)).build(
        cfg.variant(cfg.base))
    assert built.error is None, built.error
    return built.bzimage
