"""The lab stage (rig/runtime/lab.py, rig/runtime/lava.py) on real LAVA 2023.01 job logs, and its settings.

tests/fixtures/lab/ holds what a real LAVA lab (tests/support/lavalab.py) answered: job3 ran the base
kernel's whole suite (Complete); job2 never ran the kernel (its QEMU refused an option:
Incomplete); job4 panicked in a test and job5 ran the rest; README.md there says how each
was made.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import json
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import yaml
from support.paths import FIXTURES, PROJECT
from support.tokens import TOKEN, tokened

from rig import cli
from rig.core import datafiles
from rig.core.model import Outcome
from rig.flows import config
from rig.results import report
from rig.results import schema as results
from rig.results.schema import LabJob, Verdict
from rig.runtime import lab, lava, lava_log
from rig.runtime.base import TestStageResult
from rig.runtime.suites.base import Limits, Staged
from rig.runtime.suites.umem import GUEST_DIR, GUEST_KO, UmemSuite, stage_tests

FIXTURES = FIXTURES / "lab"


def _job(n: int) -> tuple[lava.Job, list[lava.LogLine], str]:
    d = json.loads((FIXTURES / f"job{n}.json").read_text())
    job = lava.Job(d["id"], d["state"], d["health"], d["actual_device"] or "",
                   d["submit_time"] or "", d["start_time"] or "", d["end_time"] or "",
                   d["failure_comment"] or "")
    text = (FIXTURES / f"job{n}.log.yaml").read_text()
    nonce = text.split("rig.nonce=", 1)[1].split()[0].strip("'\\\"")
    return job, lava.parse_log(text), nonce


def _read(n: int) -> lava_log.JobOutcome:
    job, log, nonce = _job(n)
    return lava_log.read_log(LabJob("test", str(job.id), f"http://lab/scheduler/job/{job.id}"),
                        job, log, nonce)


def _settings(tmp_path: Path, **over) -> lab.LabSettings:
    table = {"kind": "lava", "url": "http://127.0.0.1:9/", "token_env": "RIG_TEST_TOKEN",
             "device_type": "qemu", "artefacts": str(tmp_path / "art"),
             "artefacts_url": f"file://{tmp_path}/art"}
    table.update(over)
    return lab.LabSettings.from_table("test", table, PROJECT)


def test_a_complete_job_gives_the_console_the_results_and_the_environment():
    out = _read(3)
    assert out.ready
    assert out.pytest_status == 1                       # pytest: some tests failed
    assert out.kernel_release == "6.1.192"
    assert out.qemu_version == "1:7.2+dfsg-7+deb12u18+b3"
    assert out.accel == "tcg"
    assert set(out.timings) == {"queue", "deploy", "boot", "tests"}
    assert all(v > 0 for v in out.timings.values()), out.timings
    assert sum(line.startswith("RIG-RUN-END:") for line in out.console) == 1


def _judge(the_lab, out, result, crashed, first, kernel_log=None):
    """Judge OUT, a real job's log whose markers (captured before they had one) are given
    the job's token, as rig-run.sh's pytest writes them today."""
    out.console = [tokened(line) for line in out.console]
    return the_lab._judge(out, TOKEN, UmemSuite(), 1024, 1, result, crashed,
                          [] if kernel_log is None else kernel_log, first=first)


def test_a_complete_job_becomes_the_suite_result_a_local_boot_gives(tmp_path):
    result, kernel_log = TestStageResult(Outcome.OK), []
    outcome = _judge(lab.Lab(_settings(tmp_path)), _read(3), result, {}, True, kernel_log)
    assert outcome is Outcome.OK and kernel_log == []
    assert len(result.tests) == 64
    verdicts = {t.id: t.verdict for t in result.tests}
    assert verdicts["test_registration[drv-shared-ro-ro-mr]"] is Verdict.FAILED  # 6.1's EFAULT
    assert verdicts["test_registration[drv-pfnmap-ro-mr]"] is Verdict.XFAILED
    assert all(t.observations for t in result.tests if t.region)
    assert result.kernel_release == "6.1.192"
    assert result.boot is not None and result.boot.accelerator == "tcg"


def test_a_job_whose_qemu_never_started_the_kernel_is_an_infra_error_with_qemus_words(
        tmp_path):
    out = _read(2)
    assert not out.ready and out.job.id == "2"
    result = TestStageResult(Outcome.OK)
    outcome = _judge(lab.Lab(_settings(tmp_path)), out, result, {}, first=True)
    assert outcome is Outcome.INFRA_ERROR
    (error,) = result.errors
    assert "the kernel never started; the job ended Incomplete" in error.message
    assert "http://lab/scheduler/job/2" in error.message
    assert "Invalid parameter 'romfile'" in error.excerpt


def test_a_test_that_panics_the_guest_is_crashed_and_the_next_job_runs_the_rest(tmp_path):
    """Job 4 panicked in an RDMA WRITE test (a kernel with BUG_ON in rxe); job 5 ran the
    suite again without that test, as the stage does."""
    the_lab = lab.Lab(_settings(tmp_path))
    result, crashed = TestStageResult(Outcome.OK), {}
    assert _judge(the_lab, _read(4), result, crashed, first=True) is None
    node = "test_umem.py::test_coherent_after_rdma_write[anon-written-rw-mr]"
    assert list(crashed) == [node]
    message, excerpt = crashed[node]
    assert message == "the guest died: panic"
    assert "kernel BUG at drivers/infiniband/sw/rxe/rxe_resp.c:569!" in excerpt
    assert "Kernel panic - not syncing: Fatal exception" in excerpt
    assert _judge(the_lab, _read(5), result, crashed, first=False) is Outcome.TESTS_RAN
    assert [(t.id, t.verdict) for t in result.tests] == [
        ("test_registration[anon-written-rw-mr]", Verdict.PASSED)]


def test_a_results_block_garbled_on_the_console_is_refused_not_misread():
    """Synthetic, from job3: one base64 line of the block changed, as console noise would."""
    job, log, nonce = _job(3)
    at = next(i for i, line in enumerate(log)
              if isinstance(line.msg, str) and line.msg.startswith("RIG-RESULTS-BEGIN:")) + 2
    log[at] = lava.LogLine(log[at].dt, log[at].lvl, "A" + log[at].msg[1:])
    out = lava_log.read_log(LabJob("test", "3", "u"), job, log, nonce)
    assert out.results_xml is None and "sha256 mismatch" in out.results_error


def test_output_of_another_boot_is_not_taken_for_this_ones():
    job, log, _ = _job(3)
    out = lava_log.read_log(LabJob("test", "3", "u"), job, log, "0123456789abcdef")
    assert not out.ready and out.results_xml is None


def test_the_job_definition_boots_the_rigs_kernel_line_with_the_suite_disk(tmp_path):
    req = lab.JobRequest("umem-rfc", "file:///a/bzImage", "file:///a/disk.img.gz",
                         "file:///a/suite.tar", "cafe0123cafe0123", TOKEN, 120, 90, 1200)
    job = yaml.safe_load(lab.Lab(_settings(tmp_path)).definition(req))
    assert job["device_type"] == "qemu" and job["job_name"] == "umem-rig umem-rfc"
    assert job["timeouts"]["queue"] == {"seconds": 600}
    assert job["timeouts"]["connection"] == {"seconds": 90}
    images = job["actions"][0]["deploy"]["images"]
    assert images["rootfs"]["compression"] == "gz"
    cmdline = images["kernel"]["image_arg"]
    assert "init=/sbin/rig-init rig.nonce=cafe0123cafe0123 rig.run=vdb" in cmdline
    assert "oops=panic" in cmdline and "console=ttyS0" in cmdline
    assert images["suite"]["image_arg"].startswith("-drive format=raw,if=virtio,readonly=on")
    assert "-no-reboot" in job["context"]["extra_options"]
    (monitor,) = job["actions"][2]["test"]["monitors"]
    assert monitor["start"] == "RIG-READY:cafe0123cafe0123"
    assert monitor["end"] == "RIG-RUN-END:cafe0123cafe0123"


def test_the_suite_archive_holds_the_suite_the_driver_and_the_run_script(tmp_path):
    module = tmp_path / "umem_test.ko"
    module.write_bytes(b"\x7fELF not really a module")
    tests = stage_tests(PROJECT / "guest_tests", tmp_path / "staged")
    staged = Staged("umem", ((tests, GUEST_DIR), (module, GUEST_KO)), "guest_tests",
                    tmp_path / "work", ("test_registration",))
    archive = lab.Lab(_settings(tmp_path)).suite_archive(
        UmemSuite(), staged, Limits(60, 1200), ["test_umem.py::test_x[a]"], tmp_path, TOKEN)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        script = tar.extractfile("rig-run.sh").read().decode()
        assert {m.uid for m in tar.getmembers()} == {0}
    assert {"guest_tests/test_umem.py", "guest_tests/rig_markers.py",
            "guest_tests/driver/umem_test.ko", "rig-run.sh"} <= names
    assert "--deselect test_umem.py::test_x[a]" in script.replace("'", "")
    assert "-k (test_registration)" in script.replace("'", "")
    assert "RIG-RESULTS-BEGIN:$nonce" in script
    assert f"RIG_MARKER_TOKEN={TOKEN} " in script
    assert TOKEN not in lab.Lab(_settings(tmp_path)).definition(lab.JobRequest(
        "v", "file:///k", "file:///i", "file:///s", "cafe0123cafe0123", TOKEN, 120, 90, 1200))
    assert archive.stat().st_size % 512 == 0               # a whole number of disk sectors


def test_publishing_links_once_and_compresses_the_image(tmp_path):
    src = tmp_path / "disk.img"
    src.write_bytes(b"\0" * 65536)
    settings = _settings(tmp_path)
    the_lab = lab.Lab(settings)
    url = the_lab.publish(src, "image", "k1", gz=True)
    assert url == f"file://{tmp_path}/art/image/k1/disk.img.gz"
    assert (settings.artefacts / "image/k1/disk.img.gz").stat().st_size < 1024
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    the_lab.publish(kernel, "kernel", "k2")
    assert (settings.artefacts / "kernel/k2/bzImage").stat().st_ino == kernel.stat().st_ino


@pytest.mark.parametrize("over, says", [
    ({"token": "abc"}, "a token is never written in the configuration"),
    ({"kind": "jenkins"}, "kind 'jenkins' is not one of lava"),
    ({"token_env": ""}, "say where its token is"),
    ({"artefacts_url": "ftp://x/"}, "artefacts_url must start with"),
    ({"device_type": ""}, "'device_type' is missing"),
])
def test_bad_lab_settings_name_the_lab_and_the_key(tmp_path, over, says):
    with pytest.raises(lava.LabError, match="^lab test: ") as e:
        _settings(tmp_path, **over)
    assert says in str(e.value)


def test_the_token_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RIG_TEST_TOKEN", raising=False)
    with pytest.raises(lava.LabError, match="RIG_TEST_TOKEN .* is not set"):
        _settings(tmp_path).token()
    monkeypatch.setenv("RIG_TEST_TOKEN", "sekrit\n")
    assert _settings(tmp_path).token() == "sekrit"
    (tmp_path / "tok").write_text("from-file\n")
    assert _settings(tmp_path, token_env="", token_file=str(tmp_path / "tok")).token() == \
        "from-file"
    (tmp_path / "empty").write_text("")
    with pytest.raises(lava.LabError, match="is empty"):
        _settings(tmp_path, token_env="", token_file=str(tmp_path / "empty")).token()


def test_a_lab_nobody_listens_on_is_named_as_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]       # bound, never listening: connections are refused
        server = lava.LavaServer("down", f"http://127.0.0.1:{port}/", "t", timeout=5)
        with pytest.raises(lava.LabError, match=rf"^lab down: cannot reach "
                                                rf"http://127.0.0.1:{port}/: .*refused"):
            server.check("qemu")


def test_an_unknown_lab_is_a_configuration_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[labs.real]\nkind = "lava"\n')
    with pytest.raises(config.ConfigFileError, match="no lab named 'nightly'.*known: real"):
        config.load(cfg, lab="nightly")


def test_lab_jobs_round_trip_through_results_json_and_show_in_the_html_report():
    """Synthetic: a real four-variant results file with lab jobs written into it."""
    res = results.load(FIXTURES.parent / "results" / "real-4-variants.json")
    for i, v in enumerate(res.variants):
        v.environment.lab = "nightly"
        v.environment.lab_jobs = [LabJob("nightly", str(40 + i),
                                         f"https://lava.example/scheduler/job/{40 + i}",
                                         f"qemu0{i}", "Finished", "Complete")]
    again = results.Results.from_json(res.to_json())
    assert again.variants[1].environment.lab_jobs == res.variants[1].environment.lab_jobs
    html = report.render(again)
    assert ('<a href="https://lava.example/scheduler/job/40">nightly #40</a> on qemu00 '
            '(Complete)') in html
    assert "lab job" not in report.render(results.load(
        FIXTURES.parent / "results" / "real-4-variants.json"))


@pytest.mark.parametrize("argv", [["run"], ["vet", "series.mbox"], ["bisect", "series"]])
def test_the_matrix_commands_take_a_lab_by_name(argv):
    assert cli.parse([*argv, "--lab", "nightly"]).lab == "nightly"


def _with_block(data: bytes) -> tuple[lava.Job, list[lava.LogLine], str]:
    """Job 3's real log with its results block replaced by DATA (base64, the sha256 of DATA
    on the begin line, as a guest that made it would print them)."""
    job, log, nonce = _job(3)
    begin = next(i for i, line in enumerate(log) if isinstance(line.msg, str)
                 and line.msg.startswith("RIG-RESULTS-BEGIN:"))
    end = next(i for i, line in enumerate(log) if isinstance(line.msg, str)
               and line.msg.startswith("RIG-RESULTS-END:"))
    first, last = log[begin], log[end]
    head = first.msg.rsplit("sha256=", 1)[0] + f"sha256={hashlib.sha256(data).hexdigest()}"
    text = base64.encodebytes(data).decode().splitlines()
    block = [lava.LogLine(first.dt, "target", line) for line in text]
    return job, [*log[:begin], lava.LogLine(first.dt, first.lvl, head), *block, last,
                 *log[end + 1:]], nonce


def _real_xml() -> bytes:
    """The JUnit file job 3's guest sent, as it sent it (gzip)."""
    out = _read(3)
    return out.results_xml.encode()


@pytest.mark.parametrize("make, says", [
    (lambda xml: gzip.compress(xml)[:-200], "malformed: its gzip data is cut short"),
    (lambda xml: xml, "malformed: not gzip data"),
    (lambda xml: gzip.compress(b"\0" * (65 << 20)), "unpacks to more than 67108864 bytes"),
], ids=["truncated", "not-gzip", "bomb"])
def test_a_malformed_results_block_is_the_variants_infra_error_with_the_reason(
        tmp_path, make, says):
    """Job 3's real log with its block truncated, not gzip, or a gzip bomb (65 MiB of zeros
    in a 65 KiB block), each with a sha256 that matches: the variant gets an infra error
    saying what was wrong, nothing raises, and another variant's job keeps its results."""
    job, log, nonce = _with_block(make(_real_xml()))
    out = lava_log.read_log(LabJob("test", "3", "u"), job, log, nonce)
    assert out.results_xml is None and says in out.results_error
    the_lab = lab.Lab(_settings(tmp_path))
    result = TestStageResult(Outcome.OK)
    assert _judge(the_lab, out, result, {}, True) is Outcome.INFRA_ERROR
    assert [(e.stage, says in e.message) for e in result.errors] == [("lab", True)]
    other = TestStageResult(Outcome.OK)
    assert _judge(the_lab, _read(3), other, {}, True) is Outcome.OK and len(other.tests) == 64


def test_a_results_block_past_its_cap_is_not_kept(monkeypatch):
    job, log, nonce = _with_block(gzip.compress(_real_xml()))
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: {
        "block_bytes": 1000, "results_bytes": 1 << 20})
    out = lava_log.read_log(LabJob("test", "3", "u"), job, log, nonce)
    assert out.results_xml is None
    assert "results block on the console is more than 1000 bytes" in out.results_error


def test_a_marker_the_kernel_printed_in_a_job_is_not_believed(tmp_path):
    """Job 4's real log with the kernel printing, just before its BUG, the marker of a test
    that never ran: the crash stays on the test that was running."""
    out = _read(4)
    out.console = [tokened(line) for line in out.console]
    at = next(i for i, line in enumerate(out.console) if "cut here" in line)
    out.console.insert(at, "[   30.000000] umem-rig: test start test_umem.py::test_innocent")
    out.times.insert(at, out.times[at])
    crashed = {}
    assert lab.Lab(_settings(tmp_path))._judge(out, TOKEN, UmemSuite(), 1024, 1,
                                               TestStageResult(Outcome.OK), crashed, [],
                                               first=True) is None
    assert list(crashed) == ["test_umem.py::test_coherent_after_rdma_write[anon-written-rw-mr]"]


class _LabLog(http.server.BaseHTTPRequestHandler):
    """A lab's REST API on 127.0.0.1 that answers a job's log request with BODY."""

    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def lab_serving():
    """lab_serving(body) -> a LavaServer whose job logs are BODY, over real HTTP."""
    servers = []

    def start(body: bytes) -> lava.LavaServer:
        handler = type("Handler", (_LabLog,), {"body": body})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return lava.LavaServer("test", f"http://127.0.0.1:{httpd.server_port}/", "t", timeout=10)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_a_job_log_past_the_cap_is_refused_unread(lab_serving, monkeypatch):
    """Job 3's real log and the same with the guest's console spam after it: the first is
    read whole, the second refused, read no further than the cap."""
    real = (FIXTURES / "job3.log.yaml").read_bytes()
    cap = len(real) + 1000
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: {"log_bytes": cap})
    assert len(lab_serving(real).log(3)) == len(lava.parse_log(real.decode()))
    spam = b'- {"dt": "2026-01-01T00:00:00", "lvl": "target", "msg": "' + b"x" * 200 + b'"}\n'
    with pytest.raises(lava.LabError, match=rf"job 3's log is more than {cap} bytes"):
        lab_serving(real + spam * 1000).log(3)
