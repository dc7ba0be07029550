"""Kernel sources: a Debian linux-source package, a local git tree at a ref, or a tarball.

Each is unpacked once into the cache, keyed by what identifies it (package version, commit id,
tarball hash).  Unpacking needs no root: `apt-get download` + dpkg-deb + tar.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rig.core import datafiles, proc
from rig.core.cache import Cache, locked
from rig.core.model import Patch, PreparedSource, SourceSpec
from rig.core.status import RigError
from rig.core.text import few, variant_name
from rig.kernel import patches as patchlib


class SourceError(RigError):
    pass


def _run(cmd: list[str], what: str, **kw) -> proc.Ran:
    try:
        return proc.run(cmd, what, **kw)
    except proc.CommandFailed as e:
        raise SourceError(e.detailed()) from None


APT_LISTS = Path("/var/lib/apt/lists")


def suites() -> dict[str, list[str]]:
    """The Debian suites a source may name, with the apt lines of each."""
    return datafiles.toml("debian-archive.toml")["suites"]


@dataclass(frozen=True)
class DebianArchive:
    """The rig's own apt view of one suite of Debian's archive (rig/data/debian-archive.toml):
    its configuration and lists under ROOT, so a package comes from SUITE whatever the host's
    apt knows, and without root."""

    suite: str
    root: Path

    @property
    def lists(self) -> Path:
        return self.root / "state" / "lists"

    def options(self) -> list[str]:
        state, etc = self.root / "state", self.root / "etc"
        opts = {"Dir::State": state, "Dir::State::status": state / "status",
                "Dir::Cache": self.root / "cache", "Dir::Etc::SourceList": etc / "sources.list",
                "Dir::Etc::SourceParts": etc / "sources.list.d",
                "Dir::Etc::Preferences": etc / "preferences",
                "Dir::Etc::PreferencesParts": etc / "preferences.d"}
        if os.geteuid() == 0:
            # apt's sandbox user cannot write the rig's directories; the lists are verified
            # against the release's signature either way
            opts["APT::Sandbox::User"] = "root"
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def _locked(self):
        # The variants of one run (threads) and other runs prepare their sources at once; a
        # second `apt-get update` on the same lists fails at once on apt's lock.
        return locked(self.root.with_name(f".{self.root.name}.lock"))

    def ensure(self) -> None:
        """The configuration in place, and lists younger than the data file's limit."""
        data = datafiles.toml("debian-archive.toml")
        with self._locked():
            for d in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d",
                      "etc/preferences.d"):
                (self.root / d).mkdir(parents=True, exist_ok=True)
            (self.root / "state" / "status").touch()
            (self.root / "etc" / "sources.list").write_text("".join(
                f"deb [signed-by={data['keyring']}] {line}\n"
                for line in data["suites"][self.suite]))
            stamp = _lists_stamp(self.lists)
            age = time.time() - int(stamp) / 1e9 if stamp else None
            if age is None or age > data["refresh_hours"] * 3600:
                self._update()

    def update(self) -> None:
        with self._locked():
            self._update()

    def _update(self) -> None:
        _run(["apt-get", *self.options(), "update", "-q"],
             f"fetching Debian {self.suite}'s package lists")


def _lists_stamp(lists: Path = APT_LISTS) -> str:
    """Changes whenever `apt-get update` changes what apt knows."""
    try:
        # apt's lock file comes before any list: an update that failed leaves only it
        return str(max(p.stat().st_mtime_ns for p in lists.iterdir()
                       if p.is_file() and p.name != "lock"))
    except (OSError, ValueError):
        return ""


def debian_candidate(package: str, memo: Path | None = None,
                     archive: DebianArchive | None = None) -> str:
    """The version apt would download, refreshing the package lists once if they know none:
    ARCHIVE's, or the host's apt's.

    `apt-cache policy` takes a second or more on a loaded machine; MEMO keeps its answer for
    as long as apt's lists are unchanged, so a cache hit stays fast.
    """
    if archive is not None:
        archive.ensure()
    lists = archive.lists if archive else APT_LISTS
    name = f"{archive.suite}/{package}" if archive else package
    stamp = _lists_stamp(lists)
    memory = json.loads(memo.read_text()) if memo and memo.exists() else {}
    if stamp and memory.get(name, {}).get("stamp") == stamp:
        return memory[name]["version"]
    version = _apt_candidate(package, archive)
    if memo and stamp:
        memory[name] = {"stamp": _lists_stamp(lists), "version": version}
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memory))
        os.replace(tmp, memo)
    return version


def candidate_in(policy: str, package: str) -> str | None:
    """PACKAGE's candidate in `apt-cache policy` output, if apt knows that package.

    apt reads a name it does not know as a regular expression: on Debian 13, asked for
    linux-source-6.1, it answers for linux-source-6.12.  Only PACKAGE's own block counts.
    """
    m = re.search(rf"^{re.escape(package)}:\n(?:[ \t].*\n)*?[ \t]+Candidate: (\S+)", policy,
                  re.MULTILINE)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _apt_candidate(package: str, archive: DebianArchive | None) -> str:
    options = archive.options() if archive else []
    for attempt in (1, 2):
        out = _run(["apt-cache", *options, "policy", package], f"looking up {package}").stdout
        if version := candidate_in(out, package):
            return version
        if attempt == 1 and archive:
            archive.update()
        elif attempt == 1:
            proc.run(["apt-get", "update", "-q"], "apt-get update", check=False)
    where = f"Debian {archive.suite}'s archive" if archive else "this host's apt sources"
    raise SourceError(f"Debian package {package!r} is unknown to apt (apt-cache policy has no "
                      f"candidate in {where})")


def offered(names: str, policy: str) -> dict[str, str]:
    """Each package of NAMES (`apt-cache pkgnames` output) with its candidate in POLICY
    (`apt-cache policy` of them); names apt lists without a version (virtual ones) are left
    out."""
    return {n: v for n in sorted(set(names.split())) if (v := candidate_in(policy, n))}


def offers(archive: DebianArchive, prefix: str) -> dict[str, str]:
    """The packages whose names start with PREFIX that ARCHIVE's suite offers today, each with
    the version a source naming it would fetch."""
    archive.ensure()
    options = archive.options()
    names = _run(["apt-cache", *options, "pkgnames", prefix],
                 f"listing Debian {archive.suite}'s {prefix}* packages").stdout
    if not names.split():
        return {}
    policy = _run(["apt-cache", *options, "policy", *sorted(set(names.split()))],
                  f"looking up Debian {archive.suite}'s {prefix}* packages").stdout
    return offered(names, policy)


@dataclass(frozen=True)
class SuiteOffer:
    """What one Debian suite offers, and the configured sources that name it."""

    suite: str
    packages: dict[str, str]          # package -> version
    sources: dict[str, str]           # source name -> its package

    def missing(self) -> dict[str, str]:
        return {s: p for s, p in self.sources.items() if p not in self.packages}


def suite_offers(specs: dict[str, SourceSpec], cache: Cache,
                 extra: list[str] = ()) -> list[SuiteOffer]:
    """Per suite the debian sources of SPECS name (and EXTRA ones), what it offers."""
    named: dict[str, dict[str, str]] = {}
    for spec in specs.values():
        if spec.kind == "debian" and spec.suite:
            named.setdefault(spec.suite, {})[spec.name] = spec.package
    for suite in extra:
        named.setdefault(suite, {})
    prefix = datafiles.toml("debian-archive.toml")["offers"]
    return [SuiteOffer(suite, offers(archive(suite, cache, "rig sources"), prefix), users)
            for suite, users in named.items()]


def _pipe(producer: list[str], consumer: list[str], what: str) -> None:
    try:
        proc.pipe(producer, consumer, what)
    except proc.CommandFailed as e:
        raise SourceError(e.detailed()) from None


def _single_top_dir(root: Path) -> Path:
    entries = [p for p in root.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


def _unpack_tarball(archive: Path, dest: Path) -> None:
    """Unpack a kernel tarball so that dest/ holds its top-level Makefile."""
    scratch = dest.parent / (dest.name + ".unpack")
    scratch.mkdir()
    _run(["tar", "-xf", str(archive), "-C", str(scratch)], f"unpacking {archive}")
    top = _single_top_dir(scratch)
    if not (top / "Makefile").is_file() or not (top / "mm").is_dir():
        raise SourceError(f"{archive} does not look like a Linux kernel source tarball "
                          "(no top-level Makefile and mm/)")
    top.rename(dest)
    shutil.rmtree(scratch, ignore_errors=True)


def _fetch_debian(spec: SourceSpec, version: str, dest: Path, cache: Cache) -> None:
    package = spec.package
    with cache.scratch("deb") as tmpdir:
        tmp = str(tmpdir)
        # apt's sandbox user can't write to a root-owned temp dir; the download is verified
        # against the signed lists either way.
        options = archive_of(spec, cache).options() if spec.suite else \
            ["-o", "APT::Sandbox::User=root"]
        _run(["apt-get", *options, "download", "-q", f"{package}={version}"],
             f"downloading {package} {version}", cwd=tmp)
        deb = next(Path(tmp).glob("*.deb"))
        # dpkg-deb | tar -x, keeping only the source tarball
        _pipe(["dpkg-deb", "--fsys-tarfile", str(deb)],
              ["tar", "-x", "-C", tmp, "--wildcards", "./usr/src/linux-source-*.tar.*"],
              f"extracting {deb.name}")
        tarballs = list(Path(tmp, "usr/src").glob("linux-source-*.tar.*"))
        if not tarballs:
            raise SourceError(f"{deb.name} holds no usr/src/linux-source-*.tar.*")
        _unpack_tarball(tarballs[0], dest)


def archive_of(spec: SourceSpec, cache: Cache) -> DebianArchive:
    return archive(spec.suite, cache, f"source {spec.name}")


def archive(suite: str, cache: Cache, who: str) -> DebianArchive:
    """The rig's lists of SUITE, which WHO names."""
    known = suites()
    # the suite names a folder of the cache: only the data's own names
    if suite not in known:
        raise SourceError(f"{who}: unknown Debian suite {suite!r} (known: {', '.join(known)}; "
                          "rig/data/debian-archive.toml)")
    return DebianArchive(suite, cache.root / "apt" / suite)


def identify(spec: SourceSpec, cache: Cache | None = None) -> str:
    """What makes this source unique: package version, commit id or tarball hash."""
    if spec.kind == "debian":
        archive = archive_of(spec, cache) if cache and spec.suite else None
        return debian_candidate(spec.package,
                                cache.root / "source" / ".apt-candidates.json" if cache else None,
                                archive)
    if spec.kind == "git":
        if spec.path is None or not spec.path.is_dir():
            raise SourceError(f"source {spec.name}: {spec.path} is not a git repository")
        return _run(["git", "-C", str(spec.path), "rev-parse", "--verify",
                     f"{spec.ref or 'HEAD'}^{{commit}}"],
                    f"source {spec.name}: resolving {spec.ref!r}").stdout.strip()
    if spec.kind == "tarball":
        if spec.path is None or not spec.path.is_file():
            raise SourceError(f"source {spec.name}: tarball {spec.path} does not exist")
        h = hashlib.sha256()
        with open(spec.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    raise SourceError(f"source {spec.name}: unknown kind {spec.kind!r} "
                      "(expected debian, git or tarball)")


def cache_key(spec: SourceSpec, version: str) -> str:
    label = spec.package if spec.kind == "debian" else spec.name
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", f"{spec.kind}-{label}-{version}")


def prepare(spec: SourceSpec, cache: Cache) -> PreparedSource:
    """The pristine unpacked tree for SPEC, from the cache or fetched now."""
    version = identify(spec, cache)
    key = cache_key(spec, version)
    with cache.lock("source", key):
        entry = cache.lookup("source", key)
        if entry is None:
            with cache.publish("source", key) as tmp:
                tree = tmp / "linux"
                if spec.kind == "debian":
                    _fetch_debian(spec, version, tree, cache)
                elif spec.kind == "tarball":
                    _unpack_tarball(spec.path, tree)
                else:
                    tree.mkdir()
                    _pipe(["git", "-C", str(spec.path), "archive", version],
                          ["tar", "-x", "-C", str(tree)], f"exporting {version}")
            entry = cache.lookup("source", key)
    return PreparedSource(spec=spec, tree=entry / "linux", version=version)


def _git(tree: Path, *args: str) -> str:
    return _run(["git", "-C", str(tree), *args], f"{tree}: git {' '.join(args)}").stdout.strip()


def git_series(tree: Path, span: str, into: Path) -> tuple[SourceSpec, list[Patch]]:
    """A range A..B of a local git tree as a source (the tree at A) and a patch series
    (`git format-patch A..B`, written to INTO)."""
    if ".." not in span or span.count("..") != 1 or "..." in span:
        raise SourceError(f"{span!r} is not a commit range: give it as A..B")
    if not (tree / ".git").exists() and not (tree / "HEAD").is_file():
        raise SourceError(f"{tree} is not a git repository")
    a, b = span.split("..")
    start = _git(tree, "rev-parse", "--verify", "--end-of-options", f"{a or 'HEAD'}^{{commit}}")
    end = _git(tree, "rev-parse", "--verify", "--end-of-options", f"{b or 'HEAD'}^{{commit}}")
    if not _git(tree, "rev-list", f"{start}..{end}"):
        raise SourceError(f"{tree}: {span} holds no commits")
    merges = _git(tree, "rev-list", "--merges", f"{start}..{end}").split()
    if merges:
        raise SourceError(f"{tree}: {span} has merge commits ({few([m[:12] for m in merges])})"
                          ": a series applies patch by patch, so bisect a range without merges")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    _git(tree, "format-patch", "--quiet", "--no-signature", "--zero-commit", "-o", str(into),
         f"{start}..{end}")
    name = variant_name(tree.resolve().name) or "git"
    return SourceSpec(name=name, kind="git", path=tree.resolve(), ref=start), \
        patchlib.load(into)
