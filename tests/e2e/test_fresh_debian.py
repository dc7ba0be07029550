"""The README's commands on a freshly bootstrapped Debian, as a normal user, with nothing from
the host's Python.

mmdebstrap makes a minimal bookworm (minbase plus git, sudo and ca-certificates: no Python),
cached under the rig's cache and keyed by its recipe.  A fresh `git clone` of the commit under
test (uncommitted files stay out) goes to a normal user with sudo, who runs the README's
set-up line, then `tox -e unit` (which must leave their rig cache alone), then `tox -e rig`,
which must install nothing and stop at once with the exact `sudo apt-get install` line for the
host packages.  Then the user runs that line and, as themselves, a real run of the base and
umem-rfc to the README's headline, vets a patch, and runs report, export, history and cache on
what the vet wrote: their rig fetches the kernel source,
builds the guest image (mmdebstrap in unshare mode), the kernels (in the sandbox for the
patched ones) and boots them.  The compiler cache and the base kernel are seeded from the
root's cache that CI's earlier tests filled: the base is a cache hit (the same inputs make the
same key) and the patched builds mostly ccache hits (CCACHE_BASEDIR: the cache's own path does
not matter).  The user's cache is on another file system than their
home and the output (XDG_CACHE_HOME on a bind mount of the host's disk), as a user may keep
it.

The root lives on a tmpfs in a private mount and PID namespace held open by one process that
dies with the test (setpriv --pdeathsig, unshare --kill-child), which made the tmpfs the
namespace's root with pivot_root (a chroot would stop the rig's own bubblewrap and mmdebstrap:
the kernel gives no user namespace to a chrooted process); commands enter it with nsenter.
Its tmpfs, /proc and /dev mounts and every process started in it end with the namespace,
whatever happens to the test: nothing is mounted on the host, nothing is left to delete.
Each step prints how long it took (pytest -s shows them).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from support.mkthread import git, mbox, revision
from test_e2e_vet import COMMENT

from rig.core.cache import Cache, digest
from rig.flows.config import project_root
from rig.results import schema as results

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mounts need root")

USER = "dev"
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"   # Debian's, no sbin
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Recipe:
    """What mmdebstrap makes; all of it is the cache key."""
    suite: str
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("git", "sudo", "ca-certificates")


def readme_setup_line(readme: Path) -> str:
    """The first command of README's "The two commands" block, without its comment."""
    section = readme.read_text().split("## The two commands", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[0].split("#", 1)[0].strip()


def cached_root(recipe: Recipe, cache: Cache) -> Path:
    """The root tarball for RECIPE, bootstrapped into the cache when it has none."""
    key = digest("fresh-root-v1", asdict(recipe))
    with cache.lock("testroot", key):
        if cache.lookup("testroot", key) is None:
            start = time.monotonic()
            with cache.publish("testroot", key) as scratch:
                subprocess.run(["mmdebstrap", "--quiet", f"--variant={recipe.variant}",
                                "--include=" + ",".join(recipe.packages), recipe.suite,
                                str(scratch / "root.tar"), recipe.mirror],
                               check=True, stdin=subprocess.DEVNULL, timeout=1200)
            print(f"[{time.monotonic() - start:6.1f} s] mmdebstrap {recipe.suite}")
    return cache.path("testroot", key) / "root.tar"


@dataclass
class Root:
    """TARBALL unpacked onto a tmpfs, the root of a mount and PID namespace that one holder
    process keeps open.  Commands enter it with nsenter; the host sees the root through
    /proc/PID/root, and the host's DISK folder is /srv/disk in it.  Killing the holder ends
    the namespace with its mounts, its files and every process started in it, and the holder
    dies with this process (setpriv --pdeathsig)."""
    holder: subprocess.Popen
    pid: int                         # the namespace's init, as the host numbers it
    disk: Path

    @property
    def path(self) -> Path:
        return Path(f"/proc/{self.pid}/root")

    def run(self, command: str, user: str = "root", stdin: str = "", cwd: str = "~",
            timeout: float = 900, env: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        home = "/root" if user == "root" else f"/home/{user}"
        inner = ["env", "-i", f"HOME={home}", f"USER={user}", f"LOGNAME={user}",
                 f"PATH={PATH if user == 'root' else USER_PATH}", "LANG=C.UTF-8", *env,
                 "sh", "-c", f"cd {cwd} && {command}"]
        if user != "root":
            inner = ["runuser", "-u", user, "--", *inner]
        start = time.monotonic()
        proc = subprocess.run(
            ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--root", "--wd=/", "--",
             *inner],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
            env={"PATH": PATH})
        print(f"[{time.monotonic() - start:6.1f} s] {user}$ {command} -> {proc.returncode}")
        return proc

    def check(self, command: str, **kw) -> subprocess.CompletedProcess:
        proc = self.run(command, **kw)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc


def _pems(bundle: Path) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                          bundle.read_text(), re.DOTALL))


def _trust_the_hosts_cas(root: Root) -> None:
    """Where the host reaches the registries through a TLS-inspecting proxy, the root trusts
    that proxy's CA too, added as a local CA the way an admin would on a new machine."""
    extra = sorted(_pems(HOST_BUNDLE) - _pems(root.path / HOST_BUNDLE.relative_to("/")))
    for n, pem in enumerate(extra):
        (root.path / "usr/local/share/ca-certificates" / f"host-{n}.crt").write_text(pem + "\n")
    if extra:
        root.check("update-ca-certificates")


def unpacked(tarball: Path, mountpoint: Path, disk: Path) -> Iterator[Root]:
    """A Root of TARBALL mounted at MOUNTPOINT (an empty directory), then made the namespace's
    root, with the host's DNS and CAs and DISK (a host folder) at /srv/disk."""
    start = time.monotonic()
    setup = ('mount -t tmpfs -o size=8g,mode=755 rig-fresh "$1" && tar -xf "$2" -C "$1" && '
             'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && '
             'mkdir -p "$1/srv/disk" "$1/.oldroot" && mount --bind "$3" "$1/srv/disk" && '
             'cd "$1" && pivot_root . .oldroot && umount -l /.oldroot && rmdir /.oldroot && '
             'echo ready && exec sleep infinity')
    holder = subprocess.Popen(
        ["setpriv", "--pdeathsig=KILL", "--", "unshare", "--mount", "--propagation=private",
         "--pid", "--fork", "--kill-child", "sh", "-c", setup, "sh", str(mountpoint),
         str(tarball), str(disk)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": PATH})
    try:
        ready = holder.stdout.readline()
        assert ready == "ready\n", f"unpacking {tarball} failed: {holder.stderr.read()}"
        children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        root = Root(holder, int(children[0]), disk)
        print(f"[{time.monotonic() - start:6.1f} s] unpacked {tarball} onto a tmpfs")
        shutil.copyfile("/etc/resolv.conf", root.path / "etc" / "resolv.conf")
        _trust_the_hosts_cas(root)
        yield root
    finally:
        holder.kill()
        holder.wait()


def clone_for(root: Root, user: str, checkout: Path) -> str:
    """USER (with sudo) and a fresh clone of CHECKOUT's HEAD in their home; its path there."""
    root.check(f"useradd --create-home --shell /bin/bash {user} && "
               f"echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{user}")
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # The host's git clones onto the host's disk (git resolves /proc/PID/root away), the
    # root's tar takes the clone in.
    clone = 'git clone --quiet --no-hardlinks "$1" "$2" && git -C "$2" checkout -q --detach "$3"'
    subprocess.run(["sh", "-c", clone, "sh", str(checkout), str(root.disk / "umem-rig"), head],
                   check=True)
    root.check(f"mv /srv/disk/umem-rig /home/{user}/ && chown -R {user}: /home/{user}/umem-rig")
    return f"/home/{user}/umem-rig"


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory) -> Iterator[Root]:
    cache = Cache()
    tarball = cached_root(Recipe("bookworm"), cache)
    # The host's disk, for what outgrows the tmpfs: the user's rig cache.
    with cache.scratch("fresh-root-disk") as disk:
        yield from unpacked(tarball, tmp_path_factory.mktemp("fresh-root"), disk)


@pytest.fixture(scope="module")
def project(bookworm) -> str:
    """A fresh clone in the normal user's home, after the README's set-up line; its path."""
    setup = readme_setup_line(project_root() / "README.md")
    path = clone_for(bookworm, USER, project_root())
    assert not (bookworm.path / "usr/bin/python3").exists(), "the root is not fresh"
    # A freshly installed system has current package lists; mmdebstrap leaves none.
    bookworm.check("apt-get update -q")
    # The user answers apt's "Do you want to continue? [Y/n]".
    bookworm.check(setup, user=USER, stdin="y\n")
    return path


def refusal(root: Root, project: str) -> str:
    """`tox -e rig` before the host packages: nothing installed, exit 2, the one sudo line."""
    rig = root.run("tox -e rig", user=USER, cwd=project)
    said = [line.strip() for line in (rig.stdout + rig.stderr).splitlines()]
    assert rig.returncode == 2, "\n".join(said[-30:])
    assert "rig: missing host packages (not root); install them with:" in said
    wanted = [line for line in said if line.startswith("sudo apt-get install ")]
    assert len(wanted) == 1, "\n".join(said[-30:])
    return wanted[0]


def test_readme_setup_then_unit_tests_on_a_fresh_bookworm(bookworm, project):
    unit = bookworm.check("tox -e unit", user=USER, cwd=project, timeout=600)
    assert re.search(r"^=+ \d+ passed.* in [\d.]+s", unit.stdout, re.MULTILINE), \
        unit.stdout[-2000:]
    assert not (bookworm.path / "home" / USER / ".cache" / "umem-rig").exists()
    warnings = unit.stdout.find("warnings summary")
    print(unit.stdout[warnings - 40:] if warnings >= 0 else unit.stdout[-400:])

    # Without root the rig installs nothing: it names the exact command and ends with status 2.
    argv = shlex.split(refusal(bookworm, project))
    # It is right for this release: apt resolves every package it names.
    argv.insert(argv.index("install") + 1, "--simulate")
    bookworm.check(shlex.join(argv), user=USER)


def readme_headline(readme: Path, variant: str) -> str:
    """The README's headline line for VARIANT, from its excerpt of a real run's report."""
    lines = [line.removeprefix("* ") for line in readme.read_text().splitlines()
             if line.startswith(f"* {variant} vs base: ")]
    assert len(lines) == 1, lines
    return lines[0]


def comment_patch(tmp: Path) -> Path:
    """A real `git format-patch` of test_e2e_vet's comment in 6.1's umem.c: a candidate that
    builds, boots and changes no verdict."""
    umem = "drivers/infiniband/core/umem.c"
    repo = tmp / "linux"
    (repo / umem).parent.mkdir(parents=True)
    shutil.copyfile(project_root() / "tests/fixtures/patches/tree" / umem, repo / umem)
    git(repo, "init", "-q")
    git(repo, "add", umem)
    git(repo, "commit", "-q", "-m", "linux-source-6.1 umem.c")
    base = git(repo, "rev-parse", "HEAD").strip()
    path = tmp / "comment.mbox"
    path.write_text(mbox(revision(repo, base, [COMMENT], 1, "2026-11-02T10:00:00Z", None)))
    return path


def test_a_normal_user_runs_and_vets_after_the_sudo_line(bookworm, project, tmp_path,
                                                        base_kernel):
    """As the user, after the sudo line: the run to the README's headline, then a vet.  The
    base kernel CI built is seeded too (the same inputs make the same key): the user builds
    the patched ones, in the sandbox, which is what only a user's build can show."""
    line = refusal(bookworm, project)
    assert line.startswith("sudo ")
    bookworm.check(line, user=USER)            # the user's sudo: nothing else is installed

    # The user's cache on the host's disk, another file system than their home's tmpfs,
    # seeded with the root's compiler cache (the root's own files stay the root's).
    cache_home, cache = "/srv/disk/cache", bookworm.disk / "cache" / "umem-rig"
    start = time.monotonic()
    ccache = Cache().root / "ccache"
    if ccache.is_dir():
        shutil.copytree(ccache, cache / "ccache", symlinks=True)
    entry = base_kernel.parent
    if (entry / "meta.json").is_file():                # a cache entry, not $RIG_KERNEL's
        shutil.copytree(entry, cache / "kernel" / entry.name)
    cache.mkdir(parents=True, exist_ok=True)
    bookworm.check(f"chmod 0755 /srv/disk && chown -R {USER}: {cache_home} && "
                   f"chmod 0700 {cache_home}")
    print(f"[{time.monotonic() - start:6.1f} s] seeded the user's ccache and base kernel")
    env = (f"XDG_CACHE_HOME={cache_home}",)
    run = bookworm.run("tox -e rig -- --variant base --variant umem-rfc", user=USER,
                       cwd=project, env=env, timeout=2400)
    said = run.stdout + run.stderr
    assert run.returncode == 1, said[-4000:]          # umem-rfc regresses
    headline = readme_headline(project_root() / "README.md", "umem-rfc")
    assert headline in said, said[-4000:]
    uid = (bookworm.path / "home" / USER).stat().st_uid
    built = [cache / "image", cache / "kernel", cache / "source"]
    assert all(p.is_dir() and p.stat().st_uid == uid for p in built), built
    if Path("/dev/kvm").exists() and not Path("/dev/kvm").stat().st_mode & 0o006:
        assert "this user may not open /dev/kvm" in said, said[-4000:]

    patch = comment_patch(tmp_path)
    shutil.copyfile(patch, bookworm.path / "home" / USER / patch.name)
    bookworm.check(f"chown {USER}: /home/{USER}/{patch.name}")
    vet = bookworm.run(f".tox/rig/bin/rig vet ~/{patch.name} --out rig-out/vet", user=USER,
                       cwd=project, env=env, timeout=1800)
    assert vet.returncode == 0, (vet.stdout + vet.stderr)[-4000:]
    out = bookworm.path / project.lstrip("/") / "rig-out" / "vet"
    vetted = results.load(out / "results.json")
    cand = next(v for v in vetted.variants if not v.is_base)
    assert cand.outcome.value == "ok" and cand.tests, cand.errors
    assert not cand.environment.sandbox.startswith("none"), cand.environment.sandbox
    assert (out / "vet-summary.txt").is_file()

    # The commands that read what runs wrote, as the user, on the vet's results.
    rig = ".tox/rig/bin/rig"
    report = bookworm.run(f"{rig} report rig-out/vet/results.json --out rig-out/again",
                          user=USER, cwd=project, env=env)
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    bookworm.check(f"{rig} export --kcidb rig-out/vet/results.json -o rig-out/kcidb.json",
                   user=USER, cwd=project, env=env)
    bookworm.check("mkdir -p rig-out/nights && "
                   "cp rig-out/vet/results.json rig-out/nights/results-2026-12-02.json && "
                   f"{rig} history rig-out/nights", user=USER, cwd=project, env=env)
    listed = bookworm.check(f"{rig} cache", user=USER, cwd=project, env=env)
    assert "kernel" in listed.stdout, listed.stdout
    bookworm.check(f"{rig} cache --clear logs", user=USER, cwd=project, env=env)
    written = bookworm.path / project.lstrip("/") / "rig-out"
    for made in ("again/report.html", "kcidb.json", "nights/history.html"):
        assert (written / made).is_file() and (written / made).stat().st_uid == uid, made
    assert not (cache / "logs").exists()
    subprocess.run(["du", "-sh", str(cache)], check=False)
