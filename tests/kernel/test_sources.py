"""Kernel sources: identities, and the apt answer remembered while apt's lists are unchanged.

The apt tests ask this host's real apt (which may run `apt-get update`): e2e.
"""

import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.paths import FIXTURES

from rig.core import proc
from rig.core.cache import Cache
from rig.core.model import SourceSpec
from rig.kernel import sources

FIXTURES = FIXTURES / "sources"


def test_the_candidate_is_read_from_the_packages_own_block():
    bookworm = (FIXTURES / "apt-policy-linux-source-6.1.bookworm.txt").read_text()
    assert sources.candidate_in(bookworm, "linux-source-6.1") == "6.1.192-3"
    # Debian 13 has no linux-source-6.1; apt answered for linux-source-6.12.
    trixie = (FIXTURES / "apt-policy-linux-source-6.1.trixie.txt").read_text()
    assert sources.candidate_in(trixie, "linux-source-6.1") is None
    assert sources.candidate_in(trixie, "linux-source-6.12") == "6.12.117-1"
    assert sources.candidate_in("", "linux-source-6.1") is None


def test_the_variants_of_a_cold_run_fetch_the_lists_once(tmp_path, monkeypatch):
    """The four variants of a cold run prepare their sources at once (threads, as here); a
    second `apt-get update` on the same lists fails on apt's lock (a first run on a fresh
    bookworm lost three variants so), so the archive takes its own lock.  apt is stood in
    for by a slow update that writes a list."""
    archive = sources.DebianArchive("bookworm", tmp_path / "apt" / "bookworm")
    running, updates, overlaps = [], [], []

    def apt_get_update(cmd, what):
        running.append(cmd)
        overlaps.extend(running[1:])
        time.sleep(0.2)
        (archive.lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages") \
            .write_text("Package: linux-source-6.1\n")
        updates.append(cmd)
        running.remove(cmd)

    monkeypatch.setattr(sources, "_run", apt_get_update)
    (archive.lists).mkdir(parents=True)
    (archive.lists / "lock").touch()          # what a failed update leaves: not fresh lists
    threads = [threading.Thread(target=archive.ensure) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and len(updates) == 1


def test_git_source_is_identified_by_commit(tmp_path):
    repo = tmp_path / "linux"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "Makefile").write_text("all:\n")
    subprocess.run([*git, "add", "Makefile"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert sources.identify(SourceSpec("t", "git", path=repo, ref="HEAD")) == head
    with pytest.raises(sources.SourceError, match="resolving 'nope'"):
        sources.identify(SourceSpec("t", "git", path=repo, ref="nope"))


def test_tarball_that_is_not_a_kernel_is_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "README").write_text("not a kernel\n")
    tarball = tmp_path / "junk.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tmp_path), "junk"], check=True)
    dest = tmp_path / "out" / "linux"
    dest.parent.mkdir()
    with pytest.raises(sources.SourceError, match="does not look like a Linux kernel"):
        sources._unpack_tarball(tarball, dest)
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.identify(SourceSpec("t", "tarball", path=tmp_path / "missing.tar"))


def test_the_rigs_own_apt_view_of_a_release(tmp_path):
    """The lists of Debian bookworm's archive live in the cache, whatever the host runs; fresh
    lists are not fetched again (no network here: a fetch would fail the test's fence)."""
    archive = sources.DebianArchive("bookworm", tmp_path / "apt" / "bookworm")
    archive.lists.mkdir(parents=True)
    (archive.lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("fresh")
    archive.ensure()
    listed = (archive.root / "etc" / "sources.list").read_text().splitlines()
    assert listed == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"http://deb.debian.org/{where} main" for where in
        ("debian bookworm", "debian bookworm-updates", "debian-security bookworm-security")]
    options = archive.options()
    assert f"Dir::State={archive.root / 'state'}" in options
    assert f"Dir::Etc::SourceList={archive.root / 'etc' / 'sources.list'}" in options
    assert all(str(tmp_path) in o for o in options if o.startswith("Dir::"))


def test_the_default_sources_name_their_suites():
    """6.1 and 6.12 from bookworm whatever the host; 7.2 from unstable, 7.3-rc from
    experimental."""
    from rig.flows import config
    cfg = config.load()
    assert {cfg.variant(v).source.suite for v in ("base", "upstream")} == {"bookworm"}
    assert {n: (s.package, s.suite) for n, s in cfg.sources.items()
            if n in ("debian-7-2", "debian-7-3")} == {
        "debian-7-2": ("linux-source-7.2", "sid"),
        "debian-7-3": ("linux-source-7.3", "experimental")}


def _fixture(kind: str, suite: str) -> str:
    return (FIXTURES / f"apt-{kind}-linux-source.{suite}.txt").read_text()


@pytest.mark.parametrize("suite, offered", [
    ("bookworm", {"linux-source-6.1": "6.1.192-3", "linux-source-6.12": "6.12.118-1~deb12u1"}),
    ("sid", {"linux-source-7.2": "7.2.13-1"}),
    ("experimental", {"linux-source-7.3": "7.3~rc7-1~exp1"}),
    ("trixie-backports", {"linux-source-7.2": "7.2.12-1~bpo13+1",
                          "linux-source-7.3": "7.3.4-1~bpo13+1"}),
])
def test_what_a_suite_offers_is_each_packages_candidate(suite, offered):
    """Real `apt-cache pkgnames linux-source-` and `apt-cache policy` of those, through the
    rig's lists of each suite (2026-12-02): the newest version, security updates included;
    experimental's NotAutomatic version (pin 1) is still the candidate where it is alone."""
    assert sources.offered(_fixture("pkgnames", suite), _fixture("policy", suite)) == offered
    assert sources.offered("linux-source-9.9\n", _fixture("policy", suite)) == {}


def _fresh_lists(cache_root: Path, suite: str) -> None:
    lists = cache_root / "apt" / suite / "state" / "lists"
    lists.mkdir(parents=True)
    (lists / f"deb.debian.org_debian_dists_{suite}_InRelease").write_text("fresh")


def test_rig_sources_lists_each_configured_suite_and_what_is_missing(tmp_path, monkeypatch,
                                                                     capsys):
    """`rig sources` over the rig's fresh lists of each suite the configuration names; apt's
    answers are the real ones captured from those lists, replayed (no apt in host tests).  A
    source whose package its suite no longer offers is named, exit 2."""
    from rig import cli
    monkeypatch.setenv("RIG_CACHE", str(tmp_path))
    for suite in ("bookworm", "sid", "experimental", "trixie-backports"):
        _fresh_lists(tmp_path, suite)

    def apt(cmd, what):
        suite = Path(next(a for a in cmd if a.startswith("Dir::State="))).parent.name
        answer = _fixture("pkgnames" if "pkgnames" in cmd else "policy", suite)
        return proc.Ran(tuple(cmd), 0, answer, "", 0.0)

    monkeypatch.setattr(sources, "_run", apt)
    assert cli.main(["sources", "trixie-backports"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out] == [
        ["bookworm:"],
        ["linux-source-6.1", "6.1.192-3", "source", "debian-6-1"],
        ["linux-source-6.12", "6.12.118-1~deb12u1", "source", "debian-6-12"],
        ["sid:"], ["linux-source-7.2", "7.2.13-1", "source", "debian-7-2"],
        ["experimental:"], ["linux-source-7.3", "7.3~rc7-1~exp1", "source", "debian-7-3"],
        ["trixie-backports:"], ["linux-source-7.2", "7.2.12-1~bpo13+1"],
        ["linux-source-7.3", "7.3.4-1~bpo13+1"]]
    moved = tmp_path / "moved.toml"
    moved.write_text('[sources.debian-7-2]\nsuite = "experimental"\n')
    assert cli.main(["sources", "--config", str(moved)]) == 2
    out = capsys.readouterr().out
    assert "source debian-7-2: linux-source-7.2 is not in experimental" in out
    assert cli.main(["sources", "../bullseye"]) == 2
    assert "rig sources: unknown Debian suite '../bullseye'" in capsys.readouterr().err
    assert not (tmp_path / "bullseye").exists()


@pytest.mark.parametrize("suite", ["../../escape", "bullseye", ""])
def test_a_suite_the_data_does_not_know_is_refused_before_it_names_a_folder(tmp_path, suite):
    spec = SourceSpec("odd", "debian", package="linux-source-7.2", suite=suite or "sid/..")
    with pytest.raises(sources.SourceError, match="source odd: unknown Debian suite"):
        sources.identify(spec, Cache(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "apt").exists() and not (tmp_path / "escape").exists()


def test_an_unstable_or_experimental_suite_lists_only_itself(tmp_path):
    for suite, line in (("sid", "debian sid"), ("experimental", "debian experimental"),
                        ("bookworm-security", "debian-security bookworm-security")):
        _fresh_lists(tmp_path, suite)
        archive = sources.archive(suite, Cache(tmp_path), "test")
        archive.ensure()
        assert (archive.root / "etc" / "sources.list").read_text() == (
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            f"http://deb.debian.org/{line} main\n")
