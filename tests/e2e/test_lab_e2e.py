"""End to end: `rig run --lab` against a real LAVA 2023.01 (tests/support/lavalab.py), and the same
two variants run locally: the comparisons must be the same.

The lab has two QEMU devices (so the base and umem-rfc run side by side) and one device type
whose only device sits on a worker that never comes (so a job there never starts).  Cold, the
lab's root is built into the rig's cache first (mmdebstrap and LAVA, a few minutes); warm, the
lab is up in well under a minute.  The kernels and the guest image are the rig's cached ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from support.lavalab import LocalLava

from rig.core import hostdeps
from rig.core.cache import Cache
from rig.guest.qemu import free_port
from rig.results import compare
from rig.results import schema as results
from rig.results.compare import Change

TOKEN_ENV = "RIG_TEST_LAVA_TOKEN"
COST: dict[str, float] = {}


def _rig(*args: str, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rig.cli", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    COST[" ".join(a for a in args if not a.startswith("/"))[:60]] = time.monotonic() - start
    sys.stdout.write(proc.stdout[-3000:])
    sys.stderr.write(proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def lava(tmp_path_factory, request):
    hostdeps.ensure(["lab"])
    work = tmp_path_factory.mktemp("lava")
    artefacts = work / "artefacts"
    artefacts.mkdir()
    start = time.monotonic()
    # A CI job that is stopped sends SIGTERM: the lab is torn down then too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with LocalLava(Cache(), work / "lab", artefacts) as lab:
            COST["lab root (cache)"] = lab.timings["root"]
            COST["lab start"] = lab.timings["start"]
            yield lab, artefacts, work
    finally:
        signal.signal(signal.SIGTERM, previous)
        COST["lab, all told"] = time.monotonic() - start
        # Printed past pytest's capture: the cost belongs in every CI log.
        with request.config.pluginmanager.getplugin("capturemanager") \
                .global_and_fixture_disabled():
            print("\nreal-LAVA test cost (s): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in COST.items()))


@pytest.fixture(scope="module")
def config(lava):
    lab, artefacts, work = lava
    closed = free_port()             # free, so nothing listens on it
    path = work / "labs.toml"
    (work / "bad-token").write_text("not-a-token\n")

    def table(name: str, **over: object) -> str:
        keys = {"kind": "lava", "url": lab.url, "token_env": TOKEN_ENV,
                "device_type": lab.device_type, "artefacts": str(artefacts),
                "artefacts_url": f"file://{artefacts}/", "poll": 2, "queue_timeout": 600}
        keys.update(over)
        body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
        return f"[labs.{name}]\n{body}\n"

    path.write_text(
        table("local")
        + table("down", url=f"http://127.0.0.1:{closed}/")
        + table("wrong-token", token_env="", token_file=str(work / "bad-token"))
        + table("no-such-type", device_type="no-such-type")
        + table("offline", device_type=lab.offline_type, queue_timeout=15))
    return path, {TOKEN_ENV: lab.token}


@pytest.fixture(scope="module")
def lab_run(config, tmp_path_factory):
    path, env = config
    out = tmp_path_factory.mktemp("lab-run")
    proc = _rig("run", "--variant", "umem-rfc", "--lab", "local", "--config", str(path),
                "--out", str(out), env=env)
    assert (out / "results.json").exists(), proc.stderr[-3000:]
    return proc, out, results.load(out / "results.json")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local-run")
    proc = _rig("run", "--variant", "umem-rfc", "--out", str(out))
    assert (out / "results.json").exists(), proc.stderr[-3000:]
    return proc, out, results.load(out / "results.json")


def _changes(res: results.Results) -> dict[str, Change]:
    rfc = next(v for v in compare.compare(res).variants if v.name == "umem-rfc")
    return {c.id: c.change for c in rfc.cells}


def test_the_lab_gives_the_comparison_a_local_run_gives(lab_run, local_run, capsys):
    lab_proc, _, lab_res = lab_run
    local_proc, _, local_res = local_run
    for name in ("base", "umem-rfc"):
        assert lab_res.variant(name).outcome.value == "ok", lab_res.variant(name).errors
        assert {t.id: t.verdict for t in lab_res.variant(name).tests} == \
            {t.id: t.verdict for t in local_res.variant(name).tests}, name
    assert _changes(lab_res) == _changes(local_res)
    assert compare.compare(lab_res).headline() == compare.compare(local_res).headline()
    with capsys.disabled():
        print("\ncompared headline:", *compare.compare(lab_res).headline(), sep="\n  ")
    assert lab_proc.returncode == local_proc.returncode == 1


def test_the_environment_names_the_lab_the_job_and_the_device(lab_run, lava):
    _, out, res = lab_run
    lab, _, _ = lava
    for v in res.variants:
        env = v.environment
        assert env.lab == "local"
        assert env.kernel_release.startswith("6.1.")
        assert env.accelerator == "tcg" and env.qemu_version
        (job,) = env.lab_jobs
        assert job.url == f"{lab.url}scheduler/job/{job.id}"
        assert job.device in ("qemu01", "qemu02") and job.health == "Complete"
        assert (out / "console" / f"{v.name}.console.log").read_text().count("RIG-READY:") == 1
    assert lab.token not in (out / "results.json").read_text()


def test_two_devices_run_two_variants_side_by_side(lab_run):
    _, _, res = lab_run
    (a,), (b,) = (v.environment.lab_jobs for v in res.variants)
    assert a.device != b.device
    assert max(a.started, b.started) < min(a.finished, b.finished), (a, b)


@pytest.mark.parametrize("lab_name, says", [
    ("down", "cannot reach http://127.0.0.1:"),
    ("wrong-token", "refused the token"),
    ("no-such-type", "has no device type 'no-such-type'"),
])
def test_a_bad_lab_is_a_clear_error_and_exit_2(config, tmp_path, lab_name, says):
    path, env = config
    proc = _rig("run", "--variant", "base", "--lab", lab_name, "--config", str(path),
                "--out", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert f"lab {lab_name}: " in proc.stderr and says in proc.stderr, proc.stderr
    base = results.load(tmp_path / "results.json").variant("base")
    assert base.outcome.value == "infra-error"
    assert f"lab {lab_name}: " in base.errors[0].message and says in base.errors[0].message


def test_a_job_that_never_starts_is_canceled_and_the_others_keep_their_verdicts(config,
                                                                               tmp_path):
    """The offline lab's only device is on a worker that never comes.  Beside the base, a
    variant whose patch set cannot be read: its patch-failed verdict stands."""
    path, env = config
    variants = tmp_path / "variants.toml"
    variants.write_text(path.read_text() + """
[[variants]]
name = "base"
source = "debian-6-1"
base = true

[[variants]]
name = "unreadable"
source = "debian-6-1"
patches = "tests/fixtures/patches/not-a-patch.txt"
""")
    proc = _rig("run", "--lab", "offline", "--config", str(variants), "--out",
                str(tmp_path / "out"), env=env)
    assert proc.returncode == 2
    res = results.load(tmp_path / "out" / "results.json")
    base = res.variant("base")
    assert base.outcome.value == "infra-error"
    assert "lab offline: job" in base.errors[0].message
    assert "never started within 15 s" in base.errors[0].message
    (job,) = base.environment.lab_jobs
    assert job.health == "Canceled" and not job.device
    assert res.variant("unreadable").outcome.value == "patch-failed"
    assert "base: infra-error: lab offline: job" in proc.stdout


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


