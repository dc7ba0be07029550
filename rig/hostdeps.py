"""Host packages: check with dpkg-query, install the missing ones with apt-get when allowed."""

from __future__ import annotations

import os
import shutil

from . import datafiles, proc
from .status import RigError


class MissingPackages(RigError):
    def __init__(self, packages: list[str], why: str):
        self.packages = packages
        # The line to paste: through sudo unless the rig already runs as root.
        sudo = "sudo " if os.geteuid() != 0 else ""
        cmd = f"{sudo}apt-get install -y --no-install-recommends " + " ".join(packages)
        super().__init__(f"missing host packages ({why}); install them with:\n  {cmd}")


def required(stages: list[str]) -> list[str]:
    data = datafiles.toml("host-packages.toml")
    unknown = [s for s in stages if s not in data]
    if unknown:
        raise ValueError(f"unknown stage(s) in host-packages.toml: {', '.join(unknown)}")
    return sorted({p for s in stages for p in data[s]["packages"]})


def missing(packages: list[str]) -> list[str]:
    out = proc.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
                   "dpkg-query", check=False).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure(stages: list[str], may_install: bool = True, log=print) -> None:
    """Make sure every package the STAGES need is installed, or raise MissingPackages."""
    if shutil.which("dpkg-query") is None:
        raise MissingPackages(required(stages), "this host has no dpkg; the rig needs Debian")
    todo = missing(required(stages))
    if not todo:
        return
    if not may_install or os.geteuid() != 0:
        raise MissingPackages(todo, "not root" if may_install else "installing is disabled")
    log(f"installing host packages: {' '.join(todo)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc.run(["apt-get", "update", "-q"], "apt-get update", env=env)
        proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo],
                 "apt-get install", env=env)
    except proc.CommandFailed as e:
        raise MissingPackages(todo, f"apt-get failed:\n{e.excerpt}") from None
