"""A small real kernel git tree: Debian 6.1's umem.c (tests/fixtures/patches/tree) committed as
tests/fixtures/thread/make_threads.py commits it, so that the fixture threads' base-commit is
its first commit (BASE); then HEAD, a commit changing the lines the v3 series changes."""

from pathlib import Path

from support.mkthread import git
from support.paths import FIXTURES

UMEM = "drivers/infiniband/core/umem.c"
BASE = "d45f8f09ea42eb0b5cde6044b2a8c2615af1ed98"     # the threads' base-commit


def umem_tree(path: Path) -> Path:
    (path / UMEM).parent.mkdir(parents=True)
    (path / UMEM).write_bytes((FIXTURES / "patches" / "tree" / UMEM).read_bytes())
    git(path, "init", "-q", "-b", "master")
    git(path, "add", UMEM)
    git(path, "commit", "-q", "-m", "linux-source-6.1 umem.c")
    assert git(path, "rev-parse", "HEAD").strip() == BASE
    text = (path / UMEM).read_text()
    (path / UMEM).write_text(text.replace("\tunsigned int gup_flags = FOLL_WRITE;\n",
                                          "\tunsigned int gup_flags = FOLL_WRITE; /* pin */\n"))
    git(path, "commit", "-q", "-a", "-m", "IB/umem: a comment", date="2026-11-20T10:00:00Z")
    return path
