"""The rig's packaged data files (rig/data/): settings, patterns and package lists."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any


def text(name: str) -> str:
    return resources.files("rig").joinpath("data", name).read_text()


def toml(name: str) -> dict[str, Any]:
    return tomllib.loads(text(name))
