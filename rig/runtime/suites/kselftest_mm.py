"""The kselftest-mm suite: the kernel's own GUP and COW selftests (cow, gup_longterm, gup_test).

Built on the host from one kernel tree the rig caches, statically (the guest's libc is not the
host's), once per tree and toolchain: every variant runs the same binaries, so they compare
kernels and nothing else.  A newer tree's tests run on an older kernel and skip what it lacks.

In the guest each run's program writes its KTAP output to /dev/kmsg (kselftest.h makes stdout
line-buffered, so every line is one kernel log record, logged before the test goes on).  The
serial console therefore carries every line out as it is printed, even from a guest that
dies: the host reads the verdicts from the console log, and the last "[RUN]" line without a
result names the test that crashed or hung the kernel.  Between the rig's "run start" and
"run end" lines, anything else on the console is the kernel's log during that run.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import shlex
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rig.core import datafiles, proc
from rig.core.cache import Cache, digest
from rig.core.model import SourceSpec, StageError
from rig.guest import markers
from rig.guest.console import Patterns
from rig.guest.machine import Guest
from rig.kernel import sources
from rig.kernel.build import toolchain
from rig.results.schema import TestResult, Verdict
from rig.runtime.crashes import Stops
from rig.runtime.suites import ktap
from rig.runtime.suites.base import (
    Limits,
    Staged,
    StageRequest,
    Suite,
    SuiteError,
    SuiteReport,
    reserve_hugepages,
    run_step,
)

NAME = "kselftest-mm"
GUEST_DIR = "/root/kselftest-mm"
MARK = "umem-rig: run"               # as markers.trusted() gives the markers with the token
_MARKER = re.compile(rf"{MARK} (?P<kind>start|end) {NAME}:(?P<run>\S+)(?: status=(?P<status>-?\d+))?")
_RUN_LINE = re.compile(r"^\[(?P<tag>[A-Z]+)\] (?P<name>.+)$")
KSFT_SKIP = 4                        # kselftest.h: the program skipped as a whole
CONSOLE_WAIT = 15.0                  # seconds for the end marker to reach the host


@dataclass(frozen=True)
class Run:
    name: str
    argv: tuple[str, ...]
    cwd: str
    doc: str
    tag: str = "RUN"        # the "[TAG] name" line a program prints before each test
    tmp: str = ""           # a guest folder mounted on /tmp for this run alone ("": /tmp)


@dataclass(frozen=True)
class Recipe:
    dirs: tuple[str, ...]
    cflags: tuple[str, ...]
    ldlibs: tuple[str, ...]
    programs: dict[str, tuple[str, ...]]
    libs: dict[str, tuple[str, ...]]
    runs: tuple[Run, ...]
    hugepages: int
    setup: str

    @classmethod
    def load(cls, text: str | None = None) -> Recipe:
        if text is None:
            text = datafiles.text("kselftest-mm.toml")
        data = tomllib.loads(text)
        return cls(tuple(data["dirs"]), tuple(data["cflags"]), tuple(data["ldlibs"]),
                   {p: tuple(srcs) for p, srcs in data["programs"].items()},
                   {p: tuple(libs) for p, libs in data.get("libs", {}).items()},
                   tuple(Run(r["name"], tuple(r["argv"]), r["cwd"], r.get("doc", ""),
                             r.get("tag", "RUN"), r.get("tmp", ""))
                         for r in data["runs"]),
                   int(data["hugepages"]), data["setup"])


def libc() -> str:
    """The host libc's version: a static binary carries it."""
    return proc.first_line(["ldd", "--version"])


def build(recipe: Recipe, tree: Path, out: Path, log: Path, work: Path) -> None:
    """Compile the recipe's programs from TREE into OUT, in the scratch folder WORK;
    SuiteError with the first errors."""
    selftests = next((tree / d for d in recipe.dirs if (tree / d).is_dir()), None)
    if selftests is None:
        raise SuiteError(f"{tree} has none of {', '.join(recipe.dirs)}")
    # the uapi headers of the tree the tests come from (the host's may be older), made
    # in a scratch O= folder: the cached tree stays pristine
    _step(["make", "-s", "-C", str(tree), f"O={work / 'obj'}", "headers"], log,
          "make headers")
    # what the selftests' check_config.sh writes beside the sources (its name since 7.3,
    # and before): no liburing
    for header in ("local_config.h_gen", "local_config.h"):
        (work / header).write_text("")
    for program, wanted in recipe.programs.items():
        if not (selftests / wanted[0]).is_file():
            continue            # newer than this tree: its runs skip (KselftestMM.run)
        srcs = [next((a for a in s.split("|") if (selftests / a).is_file()), s)
                for s in wanted]
        missing = [s for s in srcs if not (selftests / s).is_file()]
        if missing:
            raise SuiteError(f"{selftests} has no {', '.join(missing)} "
                             f"(needed for {program})")
        # from the sources' folder, by relative names, as their Makefile does: __FILE__
        # names files the tests create in their working folder (gup_longterm's)
        # as the Makefile and lib.mk include: kselftest.h is in the selftests' own folder
        # (7.x includes it by that path), tools/include/uapi after the tree's uapi
        _step(["gcc", *recipe.cflags, "-I", str(work), "-I", str(tree),
               "-I", str(tree / "tools" / "testing" / "selftests"),
               "-isystem", str(work / "obj" / "usr" / "include"),
               "-isystem", str(tree / "tools" / "include" / "uapi"), *srcs,
               "-o", str(out / program), *recipe.ldlibs, *recipe.libs.get(program, ())],
              log, f"building {program}",
              cwd=selftests)


def _step(cmd: list[str], log: Path, what: str, cwd: Path | None = None) -> None:
    try:
        proc.run(cmd, what, log=log, cwd=cwd)
    except proc.CommandFailed as e:
        raise SuiteError(e.detailed()) from None


def ensure_built(spec: SourceSpec, cache: Cache, recipe: Recipe,
                 log=print) -> tuple[Path, str, bool]:
    """(the cached programs' folder, where they came from, cache hit) for the tree SPEC."""
    try:
        tree = sources.prepare(spec, cache)
    except sources.SourceError as exc:
        raise SuiteError(f"{NAME}: source {spec.name}: {exc}") from None
    origin = f"{spec.package or spec.name} {tree.version}"
    # build() and _step() are how they are built: a change to them is a new build
    key = digest(NAME, spec.kind, tree.version, recipe.dirs, recipe.cflags, recipe.ldlibs,
                 recipe.programs, recipe.libs, inspect.getsource(build),
                 inspect.getsource(_step), toolchain(), libc())
    with cache.lock("suite", key):
        entry = cache.lookup("suite", key)
        if entry is not None:
            return entry / "bin", origin, True
        log(f"{NAME}: building {', '.join(recipe.programs)} from {origin}")
        logs = cache.root / "logs" / key[:16]
        logs.mkdir(parents=True, exist_ok=True)
        build_log = logs / f"{NAME}.build.log"
        build_log.write_text("")
        with cache.publish("suite", key) as out, cache.scratch(NAME) as work:
            (out / "bin").mkdir()
            build(recipe, tree.tree, out / "bin", build_log, work)
            shutil.copy2(build_log, out / "build.log")
            (out / "meta.json").write_text(json.dumps(
                {"suite": NAME, "source": spec.name, "version": tree.version,
                 "programs": sorted(p.name for p in (out / "bin").iterdir())}, indent=1))
    return cache.path("suite", key) / "bin", origin, False


def segment(console: str, run: str) -> tuple[str, int | None, bool]:
    """RUN's part of one boot's console, without printk timestamps: (text, its exit status,
    whether it ended).  Empty if it never started."""
    stamp = _timestamp()
    lines: list[str] = []
    inside, ended, status = False, False, None
    for raw in console.splitlines():
        line = stamp.sub("", raw.rstrip("\r"))
        m = _MARKER.search(line)
        if m and m["run"] == run:
            if m["kind"] == "start":
                inside, lines = True, []
            elif inside:
                ended, status = True, int(m["status"]) if m["status"] else None
                break
            continue
        if inside:
            lines.append(line)
    return "\n".join(lines), status, ended


def results(run: Run, text: str, status: int | None, ended: bool) -> list[TestResult]:
    """One run's results from its part of the console; an error result where the program
    did not report every planned test (it crashed, bailed out or was killed)."""
    report = ktap.parse(text)
    out: list[TestResult] = []
    seen: dict[str, int] = {}
    for line in report.results:
        # not by the description: that often says how it went ("Leak from parent into child")
        named = test_name(line.diagnostics, run.tag)
        name = named or f"test {line.number}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name} #{seen[name]}"
        said = line.reason if line.verdict in (Verdict.SKIPPED, Verdict.XFAILED) else \
            line.description
        # 7.x prints the test's name on its result line, what happened on a line before
        by_name = bool(said) and said == named
        if by_name:
            said = _last_said(line.diagnostics, run.tag) or said
        result = "" if by_name else line.description
        out.append(TestResult(
            f"{run.name}: {name}", name, run.name, "", line.verdict,
            said or line.reason, "\n".join(line.diagnostics), run.doc,
            {"result": result} if result else {}, line.other, suite=NAME))
    if report.cut:
        out.append(TestResult(f"{run.name}: (output)", "", run.name, "", Verdict.ERROR,
                              f"{run.name}: {report.cut}", "", run.doc, suite=NAME))
    if not ended:
        return out
    planned = report.plan if report.plan is not None else len(out)
    skipped_all = status == KSFT_SKIP and all(t.verdict is Verdict.SKIPPED for t in out)
    if not skipped_all and (len(out) < planned or (not out and status)):
        why = f"Bail out! {report.bail_out}" if report.bail_out else \
            f"exit status {status}"
        out.append(TestResult(
            run.name, "", run.name, "", Verdict.ERROR,
            f"{run.name} reported {len(out)} of {planned} planned tests ({why})",
            "\n".join(report.trailing), run.doc, suite=NAME))
    return out


def test_name(diagnostics: list[str], tag: str = "RUN") -> str:
    """The test a result line belongs to: the last "[TAG] ..." line before it, if any (cow
    and gup_longterm print "[RUN]", mkdirty "[INFO]"; a program that prints neither has its
    tests known by number)."""
    for line in reversed(diagnostics):
        if name := _tagged(line, tag):
            return name
    return ""


def _tagged(line: str, tag: str) -> str:
    """The name on LINE if it is a "[TAG] name" line, else ""."""
    m = _RUN_LINE.match(line)
    return m["name"] if m and m["tag"] == tag else ""


def _last_said(diagnostics: list[str], tag: str) -> str:
    """The last line a test printed after its "[TAG] name" line, if any."""
    last = diagnostics[-1] if diagnostics else ""
    return "" if _tagged(last, tag) else last


def program(run: Run) -> str:
    """RUN's program line in the guest, from its working folder, /tmp its own if it asks."""
    line = " ".join(shlex.quote(a) for a in (f"{GUEST_DIR}/{run.argv[0]}", *run.argv[1:]))
    cd = f"mkdir -p {shlex.quote(run.cwd)} && cd {shlex.quote(run.cwd)}"
    if not run.tmp:
        return f"{cd} && {line}"
    # a mount namespace of its own: the guest's /tmp stays as it is for every other run
    tmp = shlex.quote(run.tmp)
    inner = f"mount --bind {tmp} /tmp && {cd} && exec {line}"
    return f"mkdir -p {tmp} && unshare --mount --propagation private sh -c {shlex.quote(inner)}"


def command(run: Run, token: str) -> str:
    """One run in the guest, its output and stderr to the kernel log between two markers
    with the boot's TOKEN."""
    mark = f"{markers.prefix(token)}run"
    return (f"echo '{mark} start {NAME}:{run.name}' > /dev/kmsg && "
            f"{{ ( {program(run)} ) > /dev/kmsg 2>&1; "
            f"echo \"{mark} end {NAME}:{run.name} status=$?\" > /dev/kmsg; }}")


class KselftestMM(Suite):
    name = NAME

    def __init__(self, recipe: Recipe | None = None):
        self.recipe = recipe or Recipe.load()

    def validate(self, select: tuple[str, ...]) -> None:
        self.runs(select)

    def runs(self, select: tuple[str, ...]) -> tuple[Run, ...]:
        known = {r.name for r in self.recipe.runs}
        unknown = [s for s in select if s not in known]
        if unknown:
            raise SuiteError(f"{NAME} has no run named {', '.join(unknown)} "
                             f"(runs: {', '.join(sorted(known))})")
        return tuple(r for r in self.recipe.runs if not select or r.name in select)

    def stage(self, req: StageRequest) -> Staged:
        self.validate(req.select)
        name = req.settings.get("source")
        spec = req.sources.get(name) if isinstance(name, str) else None
        if spec is None:
            raise SuiteError(f"[suites.{NAME}] source = {name!r} is not one of the "
                             f"configuration's sources ({', '.join(req.sources)})")
        binaries, origin, hit = ensure_built(spec, req.cache, self.recipe, req.log)
        return Staged(self.name, ((binaries, GUEST_DIR),),
                      f"{origin}: {self.recipe.dirs[0]}", req.scratch / self.name, req.select,
                      cache_hit=hit)

    def run(self, guest: Guest, staged: Staged, skip: frozenset[str], limits: Limits,
            stopped: Stops | None = None) -> SuiteReport:
        report = SuiteReport()
        for setup in (reserve_hugepages(guest, self.recipe.hugepages, limits),
                      run_step(guest, self.recipe.setup, limits)):
            if setup.status:
                report.errors.append(StageError("tests", f"set-up exited {setup.status}",
                                                (setup.stdout + setup.stderr)[-3000:]))
        built = {p.name for p in staged.uploads[0][0].iterdir()} if staged.uploads else None
        for run in self.runs(staged.select):
            if any(key == run.name or key.startswith(f"{run.name}: ") for key in skip):
                continue    # it crashed the kernel once; it cannot be resumed mid-way
            if built is not None and run.argv[0] not in built:
                report.tests.append(TestResult(
                    run.name, "", run.name, "", Verdict.SKIPPED,
                    f"{run.argv[0]} is not in the selftests of {staged.origin}", "",
                    run.doc, suite=NAME))
                continue
            run_step(guest, command(run, guest.marker_token), limits)
            text, status, ended = _await_end(guest, run)
            report.tests += results(run, text, status, ended)
            if not ended:
                report.errors.append(StageError(
                    "tests", f"{run.name}'s end marker never reached the console"))
        return report

    def select_for(self, test: TestResult) -> str:
        return test.region             # a program run: its tests run together

    def running_test(self, console: str) -> str | None:
        run = _open_run(console, self.recipe.runs)
        if run is None:
            return None
        text, _, _ = segment(console, run.name)
        report = ktap.parse(text)
        pending = test_name(report.trailing, run.tag)
        if not pending and report.plan is not None and len(report.results) < report.plan:
            pending = f"test {len(report.results) + 1}"
        return f"{run.name}: {pending}" if pending else run.name

    def salvage(self, console: str) -> list[TestResult]:
        run = _open_run(console, self.recipe.runs)
        if run is None:
            return []
        text, _, _ = segment(console, run.name)
        done = results(run, text, None, False)
        planned = ktap.parse(text).plan
        if planned is not None and planned > len(done) + 1:
            done.append(TestResult(
                f"{run.name}: (the rest)", "", run.name, "", Verdict.LOST,
                f"{planned - len(done) - 1} of {planned} planned tests never ran: "
                "the guest died", "", run.doc, suite=NAME))
        return done

    def test_id(self, key: str) -> str:
        return key

    def host_result(self, key: str, verdict: Verdict, message: str, details: str,
                    known: list[TestResult]) -> TestResult:
        run, _, name = key.partition(": ")
        doc = next((r.doc for r in self.recipe.runs if r.name == run), "")
        return TestResult(key, name, run, "", verdict, message, details, doc, suite=NAME)


def _open_run(console: str, runs: tuple[Run, ...]) -> Run | None:
    """The run whose start marker has no end marker in CONSOLE."""
    stamp = _timestamp()
    open_run = None
    for raw in console.splitlines():
        m = _MARKER.search(stamp.sub("", raw))
        if m:
            open_run = m["run"] if m["kind"] == "start" else None
    return next((r for r in runs if r.name == open_run), None)


@functools.cache
def _timestamp() -> re.Pattern[str]:
    """printk's timestamp prefix on a console line."""
    return Patterns.load().timestamp


def _await_end(guest: Guest, run: Run) -> tuple[str, int | None, bool]:
    """RUN's console part once its end marker is in the log (the console reader may lag)."""
    deadline = time.monotonic() + CONSOLE_WAIT
    while True:
        found = segment(markers.trusted(guest.console_log.read_text(errors="replace"),
                                        guest.marker_token), run.name)
        if found[2] or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
