"""The rig's packaged data files (rig/data/): settings, patterns and package lists."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any


def text(name: str) -> str:
    return resources.files("rig").joinpath("data", name).read_text()


def toml(name: str) -> dict[str, Any]:
    return tomllib.loads(text(name))


@functools.cache
def guest_limits(section: str) -> dict[str, int]:
    """One table of guest-limits.toml: the bounds on what a guest or a lab hands back."""
    return toml("guest-limits.toml")[section]
