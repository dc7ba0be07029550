"""KernelCI KCIDB export: a results document as the checkouts, builds and tests KCIDB holds.

Per variant: a checkout (the source at its commit or package version, plus the patch set), a
build of it, a "umem.boot" test and one test per guest test result, at the path
``umem.<check>.<region>.<access>``.  Statuses and names are data (rig/data/kcidb.toml).  The
document is checked with kcidb-io's own validator before it is handed out, so what the rig
writes is what KCIDB accepts.

Ids are ``<origin>:<run>-<variant>[-...]``, where <run> is a hash of the runs the results hold,
so exporting the same results twice gives the same ids (KCIDB merges resubmissions by id).

The patchset hash is KCIDB's: sha256 over the newline-terminated sha256 of each patch file, in
order (``sha256sum *.patch | cut -c-64 | sha256sum``).  The rig records the sha256 of the diff
it applied, and writes exactly that text as the run's patch files, so the two agree; patch
files are linked only when they are beside the results (older runs did not write them).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kcidb_io

from rig.core import datafiles
from rig.core.model import Outcome
from rig.core.status import RigError
from rig.results.schema import Results, TestResult, VariantResult, patch_file

SCHEMA = {"major": 5, "minor": 3}
EXCERPT = 16384                  # KCIDB's maxLength for a log excerpt
_SHA1 = re.compile(r"[0-9a-f]{40}")
_PATH_PART = re.compile(r"[^A-Za-z0-9_-]")


class ExportError(RigError):
    """A document that KCIDB would refuse; the message says where and why."""


@dataclass(frozen=True)
class Settings:
    origin: str
    architecture: str
    test_root: str
    test_status: dict[str, str]
    boot_status: dict[str, str]


def settings(origin: str) -> Settings:
    """The embedded mapping (rig/data/kcidb.toml) under ORIGIN, the [kcidb] origin setting."""
    if not re.fullmatch(r"[a-z0-9_]+", origin):
        raise ExportError(f"KCIDB origin {origin!r}: only lower-case letters, digits and '_' "
                          "are allowed")
    data = datafiles.toml("kcidb.toml")
    return Settings(origin, data["architecture"], data["test_root"], data["test_status"],
                    data["boot_status"])


def patchset_hash(sha256s: list[str]) -> str:
    """KCIDB's patchset hash of patch files with these sha256 sums; "" for no patches."""
    if not sha256s:
        return ""
    return hashlib.sha256("".join(f"{h}\n" for h in sha256s).encode()).hexdigest()


def _run_id(results: Results) -> str:
    runs = [[r.started, r.host, r.command] for r in results.runs]
    return hashlib.sha256(json.dumps(runs).encode()).hexdigest()[:12]


def _excerpt(*parts: str) -> str:
    text = "\n".join(p for p in parts if p).replace("\0", "")
    return text if len(text) <= EXCERPT else text[:EXCERPT - 20] + "\n[... cut here ...]\n"


def _path(*parts: str) -> str:
    """A dotted KCIDB test path; each part reduced to the characters a path allows."""
    return ".".join(_PATH_PART.sub("_", p) for p in parts if p)


def _drop_empty(obj: dict[str, Any]) -> dict[str, Any]:
    """KCIDB has no nulls: an unknown property is left out, as is an empty string or map."""
    return {k: v for k, v in obj.items() if v is not None and v != "" and v != {}}


class _Exporter:
    def __init__(self, results: Results, cfg: Settings, results_dir: Path | None,
                 artifacts_url: str | None):
        self.results = results
        self.cfg = cfg
        self.run = _run_id(results)
        self.started = results.runs[0].started if results.runs else None
        self.results_dir = results_dir
        self.artifacts_url = (artifacts_url or
                              (results_dir.resolve().as_uri() if results_dir else None))

    def id(self, variant: VariantResult, *more: str) -> str:
        return f"{self.cfg.origin}:" + "-".join((self.run, variant.name, *more))

    def patch_files(self, v: VariantResult) -> list[dict[str, str]]:
        if self.results_dir is None or self.artifacts_url is None:
            return []
        files = [patch_file(self.results_dir, v.name, i, p.subject)
                 for i, p in enumerate(v.environment.patches, 1)]
        if not files or not all(f.is_file() for f in files):
            return []
        base = self.artifacts_url.rstrip("/")
        return [{"name": f.name, "url": f"{base}/{f.relative_to(self.results_dir).as_posix()}"}
                for f in files]

    def checkout(self, v: VariantResult) -> dict[str, Any]:
        env = v.environment
        patches = env.patches
        message_id = env.message_id or next((p.message_id for p in patches if p.message_id), "")
        commit = env.source_version if _SHA1.fullmatch(env.source_version) else None
        first_error = v.errors[0] if v.errors else None
        applied = v.outcome is not Outcome.PATCH_FAILED
        subjects = "; ".join(p.subject for p in patches)
        checkout = _drop_empty({
            "id": self.id(v),
            "origin": self.cfg.origin,
            "tree_name": env.source,
            "git_repository_url": env.repository or None,
            "git_commit_hash": commit,
            "patchset_files": self.patch_files(v) or None,
            "message_id": message_id or None,
            "comment": f"{env.source} {env.source_version}" + (
                f" + {len(patches)} patch{'es' * (len(patches) > 1)}: {subjects}"
                if patches else ""),
            "start_time": self.started,
            "valid": applied,
            "log_excerpt": None if applied or first_error is None
            else _excerpt(first_error.message, first_error.excerpt),
            "misc": _drop_empty({"variant": v.name, "is_base": v.is_base,
                                 "source_version": env.source_version, "series": env.series,
                                 "base_commit_from": env.base_commit_from}),
        })
        # "" is KCIDB's "no patches were applied", not an unknown
        checkout["patchset_hash"] = patchset_hash([p.sha256 for p in patches])
        return checkout

    def build(self, v: VariantResult) -> dict[str, Any] | None:
        if v.outcome is Outcome.PATCH_FAILED:
            return None                      # nothing was built
        env = v.environment
        if v.outcome is Outcome.BUILD_FAILED:
            status = "FAIL"
        else:
            status = "PASS" if "build" in v.timings else "MISS"
        error = next((e for e in v.errors if e.stage in ("build", "config")), None)
        return _drop_empty({
            "id": self.id(v, "build"),
            "origin": self.cfg.origin,
            "checkout_id": self.id(v),
            "start_time": self.started,
            "duration": v.timings.get("build"),
            "architecture": self.cfg.architecture,
            "compiler": env.compiler,
            "config_name": env.config_name or env.config_hash,
            "status": status,
            "log_excerpt": _excerpt(error.message, error.excerpt) if error else None,
            "misc": _drop_empty({"config_hash": env.config_hash,
                                 "kernel_release": env.kernel_release}),
        })

    def environment(self, v: VariantResult) -> dict[str, Any]:
        env = v.environment
        where = f"QEMU {env.qemu_version} ({env.accelerator})" if env.qemu_version else ""
        if env.lab:
            where = f"lab {env.lab}" + (f", {where}" if where else "")
        return _drop_empty({
            "comment": f"{where}, soft-RoCE (rdma_rxe)" if where else None,
            "misc": _drop_empty({"qemu_version": env.qemu_version,
                                 "accelerator": env.accelerator, "image_hash": env.image_hash,
                                 "kernel_release": env.kernel_release, "lab": env.lab,
                                 "lab_jobs": [{"id": j.id, "url": j.url, "device": j.device}
                                              for j in env.lab_jobs] or None}),
        })

    def boot(self, v: VariantResult) -> dict[str, Any] | None:
        status = self.cfg.boot_status.get(v.outcome.value)
        if status is None or "build" not in v.timings:
            return None                      # no kernel to boot
        return _drop_empty({
            "id": self.id(v, "boot"),
            "origin": self.cfg.origin,
            "build_id": self.id(v, "build"),
            "path": _path(self.cfg.test_root, "boot"),
            "status": status,
            "start_time": self.started,
            "duration": v.timings.get("boot"),
            "environment": self.environment(v),
            "log_excerpt": _excerpt(v.console) or None,
            "misc": {"outcome": v.outcome.value},
        })

    def test(self, v: VariantResult, t: TestResult) -> dict[str, Any]:
        parts = (t.check, t.region, t.access) if t.check else (t.id,)
        return _drop_empty({
            "id": self.id(v, t.id),
            "origin": self.cfg.origin,
            "build_id": self.id(v, "build"),
            "path": _path(self.cfg.test_root, *parts),
            "status": self.cfg.test_status[t.verdict.value],
            "start_time": self.started,
            "duration": t.duration,
            "environment": self.environment(v),
            "log_excerpt": _excerpt(t.message, t.details) or None,
            "comment": t.doc,
            "misc": _drop_empty({"verdict": t.verdict.value, "pytest_id": t.id,
                                 "observations": t.observations, "kmsg": t.kmsg or None,
                                 "reruns": [r.value for r in t.reruns] or None,
                                 "flaky": t.flaky or None}),
        })

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": dict(SCHEMA), "checkouts": [], "builds": [],
                               "tests": []}
        for v in self.results.variants:
            doc["checkouts"].append(self.checkout(v))
            if (build := self.build(v)) is None:
                continue
            doc["builds"].append(build)
            if (boot := self.boot(v)) is not None:
                doc["tests"].append(boot)
            doc["tests"] += [self.test(v, t) for t in v.tests]
        return doc


def export(results: Results, origin: str, results_dir: Path | None = None,
           artifacts_url: str | None = None) -> dict[str, Any]:
    """RESULTS as a validated KCIDB document, its ids under ORIGIN.

    RESULTS_DIR is where the results file is (the run's patch files are under it);
    ARTIFACTS_URL is where that directory is published, for the links to the patch files
    (default: a file:// URL of RESULTS_DIR).
    """
    doc = _Exporter(results, settings(origin), results_dir, artifacts_url).document()
    validate(doc)
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Check DOC with kcidb-io's validator, against the schema version it declares."""
    try:
        kcidb_io.schema.LATEST.validate(doc)
    except jsonschema.exceptions.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ExportError(f"not a valid KCIDB document at {where}: {exc.message}") from None
