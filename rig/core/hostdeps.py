"""What the host must give the rig: packages (checked with dpkg-query, the missing ones
installed with apt-get when allowed) and, for a normal user, user namespaces."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from pathlib import Path

from rig.core import datafiles, proc
from rig.core.status import RigError


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


class HostForbids(RigError):
    """The host forbids what a normal user's rig needs; the message has the fix."""


def _subid_ranges(path: Path) -> dict[str, list[tuple[int, int]]]:
    """NAME -> [(first, count)] of an /etc/subuid-style file (missing or unreadable: none)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    try:
        text = path.read_text()
    except OSError:
        return ranges
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            ranges.setdefault(fields[0], []).append((int(fields[1]), int(fields[2])))
    return ranges


def namespace_problems(user: str, subids: bool, root: Path = Path("/")) -> list[str]:
    """Why USER cannot have the user namespaces the rig needs on the host at ROOT (with
    SUBIDS: a subordinate uid and gid range too, for mmdebstrap), each with its fix."""
    data = datafiles.toml("userns.toml")
    problems = []
    for switch in data["sysctl"]:
        path = root / "proc/sys" / switch["name"].replace(".", "/")
        with contextlib.suppress(OSError):
            if path.read_text().strip() == switch["forbids"]:
                fix = data["fix"]["sysctl"].format(**switch)
                problems.append(f"{switch['name']} is {switch['forbids']}; allow them with: "
                                f"{fix}")
    if subids:
        files = {name: _subid_ranges(root / "etc" / name) for name in ("subuid", "subgid")}
        need = data["subids"]["count"]
        lacking = [name for name, ranges in files.items()
                   if not any(count >= need for _, count in ranges.get(user, []))]
        if lacking:
            # mmdebstrap takes the user's first line: a new range goes after everyone's.
            taken = [first + count for ranges in files.values() for rs in ranges.values()
                     for first, count in rs]
            first = max([data["subids"]["first"], *taken])
            fix = data["fix"]["subids"].format(first=first, last=first + need - 1, user=user)
            problems.append(f"{user} has no range of {need} subordinate ids in "
                            f"{' and '.join('/etc/' + n for n in lacking)}; add one with: {fix}")
    return problems


def check_namespaces(what: str, subids: bool) -> None:
    """As a normal user, refuse at once where the host forbids the user namespaces WHAT
    needs; root needs none."""
    if os.geteuid() == 0:
        return
    user = pwd.getpwuid(os.getuid()).pw_name
    problems = namespace_problems(user, subids)
    if problems:
        raise HostForbids(f"{what} needs unprivileged user namespaces, which this host does "
                          f"not give {user}: " + "; ".join(problems))
