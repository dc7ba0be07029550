"""The results of a run: one versioned JSON document per run, and the merge of shard files.

Document (``"schema": "umem-rig/results"``, ``"version": 2``)::

    {"schema": "umem-rig/results", "version": 2,
     "runs": [{"started", "finished", "rig_version", "host", "command": [argv...]}],
     "variants": [{
        "name", "is_base", "outcome",            # outcome: a rig.core.model.Outcome value
        "environment": {"source", "source_version", "series", "config_hash",
                        "patches": [{"subject", "sha256", "origin", "message_id"}],
                        "qemu_version", "accelerator", "image_hash", "kernel_release",
                        "lab", "lab_jobs": [{"lab", "id", "url", "device", "state",
                                             "health", "submitted", "started", "finished"}],
                        "sandbox", "sandbox_refused": [line...],
                        "build_machinery": [path...],
                        "message_id", "repository", "base_commit_from", "compiler",
                        "config_name"},
        "timings": {stage: seconds},
        "errors": [{"stage", "message", "excerpt"}],
        "console",                               # an excerpt, not the whole log
        "suites": [{"name", "outcome", "origin"}],
        "tests": [{"suite", "id", "check", "region", "access", "verdict", "message",
                   "details", "doc", "observations", "kmsg", "duration",
                   "reruns": [verdict...]}]}]}        # the verdicts of its confirmations

Version 2 added the suites: each test names the suite it belongs to ("umem", "kselftest-mm",
"rdma-core"), and each variant lists the suites it was asked to run with what became of them
(a suite whose tests could not be built has an outcome of its own while the others run).
A test is known by its suite and id together.  Version 1 documents are still read: they had
the umem suite only.

"runs" holds one entry per shard that contributed (one for an unsharded run).  A verdict is
one of Verdict's values; "crashed" and "lost" are added by the host, the others come from the
suite's own report (pytest's, or KTAP's ok / not ok / SKIP / XFAIL).  Observation keys starting "raw_" are volatile (PFNs, addresses): shown, never
compared.  A reader ignores keys it does not know, so fields can be added
without a version bump; removing or changing the meaning of one needs a new version.

rig                    KCIDB                       how
=====================  ==========================  ==========================================
run + variant source   checkout                    tree_name = environment.source,
+ patches                                          git_commit_name = source_version,
                                                   patchset_files = patches (name = subject),
                                                   patchset_hash = sha256 over the patches'
                                                   sha256 lines, start_time = run.started,
                                                   valid = outcome != patch-failed
variant build          build (checkout_id above)   config_name = config_hash, architecture
                                                   x86_64, duration = timings["build"],
                                                   status PASS, FAIL for build-failed, none
                                                   for patch-failed; log_excerpt = the
                                                   build error's excerpt
variant boot           test path "umem.boot"       PASS when tests ran; FAIL for boot-failed,
                                                   panicked, hung; MISS for infra-error;
                                                   log_excerpt = console
TestResult             test path "<suite>.<check>. environment.misc = qemu_version,
                       <region>.<access>"          accelerator, image_hash, kernel_release,
                                                   lab and its jobs' urls and devices;
                                                   duration; misc = observations, doc, kmsg;
                                                   log_excerpt = message + details
 passed                 PASS
 xfailed                PASS                       expected failure; misc.verdict = "xfailed"
 failed, xpassed        FAIL
 crashed                FAIL                       the kernel oopsed/hung in it: faulty code
 error                  ERROR                      the test itself broke
 lost                   MISS                       never ran: the guest had crashed
 skipped                SKIP
 (none)                 DONE                       unused: every rig test states a verdict
=====================  ==========================  ==========================================
=======
rig/results/kcidb.py exports a document to KernelCI's KCIDB (`rig export --kcidb`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rig.core.model import BootEnvironment, BuildEnvironment, Outcome, StageError
from rig.core.status import RigError
from rig.core.text import check_name

SCHEMA = "umem-rig/results"
VERSION = 2
READABLE = (1, 2)                  # versions from_json reads
UMEM = "umem"                      # the suite every version 1 test belongs to
_FOREVER = 30 * 24 * 3600          # no stage of a run takes a month: a longer one is garbage


class ResultsError(RigError):
    """A results document that cannot be read or merged; the message names where and why."""


class Verdict(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"            # a strict xfail that passed: pytest counts it as failed
    CRASHED = "crashed"            # host-added: the guest oopsed, panicked or hung in this test
    LOST = "lost"                  # host-added: never ran because the guest had crashed


@dataclass
class TestResult:
    """One guest test in one variant.

    The umem suite's tests are cells (region x access x check); another suite's tests use
    region for their group (a kselftest program run, an rdma-core test class), check for
    the test's own name and no access.
    """

    __test__ = False               # not a pytest test class, whatever its name says

    id: str                        # unique in its suite: "test_no_side_effect[zero-page-ro-mr]"
    check: str                     # "no_side_effect"
    region: str                    # "zero-page"; "" for what is not a cell (collection error)
    access: str                    # "ro-mr"
    verdict: Verdict
    message: str = ""              # pytest's short message: why it failed, skipped, xfailed
    details: str = ""              # the traceback, or for a crash the console excerpt
    doc: str = ""                  # one line: what the test checks
    observations: dict[str, Any] = field(default_factory=dict)
    kmsg: list[str] = field(default_factory=list)
    duration: float = 0.0
    suite: str = ""                # the suite it belongs to: "umem", "kselftest-mm", ...
    reruns: list[Verdict] = field(default_factory=list)   # its verdicts when run again

    @property
    def flaky(self) -> bool:
        """Whether a re-run on the same kernel gave another verdict."""
        return any(v is not self.verdict for v in self.reruns)

    @property
    def cell(self) -> str:
        return f"{self.region}-{self.access}" if self.access else self.region

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the test across variants: its suite and its id."""
        return self.suite, self.id


PATCHES = "patches"              # OUT/patches/<variant>/: the diffs a run applied, one a file


def patch_file(out: Path, variant: str, index: int, subject: str) -> Path:
    """Where a run writes the INDEX-th patch it applied to VARIANT: exactly the diff it
    applied, so the file's sha256 is the one recorded (a format-patch-like name)."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", subject).strip("-.")[:52].rstrip("-.")
    return out / PATCHES / variant / f"{index:04d}-{slug or 'patch'}.patch"


@dataclass
class PatchInfo:
    subject: str
    sha256: str
    origin: str                    # the file it came from
    message_id: str = ""           # of the mail it came in, without <>


@dataclass
class LabJob:
    """One job a lab ran for a variant (a test that crashes the kernel means one more)."""

    lab: str
    id: str
    url: str
    device: str = ""
    state: str = ""                # the lab's words: Finished, Canceled, ...
    health: str = ""               # Complete, Incomplete, Canceled
    submitted: str = ""            # ISO 8601, as the lab reports them
    started: str = ""
    finished: str = ""


@dataclass
class Environment:
    """What a variant's verdicts depend on, so that a result can be reproduced."""

    source: str = ""               # source name, e.g. "debian-6.1"
    source_version: str = ""       # package version, commit id or tarball hash
    series: str = ""               # the patch set the patches came from
    config_hash: str = ""
    patches: list[PatchInfo] = field(default_factory=list)
    qemu_version: str = ""
    accelerator: str = ""          # "kvm" | "tcg": what the boot really used
    image_hash: str = ""
    kernel_release: str = ""       # uname -r of the booted guest
    lab: str = ""                  # the lab that booted it ("" for a local boot)
    lab_jobs: list[LabJob] = field(default_factory=list)
    sandbox: str = ""              # what the patches were applied and built in
    sandbox_refused: list[str] = field(default_factory=list)   # writes it refused (log lines)
    # files the patches change that run on the host during the build (rig/kernel/machinery.py)
    build_machinery: list[str] = field(default_factory=list)
    message_id: str = ""           # the series' Message-Id: its cover letter's, or its first patch's
    repository: str = ""           # https URL of the git tree's remote, when it has one
    base_commit_from: str = ""     # why source_version is the base: the trailer, or the tree's HEAD
    compiler: str = ""             # e.g. "gcc (Debian 12.2.0-14) 12.2.0"
    config_name: str = ""          # e.g. "tinyconfig + qemu-guest.config, rdma.config"

    def record_build(self, built: BuildEnvironment) -> None:
        """What the build stage reports about itself."""
        self.source_version, self.config_hash = built.source_version, built.config_hash
        self.compiler, self.kernel_release = built.toolchain.gcc, built.kernel_release
        self.sandbox, self.sandbox_refused = built.sandbox, list(built.sandbox_refused)

    def record_boot(self, boot: BootEnvironment | None, kernel_release: str, lab: str,
                    lab_jobs: list[LabJob]) -> None:
        """What the test stage reports about the machine the kernel ran on."""
        if boot is not None:
            self.accelerator, self.qemu_version = boot.accelerator, boot.qemu_version
        self.kernel_release = kernel_release or self.kernel_release
        self.lab, self.lab_jobs = lab, lab_jobs


@dataclass(frozen=True)
class SuiteInfo:
    """One suite a variant was asked to run, and what became of it."""

    name: str
    outcome: Outcome               # OK, TESTS_RAN, BUILD_FAILED (its tests did not build), ...
    origin: str = ""               # where its tests came from, e.g. "linux-source-6.12 6.12.117"

    @property
    def has_verdict(self) -> bool:
        return self.outcome in (Outcome.OK, Outcome.TESTS_RAN)


@dataclass
class VariantResult:
    name: str
    is_base: bool
    outcome: Outcome
    environment: Environment = field(default_factory=Environment)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[StageError] = field(default_factory=list)
    console: str = ""              # console excerpt: the splat, or the tail before a failure
    tests: list[TestResult] = field(default_factory=list)
    suites: list[SuiteInfo] = field(default_factory=list)

    @property
    def has_verdict(self) -> bool:
        """Whether the guest suites ran, so the tests say something about this kernel."""
        return self.outcome in (Outcome.OK, Outcome.TESTS_RAN)

    def suite(self, name: str) -> SuiteInfo | None:
        return next((s for s in self.suites if s.name == name), None)

    def suite_names(self) -> list[str]:
        """The suites asked for, then any that only the tests name, in order."""
        return list(dict.fromkeys([s.name for s in self.suites] +
                                  [t.suite for t in self.tests]))


@dataclass
class RunInfo:
    started: str                   # ISO 8601 with offset
    finished: str
    rig_version: str
    host: str
    command: list[str]


@dataclass
class Results:
    runs: list[RunInfo]
    variants: list[VariantResult]

    @property
    def base(self) -> VariantResult | None:
        return next((v for v in self.variants if v.is_base), None)

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_json(self) -> str:
        doc = {"schema": SCHEMA, "version": VERSION, **asdict(self)}
        # ASCII: a console's stray bytes (lone surrogates) must not make the file unwritable
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "results") -> Results:
        """Read a document; SOURCE names it in errors (usually the file's path)."""
        try:
            data = json.loads(text, parse_constant=_not_json)
        except ValueError as e:        # a JSONDecodeError, or a NaN or Infinity
            raise ResultsError(f"{source}: not JSON: {e}") from None
        doc = _Obj(data, source)
        schema = doc.get("schema", str)
        if schema != SCHEMA:
            raise ResultsError(f"{source}: schema is {schema!r}, not {SCHEMA!r}")
        version = doc.get("version", int)
        if version not in READABLE:
            raise ResultsError(f"{source}: results version {version} is not supported "
                               f"(this rig reads versions {', '.join(map(str, READABLE))})")
        variants = [_variant(o) for o in doc.objs("variants")]
        _one_base(variants, source)
        if version == 1:
            for v in variants:
                _from_version_1(v)
        return cls([_run(o) for o in doc.objs("runs")], variants)

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a document."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)


def load(path: Path) -> Results:
    try:
        text = path.read_text()
    except OSError as e:
        raise ResultsError(f"{path}: cannot read: {e.strerror}") from None
    return Results.from_json(text, str(path))


def merge(parts: Sequence[Results], names: Sequence[str] = ()) -> Results:
    """One run from several shards' results; NAMES (e.g. file paths) label them in errors.

    Every variant must come from exactly one shard, and there is at most one base.
    """
    labels = list(names) or [f"shard {i + 1}" for i in range(len(parts))]
    seen: dict[str, str] = {}
    runs: list[RunInfo] = []
    variants: list[VariantResult] = []
    for label, part in zip(labels, parts, strict=True):
        runs += part.runs
        for v in part.variants:
            if v.name in seen:
                raise ResultsError(f"variant {v.name!r} is in both {seen[v.name]} and {label}")
            seen[v.name] = label
            variants.append(v)
    bases = [v.name for v in variants if v.is_base]
    if len(bases) > 1:
        raise ResultsError(f"more than one base variant: {', '.join(bases)}")
    variants.sort(key=lambda v: not v.is_base)
    return Results(runs, variants)


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not a number JSON has")


def _one_base(variants: list[VariantResult], source: str) -> None:
    """Each name once, and exactly one base: the one every other variant is compared with."""
    names = [v.name for v in variants]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ResultsError(f"{source}: variant {twice[0]!r} is there more than once")
    bases = [v.name for v in variants if v.is_base]
    if len(bases) != 1:
        raise ResultsError(f"{source}: {len(bases)} base variants ({', '.join(bases) or 'none'})"
                           "; a run has exactly one")


_REQUIRED = object()


class _Obj:
    """A JSON object being read, with its place in the document for error messages."""

    def __init__(self, data: object, where: str):
        if not isinstance(data, dict):
            raise ResultsError(f"{where}: expected an object, found {_kind(data)}")
        self.data = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise ResultsError(f"{self.where}: {key!r} is missing")
            return default
        value = self.data[key]
        # bool is an int in Python but not a number in the document
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            raise ResultsError(f"{self.where}.{key}: expected {_names(kind)}, "
                               f"found {_kind(value)}")
        return value

    def obj(self, key: str) -> _Obj:
        return _Obj(self.get(key, dict, {}), f"{self.where}.{key}")

    def objs(self, key: str) -> list[_Obj]:
        return [_Obj(item, f"{self.where}.{key}[{i}]")
                for i, item in enumerate(self.get(key, list, []))]

    def enum(self, key: str, cls: type[enum.Enum]) -> Any:
        value = self.get(key, str)
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ResultsError(f"{self.where}.{key}: {value!r} is not one of {allowed}") from None

    def enums(self, key: str, cls: type[enum.Enum]) -> list[Any]:
        allowed = {m.value: m for m in cls}
        out = []
        for i, item in enumerate(self.strings(key)):
            if item not in allowed:
                raise ResultsError(f"{self.where}.{key}[{i}]: {item!r} is not one of "
                                   f"{', '.join(allowed)}")
            out.append(allowed[item])
        return out

    def strings(self, key: str) -> list[str]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ResultsError(f"{self.where}.{key}[{i}]: expected a string, "
                                   f"found {_kind(item)}")
        return items

    def seconds(self, key: str) -> float:
        value = float(self.get(key, (int, float)))
        if not 0 <= value < _FOREVER:
            raise ResultsError(f"{self.where}.{key}: {value} is not a duration in seconds")
        return value

    def timings(self, key: str) -> dict[str, float]:
        sub = self.obj(key)
        return {k: sub.seconds(k) for k in sub.data}

    def name(self, key: str, optional: bool = False) -> str:
        """A variant's or a suite's name: it becomes a file name (OPTIONAL: or "", none)."""
        value = self.get(key, str)
        return value if optional and not value else check_name(value, f"{self.where}.{key}:", ResultsError)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_KINDS.get(k, k.__name__) for k in _tuple(kind)))


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "a number",
                           float: "a number", bool: "true or false", type(None): "null"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _fields(cls: type, o: _Obj, **readers: Callable[[_Obj, str], Any]) -> Any:
    """Build dataclass CLS from O: string fields unless READERS says otherwise.

    A field without a default must be present; the others may be left out.
    """
    kwargs = {}
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required or f.name in o.data:
            read = readers.get(f.name)
            kwargs[f.name] = read(o, f.name) if read else o.get(f.name, str)
    return cls(**kwargs)


def _run(o: _Obj) -> RunInfo:
    return _fields(RunInfo, o, command=_Obj.strings)


def _from_version_1(v: VariantResult) -> None:
    """A version 1 variant ran the umem suite alone, when it ran at all."""
    for t in v.tests:
        t.suite = UMEM
    if v.has_verdict:
        v.suites = [SuiteInfo(UMEM, v.outcome)]


def _test(o: _Obj) -> TestResult:
    return _fields(TestResult, o, verdict=lambda o, k: o.enum(k, Verdict),
                   observations=lambda o, k: o.get(k, dict), kmsg=_Obj.strings,
                   duration=_Obj.seconds, suite=lambda o, k: o.name(k, optional=True),
                   reruns=lambda o, k: o.enums(k, Verdict))


def _variant(o: _Obj) -> VariantResult:
    return _fields(
        VariantResult, o, name=_Obj.name,
        is_base=lambda o, k: o.get(k, bool),
        outcome=lambda o, k: o.enum(k, Outcome),
        environment=lambda o, k: _fields(
            Environment, o.obj(k), patches=lambda e, k: [_fields(PatchInfo, p) for p in e.objs(k)],
            lab_jobs=lambda e, k: [_fields(LabJob, j) for j in e.objs(k)],
            sandbox_refused=_Obj.strings, build_machinery=_Obj.strings),
        timings=_Obj.timings,
        errors=lambda o, k: [_fields(StageError, e) for e in o.objs(k)],
        tests=lambda o, k: [_test(t) for t in o.objs(k)],
        suites=lambda o, k: [_fields(SuiteInfo, s, name=_Obj.name,
                                     outcome=lambda s, k: s.enum(k, Outcome))
                             for s in o.objs(k)],
    )
