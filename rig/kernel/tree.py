"""The maintainer's own kernel tree: the commit a series is vetted on, read, never written.

The base is the commit the series names in its ``base-commit:`` line (as `git format-patch
--base` and b4 write it) when the tree has it, the commit given with --base, or else the
tree's HEAD; the reason is kept for the summary.  A base-commit the tree lacks is refused
rather than replaced: the series was written for that commit.  Only commits are tested, never
the working directory, so a tree with uncommitted changes to tracked files is refused too
(the maintainer would think them tested).  Everything here only reads the repository: git
runs with --no-optional-locks (so `git status` does not refresh the index) and the source is
exported from the objects into the rig's cache (rig/kernel/sources.py, kind "git").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rig.core import proc
from rig.core.model import SourceSpec
from rig.core.status import RigError
from rig.core.text import few, variant_name


class TreeError(RigError):
    """A tree or a base the rig cannot vet on; the message names the tree and the problem."""


@dataclass(frozen=True)
class Base:
    """The commit a series is vetted on, as a source, and why that commit."""

    source: SourceSpec               # kind "git": the tree at COMMIT
    commit: str                      # full commit id
    described: str                   # `git describe --always`, e.g. v6.1-2-g1a2b3c4d5e6f
    reason: str                      # "the series' base-commit: line", "HEAD: ...", "--base X"
    repository: str                  # the tree's https remote, "" when it has none

    @property
    def name(self) -> str:
        """A variant name for the base: the tree's name at the commit."""
        return variant_name(f"{self.source.name}-{self.commit[:12]}")


def _git(tree: Path, *args: str, check: bool = True) -> proc.Ran:
    # no user or system configuration changes what git reports; nothing writes to the tree
    env = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
           "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return proc.run(["git", "--no-optional-locks", "-C", str(tree), *args],
                        f"{tree}: git {args[0]}", env=env, check=check)
    except proc.CommandFailed as exc:
        raise TreeError(exc.detailed()) from None


def open_tree(path: Path) -> Path:
    """PATH's top-level directory, checked to be a git repository without uncommitted changes
    to tracked files.  Raises TreeError naming what is wrong."""
    if not path.is_dir():
        raise TreeError(f"{path}: not a directory, so not a kernel git tree")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    if top.status != 0:
        why = top.stderr.strip().splitlines()
        raise TreeError(f"{path}: not a git repository"
                        + (f" ({why[-1]})" if why else ""))
    root = Path(top.stdout.strip())
    if _git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).status != 0:
        raise TreeError(f"{root}: the repository has no commits")
    changed = _git(root, "status", "--porcelain=v1", "--untracked-files=no").stdout.splitlines()
    if changed:
        raise TreeError(f"{root}: uncommitted changes to tracked files "
                        f"({few([line[3:] for line in changed])}): commit or stash them; "
                        "the rig tests commits, never the working directory")
    return root


def _commit(tree: Path, rev: str) -> str | None:
    ran = _git(tree, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
               check=False)
    return ran.stdout.strip() if ran.status == 0 else None


def _repository(tree: Path) -> str:
    """The https URL of the tree's upstream remote (or origin), as KCIDB wants one."""
    for remote in ("@{upstream}", "origin"):
        if remote.startswith("@"):
            ran = _git(tree, "rev-parse", "--abbrev-ref", "--symbolic-full-name", remote,
                       check=False)
            if ran.status != 0 or "/" not in ran.stdout:
                continue
            remote = ran.stdout.strip().split("/", 1)[0]
        url = _git(tree, "remote", "get-url", remote, check=False).stdout.strip()
        if url.startswith("https://"):
            return re.sub(r"^https://[^@/]*@", "https://", url)     # no credentials
    return ""


def base(tree: Path, named: str = "", given: str = "") -> Base:
    """The commit of TREE to vet on: GIVEN (--base), else NAMED (the series' base-commit:),
    else HEAD.  TREE is an open_tree() result."""
    if given:
        commit = _commit(tree, given)
        if commit is None:
            raise TreeError(f"{tree}: --base {given}: no such commit in the tree")
        reason = f"given with --base {given}"
        if named and not commit.startswith(named):
            reason += f"; the series names base-commit {named[:12]}"
    elif named:
        commit = _commit(tree, named)
        if commit is None:
            raise TreeError(f"{tree}: the series names base-commit {named}, which is not in "
                            "the tree: fetch the branch it was written for, or give --base "
                            "REV to vet it on another commit")
        reason = "the series' base-commit: line"
    else:
        commit = _commit(tree, "HEAD")
        assert commit is not None                    # open_tree checked HEAD
        reason = "the tree's HEAD: the series names no base-commit"
    head = _commit(tree, "HEAD")
    if head != commit and not given:
        reason += f" (HEAD is {head[:12] if head else '?'})"
    described = _git(tree, "describe", "--always", "--abbrev=12", commit).stdout.strip()
    name = variant_name(tree.name) or "tree"
    return Base(SourceSpec(name=name, kind="git", path=tree, ref=commit), commit, described,
                reason, _repository(tree))
