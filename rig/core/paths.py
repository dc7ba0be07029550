"""Removing what the rig made, and nothing else: every removal names the folder it must stay in."""

from __future__ import annotations

import shutil
from pathlib import Path

from rig.core.status import RigError


class OutsideError(RigError):
    """A path that a name or a link would take outside the folder it belongs in."""


def remove_tree(path: Path, root: Path) -> None:
    """Remove the folder PATH, if there, once it is checked to lie strictly inside ROOT (its
    parent's links and ".." resolved); a link at PATH is removed itself, never its target."""
    parent, top = path.parent.resolve(), root.resolve()
    if path.name in ("", ".", "..") or not parent.is_relative_to(top):
        raise OutsideError(f"{path} is not inside {root}: refused to remove it")
    target = parent / path.name
    if target.is_symlink():
        target.unlink()
    else:
        shutil.rmtree(target, ignore_errors=True)
