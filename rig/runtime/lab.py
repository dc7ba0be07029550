"""The lab stage: a variant's guest suite run as a job on a LAVA lab instead of a local QEMU.

The kernel, the guest image and an archive of the suite go to the lab's artefact directory
(content-addressed, so each is copied once), which the lab's workers read as file:// or over
http.  The job (templates/lava-job.yaml.j2) boots them on one of the lab's QEMU devices with
rig-init's rig.run= mode: no SSH, the guest unpacks the archive from its second disk and runs
rig-run.sh, which runs the suite and prints the JUnit file on the console between marker
lines.  The rig polls the job, reads its log and makes of it the TestStageResult a local
boot gives.  A job runs the one suite that needs no SSH (its Suite.unattended command: the
umem suite's); other suites are said not to run there.  As in the local stage, a test that
crashes the kernel is recorded as crashed and the suite runs again without it, here as
another job.

Many variants' jobs go to the lab at once (the runner gives each variant its own thread), so
a lab with N devices runs N variants side by side.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import secrets
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from rig.core.model import BootEnvironment, ConsoleEvent, ConsoleReport, Outcome, StageError
from rig.core.progress import Progress
from rig.guest import markers, qemu
from rig.guest.console import scan
from rig.results import junit
from rig.results.schema import LabJob, SuiteInfo, Verdict
from rig.runtime.base import TestRequest, TestStageResult, kernel_log_verdict, pin_splats
from rig.runtime.lava import CANCELED, Devices, Job, LabError, LavaServer
from rig.runtime.lava_log import LINUX, JobOutcome, fill, read_log
from rig.runtime.suites.base import HANG_MARGIN, Limits, Staged, Suite

KINDS = ("lava",)
RUN_DISK = "vdb"                      # the suite archive's disk in the guest (rig.run=vdb)
EXCERPT_LINES = 40
# Beyond the boot and the suite, what a job may spend on downloading the artefacts and on the
# lab's own steps, in seconds; the rig waits that much longer again before it gives up.
JOB_MARGIN = 300
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LabSettings:
    """One [labs.NAME] table of the configuration."""

    name: str
    kind: str                         # "lava"
    url: str                          # the server, e.g. https://lava.example.org/
    device_type: str                  # the lab's QEMU device type, e.g. "qemu"
    artefacts: Path                   # where the rig puts kernels, images and suite archives
    artefacts_url: str                # the same directory as the lab's workers read it
    token_env: str = ""               # the token comes from this environment variable...
    token_file: Path | None = None    # ... or from this file (first line)
    queue_timeout: float = 600        # seconds a job may wait for a device
    poll: float = 5                   # seconds between looks at a running job
    priority: str = "medium"
    visibility: str = "public"

    @classmethod
    def from_table(cls, name: str, table: dict, root: Path) -> LabSettings:
        """The lab NAME from its table; LabError naming the lab and the key if it is wrong."""
        def need(key: str) -> str:
            value = table.get(key)
            if not isinstance(value, str) or not value:
                raise LabError(f"lab {name}: '{key}' is missing (a string) in [labs.{name}]")
            return value

        kind = need("kind")
        if kind not in KINDS:
            raise LabError(f"lab {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if "token" in table:
            raise LabError(f"lab {name}: a token is never written in the configuration; "
                           "name it with token_env or token_file")
        if not table.get("token_env") and not table.get("token_file"):
            raise LabError(f"lab {name}: say where its token is, with token_env (an "
                           "environment variable) or token_file")
        url = need("artefacts_url")
        if not url.startswith(("file:///", "http://", "https://")):
            raise LabError(f"lab {name}: artefacts_url must start with file:///, http:// or "
                           f"https://, not {url!r}")
        token_file = table.get("token_file")
        try:
            return cls(name, kind, need("url"), need("device_type"),
                       root / Path(need("artefacts")).expanduser(), url.rstrip("/") + "/",
                       str(table.get("token_env", "")),
                       (root / Path(token_file).expanduser()) if token_file else None,
                       float(table.get("queue_timeout", 600)), float(table.get("poll", 5)),
                       str(table.get("priority", "medium")),
                       str(table.get("visibility", "public")))
        except (TypeError, ValueError) as e:
            raise LabError(f"lab {name}: {e}") from None

    def token(self) -> str:
        """The API token, from the environment or the file; never from the command line."""
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if value:
                return value
            if not self.token_file:
                raise LabError(f"lab {self.name}: the environment variable {self.token_env} "
                               "(the lab's token) is not set")
        assert self.token_file is not None
        try:
            value = self.token_file.read_text().strip().splitlines()
        except OSError as e:
            raise LabError(f"lab {self.name}: cannot read the token file {self.token_file}: "
                           f"{e.strerror}") from None
        if not value or not value[0].strip():
            raise LabError(f"lab {self.name}: the token file {self.token_file} is empty")
        return value[0].strip()


def settings(name: str, labs: dict, root: Path) -> LabSettings:
    """The lab NAME from the configuration's [labs] tables; LabError if it is not there."""
    if name not in labs or not isinstance(labs[name], dict):
        known = ", ".join(sorted(labs)) or "none"
        raise LabError(f"no lab named {name!r} in the configuration ([labs.{name}]; "
                       f"known: {known})")
    return LabSettings.from_table(name, labs[name], root)


@dataclass(frozen=True)
class JobRequest:
    """What one job needs: the variant's kernel, the image, the suite archive, the limits."""

    variant: str
    kernel_url: str
    image_url: str
    suite_url: str
    nonce: str
    marker_token: str                 # rig/guest/markers.py: in the suite's disk, not the command line
    boot_timeout: float
    silence_timeout: float            # console quiet this long in the suite: hung
    suite_timeout: float
    memory_mb: int = 1024
    cpus: int = 1


class Lab:
    """A LAVA lab the runner sends variants to; run_suite() has run_suite()'s signature."""

    def __init__(self, settings: LabSettings, server: LavaServer | None = None):
        self.settings = settings
        self._server = server
        self._checked: Devices | LabError | None = None

    @property
    def server(self) -> LavaServer:
        if self._server is None:
            self._server = LavaServer(self.settings.name, self.settings.url,
                                      self.settings.token())
        return self._server

    def check(self, progress: Progress | None = None) -> Devices:
        """Reachable, token accepted, device type known with devices; LabError otherwise.

        Asked once (the first failure is said on PROGRESS); later calls give the same answer.
        """
        with _LOCK:
            if self._checked is None:
                try:
                    self._checked = self.server.check(self.settings.device_type)
                except LabError as e:
                    self._checked = e
                    if progress is not None:
                        progress.log(f"rig: {e}")
            if isinstance(self._checked, LabError):
                raise self._checked
            return self._checked

    # -- artefacts -------------------------------------------------------------------------

    def publish(self, src: Path, kind: str, key: str, gz: bool = False) -> str:
        """SRC in the artefact directory under KIND/KEY/ (once), and its URL for the lab.

        GZ: compressed, for the image: a worker hashes what it downloads three times over
        (md5, sha256, sha512), which for the raw 800 MB image took longer than the boot.
        """
        rel = Path(kind) / key / (src.name + ".gz" if gz else src.name)
        dest = self.settings.artefacts / rel
        with _LOCK:
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
                if gz:
                    with open(src, "rb") as fin, gzip.open(tmp, "wb", compresslevel=1) as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
                else:
                    try:
                        os.link(src, tmp)     # the same file system: no copy at all
                    except OSError:
                        shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
        return self.settings.artefacts_url + rel.as_posix()

    def suite_archive(self, suite: Suite, staged: Staged, limits: Limits, deselect: list[str],
                      into: Path, token: str) -> Path:
        """The tar the guest unpacks into /root: the suite's uploads and rig-run.sh, which
        runs the suite's unattended command, its tests marked with the job's TOKEN."""
        job = suite.unattended(staged, limits, deselect, token)
        script = _template("lab-run.sh.j2").render(pytest=job.command, xml=job.junit_xml)
        archive = into / "suite.tar"
        with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
            def add(path: Path, name: str) -> None:
                info = tar.gettarinfo(str(path), name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)

            for local, remote in staged.uploads:     # the archive unpacks into /root
                name = str(Path(remote).relative_to("/root"))
                for path in sorted([local, *local.rglob("*")]) if local.is_dir() else [local]:
                    add(path, name if path == local else f"{name}/{path.relative_to(local)}")
            data = script.encode()
            info = tarfile.TarInfo("rig-run.sh")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        return archive

    # -- one job ---------------------------------------------------------------------------

    def definition(self, req: JobRequest) -> str:
        settings = qemu.Settings.load()
        cmdline = settings.cmdline.format(init=settings.init, nonce=req.nonce)
        cmdline += f" rig.run={RUN_DISK}"
        return _template("lava-job.yaml.j2").render(
            lab=self.settings, req=req, cmdline=cmdline,
            job_timeout=int(req.boot_timeout + req.suite_timeout + JOB_MARGIN),
            queue_timeout=int(self.settings.queue_timeout))

    def run_job(self, req: JobRequest, progress: Progress, who: str) -> JobOutcome:
        """Submit REQ's job, wait for it to end, and read what it printed."""
        server = self.server
        job_id = server.submit(self.definition(req))
        record = LabJob(self.settings.name, str(job_id), server.job_url(job_id))
        progress.log(f"{who}: lab {self.settings.name}: job {job_id} submitted: {record.url}")
        deadline_queue = time.monotonic() + self.settings.queue_timeout + 60
        deadline_run = None
        job = self._poll(job_id)
        while not job.finished_state:
            now = time.monotonic()
            if job.started and deadline_run is None:
                progress.detail(who, f"job {job_id} on {job.device}")
                deadline_run = now + req.boot_timeout + req.suite_timeout + 2 * JOB_MARGIN
            if deadline_run is None and now > deadline_queue:
                server.cancel(job_id)
                fill(record, self._poll(job_id))
                raise _Abandoned(record, self._never_started(job_id))
            if deadline_run is not None and now > deadline_run:
                server.cancel(job_id)
                fill(record, self._poll(job_id))
                raise _Abandoned(record, f"lab {self.settings.name}: job {job_id} did not "
                                 f"finish in time; canceled it ({record.url})")
            time.sleep(self.settings.poll)
            job = self._poll(job_id)
        fill(record, job)
        # Canceled in the queue (LAVA's queue timeout): no device, though LAVA then sets the
        # start time to the end time (go_state_finished in lava_scheduler_app/models.py).
        if job.health == CANCELED and not job.device:
            raise _Abandoned(record, self._never_started(job_id))
        return read_log(record, job, server.log(job_id), req.nonce)

    def _poll(self, job_id: int, patience: float = 60) -> Job:
        """The job's state; a lab that stops answering for a moment (a restart) is waited for."""
        since = time.monotonic()
        while True:
            try:
                return self.server.job(job_id)
            except LabError:
                if time.monotonic() - since > patience:
                    raise
                time.sleep(self.settings.poll)

    def _never_started(self, job_id: int) -> str:
        return (f"lab {self.settings.name}: job {job_id} never started within "
                f"{self.settings.queue_timeout:g} s: no device of type "
                f"{self.settings.device_type!r} took it (devices offline, busy or "
                f"unhealthy); it was canceled")

    # -- the stage -------------------------------------------------------------------------

    def run_tests(self, req: TestRequest, progress: Progress) -> TestStageResult:
        """The unattended suite on the lab, as the local runtime runs it; never raises for
        lab or guest trouble (they are results)."""
        result = TestStageResult(Outcome.OK, lab=self.settings.name)
        # one suite a job: the first that runs unattended; the others need SSH
        chosen = next(((s, st) for s, st in req.suites if _unattended(s)), None)
        for suite, _ in req.suites:
            if chosen is None or suite is not chosen[0]:
                result.suites.append(SuiteInfo(suite.name, Outcome.INFRA_ERROR))
                result.errors.append(StageError(
                    "lab", f"lab {self.settings.name} runs one suite with no SSH "
                    f"({chosen[0].name if chosen else 'none asked for can'}): "
                    f"{suite.name} was not run"))
        if chosen is None:
            result.outcome = Outcome.INFRA_ERROR
            return result
        suite, staged = chosen
        crashed: dict[str, tuple[str, str]] = {}
        kernel_log: list[str] = []            # splats no test owns, as the local runtime keeps them
        try:
            with progress.stage(req.who, "lab"):
                self._jobs(req, suite, staged, result, crashed, kernel_log, progress)
        except LabError as e:
            progress.log(f"{req.who}: {e}")
            result.errors.append(StageError("lab", str(e)))
            result.outcome = Outcome.INFRA_ERROR if not result.tests else Outcome.TESTS_RAN
        except OSError as e:        # the artefact directory: full, read-only, not mounted
            message = f"lab {self.settings.name}: cannot write {self.settings.artefacts}: {e}"
            progress.log(f"{req.who}: {message}")
            result.errors.append(StageError("lab", message))
            result.outcome = Outcome.INFRA_ERROR if not result.tests else Outcome.TESTS_RAN
        result.tests += [suite.host_result(node, Verdict.CRASHED, message, excerpt, result.tests)
                         for node, (message, excerpt) in crashed.items()]
        if crashed and result.outcome is Outcome.OK:
            result.outcome = Outcome.TESTS_RAN
        if result.kernel_release:
            result.tests.append(kernel_log_verdict(kernel_log, suite.name))
        for t in result.tests:
            t.suite = suite.name
        result.suites.insert(0, SuiteInfo(suite.name, result.outcome, staged.origin))
        return result

    def _jobs(self, req: TestRequest, suite: Suite, staged: Staged, result: TestStageResult,
              crashed: dict[str, tuple[str, str]], kernel_log: list[str],
              progress: Progress) -> None:
        """One job, and one more after each test that crashed the kernel."""
        try:
            self.check(progress)
        except LabError as e:
            result.errors.append(StageError("lab", str(e)))
            result.outcome = Outcome.INFRA_ERROR
            return
        boot = req.boot
        kernel_url = self.publish(boot.kernel, "kernel", boot.kernel.parent.name)
        image_url = self.publish(boot.image.path, "image", boot.image.key, gz=True)
        for attempt in range(req.max_crashes + 1):
            work = staged.workdir / f"lab-attempt-{attempt}"
            work.mkdir(parents=True)
            token = markers.new_token()
            archive = self.suite_archive(suite, staged, req.limits, sorted(crashed), work, token)
            suite_url = self.publish(archive, "suite", _sha256(archive))
            job_req = JobRequest(req.who, kernel_url, image_url, suite_url,
                                 secrets.token_hex(8), token, boot.boot_timeout,
                                 req.limits.test + HANG_MARGIN, req.limits.suite,
                                 boot.memory_mb, boot.cpus)
            log = req.console_dir / (f"{req.who}.console.log" if attempt == 0
                                     else f"{req.who}.console.{attempt}.log")
            try:
                out = self.run_job(job_req, progress, req.who)
            except _Abandoned as e:
                result.lab_jobs.append(e.job)
                result.errors.append(StageError("lab", str(e)))
                result.outcome = Outcome.INFRA_ERROR if attempt == 0 else Outcome.TESTS_RAN
                return
            result.lab_jobs.append(out.job)
            log.write_text("".join(line + "\n" for line in out.console))
            outcome = self._judge(out, token, suite, boot.memory_mb, boot.cpus, result,
                                  crashed, kernel_log, first=attempt == 0)
            if outcome is not None:
                result.outcome = outcome
                return
        result.errors.append(StageError("tests", f"gave up after {req.max_crashes} crashes"))
        result.outcome = Outcome.TESTS_RAN

    def _judge(self, out: JobOutcome, token: str, suite: Suite, memory_mb: int, cpus: int,
               result: TestStageResult, crashed: dict[str, tuple[str, str]],
               kernel_log: list[str], first: bool) -> Outcome | None:
        """Fold one job, whose markers carry TOKEN, into RESULT; the final outcome, or None
        to run another job."""
        for stage, seconds in out.timings.items():
            result.timings[stage] = round(result.timings.get(stage, 0.0) + seconds, 3)
        if out.accel:
            result.boot = BootEnvironment(out.accel, out.qemu_version, memory_mb, cpus)
        result.kernel_release = out.kernel_release or result.kernel_release
        reports = scan(list(zip(out.times, out.console, strict=True)))
        panic = next((r for r in reports if r.event is ConsoleEvent.PANIC), None)
        where = f"lab {self.settings.name}, job {out.job.id} on {out.job.device or '?'}"
        if not out.ready:
            return _not_booted(out, panic, where, result, first)
        if out.results_xml is None:
            return _died(out, reports, panic, where, suite.running_test(
                markers.trusted("\n".join(out.console), token)), result, crashed, first)
        try:
            result.tests = junit.parse_string(out.results_xml, f"job {out.job.id}")
        except junit.JUnitError as e:
            result.errors.append(StageError("tests", f"{where}: {e}"))
            return Outcome.TESTS_RAN
        for excerpt in pin_splats(reports, "\n".join(out.console), token, suite, result.tests):
            result.console += excerpt + "\n"
            kernel_log.append(excerpt)
        if out.pytest_status not in (0, 1):
            result.errors.append(StageError(
                "tests", f"pytest exited {out.pytest_status} ({out.job.url})",
                "\n".join(out.console[-EXCERPT_LINES:])))
            return Outcome.TESTS_RAN
        return Outcome.OK if not crashed else Outcome.TESTS_RAN



def _ended(out: JobOutcome) -> str:
    return f"{out.job.health}{': ' + out.lab_error if out.lab_error else ''}"


def _not_booted(out: JobOutcome, panic: ConsoleReport | None, where: str,
                result: TestStageResult, first: bool) -> Outcome:
    """A job whose guest never said it was ready: the lab's failure or the kernel's."""
    tail = "\n".join(out.console[-EXCERPT_LINES:])
    if not any(LINUX.search(line) for line in out.console):
        # QEMU or the lab failed before the kernel ran: not the kernel's verdict.
        result.errors.append(StageError(
            "lab", f"{where}: the kernel never started; the job ended {_ended(out)} "
            f"({out.job.url})", tail))
        return Outcome.INFRA_ERROR if first else Outcome.TESTS_RAN
    what = "kernel panic" if panic else "no ready line"
    result.errors.append(StageError(
        "boot", f"{where}: {what}; the job ended {_ended(out)} ({out.job.url})",
        panic.excerpt if panic else tail))
    result.console += (panic.excerpt if panic else tail) + "\n"
    if not first:
        return Outcome.TESTS_RAN
    return Outcome.PANICKED if panic else Outcome.BOOT_FAILED


def _died(out: JobOutcome, reports: list[ConsoleReport], panic: ConsoleReport | None,
          where: str, node: str | None, result: TestStageResult,
          crashed: dict[str, tuple[str, str]], first: bool) -> Outcome | None:
    """A job that booted but gave no results: the test NODE that was running crashed or
    hung (None: run another job without it), or the results block was bad."""
    if panic:
        # What killed the guest is often an Oops or BUG just before the panic.
        upto = reports[:reports.index(panic) + 1]
        message = f"the guest died: {panic.event.value}"
        excerpt = "\n\n".join(r.excerpt for r in upto)
    else:
        message = (f"hung: the console went quiet and the job ended {out.job.health} "
                   "without the suite's results"
                   f"{': ' + out.lab_error if out.lab_error else ''}")
        excerpt = "\n".join(out.console[-EXCERPT_LINES:])
    result.console += excerpt + "\n"
    if out.malformed:       # the guest's block, not the lab: no verdict from it
        result.errors.append(StageError("lab", f"{where}: {out.results_error}"))
        return Outcome.INFRA_ERROR if first else Outcome.TESTS_RAN
    if out.results_error:
        result.errors.append(StageError("tests", f"{where}: {out.results_error}"))
        return Outcome.TESTS_RAN
    if node is None or node in crashed:
        result.errors.append(StageError(
            "tests", f"{where}: {message}, outside any test ({out.job.url})", excerpt))
        return Outcome.TESTS_RAN
    crashed[node] = (message, excerpt)
    return None


def _unattended(suite: Suite) -> bool:
    """Whether SUITE has an unattended command (its class overrides Suite.unattended)."""
    return type(suite).unattended is not Suite.unattended


class _Abandoned(Exception):
    """A job the rig gave up on (never started, never ended); JOB is what is known of it."""

    def __init__(self, job: LabJob, message: str):
        self.job = job
        super().__init__(message)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.from_string(resources.files("rig").joinpath(f"templates/{name}").read_text())

