"""The cache: entries appear whole or not at all, and concurrent builders take turns."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from rig.core.cache import Cache, default_root, digest


def test_digest_changes_exactly_with_its_parts(tmp_path):
    f = tmp_path / "frag"
    f.write_text("CONFIG_A=y\n")
    first = digest("v1", f, [1, 2])
    assert digest("v1", f, [1, 2]) == first
    f.write_text("CONFIG_A=m\n")
    assert digest("v1", f, [1, 2]) != first
    # part boundaries count: ("ab", "c") is not ("a", "bc")
    assert digest("ab", "c") != digest("a", "bc")


def test_publish_is_all_or_nothing(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(RuntimeError), cache.publish("kernel", "k1") as scratch:
        (scratch / "bzImage").write_bytes(b"half")
        raise RuntimeError("make died")
    assert cache.lookup("kernel", "k1") is None
    assert not [p for p in (tmp_path / "kernel").iterdir() if not p.name.startswith(".k1.lock")]
    with cache.publish("kernel", "k1") as scratch:
        (scratch / "bzImage").write_bytes(b"whole")
    assert (cache.lookup("kernel", "k1") / "bzImage").read_bytes() == b"whole"


def _build_then_hang(root: str, started) -> None:
    cache = Cache(Path(root))
    with cache.lock("kernel", "k2"), cache.publish("kernel", "k2") as scratch:
        (scratch / "bzImage").write_bytes(b"half")
        started.set()
        time.sleep(60)


def test_killed_builder_leaves_no_entry_and_releases_the_lock(tmp_path):
    started = multiprocessing.Event()
    proc = multiprocessing.Process(target=_build_then_hang, args=(str(tmp_path), started))
    proc.start()
    assert started.wait(10)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    cache = Cache(tmp_path)
    with cache.lock("kernel", "k2"):     # would block forever if the lock survived its owner
        assert cache.lookup("kernel", "k2") is None


def _take_turn(root: str, log: str) -> None:
    cache = Cache(Path(root))
    with cache.lock("kernel", "k3"), open(log, "a") as fh:
        fh.write("in\n")
        fh.flush()
        time.sleep(0.3)
        fh.write("out\n")


def test_two_processes_take_turns(tmp_path):
    log = tmp_path / "log"
    procs = [multiprocessing.Process(target=_take_turn, args=(str(tmp_path), str(log)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert log.read_text() == "in\nout\nin\nout\n"


def test_the_cache_is_where_the_user_wants_it(monkeypatch, tmp_path):
    monkeypatch.delenv("RIG_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "umem-rig"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "umem-rig"
    monkeypatch.setenv("RIG_CACHE", str(tmp_path / "rig"))            # wins over both
    assert default_root() == tmp_path / "rig"
