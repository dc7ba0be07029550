"""KCIDB export, checked with kcidb-io's own validator on real results."""

import copy
import hashlib
import json
import shutil
import subprocess

import jsonschema
import kcidb_io
import pytest
from support.paths import FIXTURES, PROJECT

from rig import cli
from rig.core.model import Outcome, StageError
from rig.flows import config
from rig.results import kcidb
from rig.results import schema as results
from rig.results.schema import LabJob, PatchInfo, VariantResult

REAL = FIXTURES / "results" / "real-4-variants.json"
V1 = FIXTURES / "results" / "results-v1.synthetic.json"
SERIES = PROJECT / "patches" / "umem-write-if-able"
ORIGIN = config.read(None)["kcidb"]["origin"]              # the default setting


def by_path(doc, variant):
    return {t["path"]: t for t in doc["tests"] if t["build_id"].endswith(f"-{variant}-build")}


def test_a_real_four_variant_run_exports_to_a_valid_document():
    doc = kcidb.export(results.load(REAL), ORIGIN)
    kcidb_io.schema.LATEST.validate(doc)
    assert doc["version"] == {"major": 5, "minor": 3}
    assert kcidb_io.schema.LATEST.is_compatible_exactly(doc)
    assert len(doc["checkouts"]) == len(doc["builds"]) == 4
    assert len(doc["tests"]) == 4 * (1 + 64)            # a boot test and 64 guest tests each
    for kind in ("checkouts", "builds", "tests"):
        ids = [o["id"] for o in doc[kind]]
        assert len(set(ids)) == len(ids), kind
        assert all(i.startswith("umem_rig:") for i in ids)


def test_statuses_follow_the_verdicts_and_observations_travel_in_misc():
    doc = kcidb.export(results.load(REAL), ORIGIN)
    base, rfc = by_path(doc, "base"), by_path(doc, "umem-rfc")
    cell = "umem.registration.drv-shared-ro.ro-mr"
    assert base[cell]["status"] == "FAIL" and rfc[cell]["status"] == "PASS"
    assert base[cell]["misc"]["observations"]["errno"] == "EFAULT"
    xfail = base["umem.registration.drv-pfnmap.ro-mr"]
    assert xfail["status"] == "PASS" and xfail["misc"]["verdict"] == "xfailed"
    skipped = next(t for t in base.values() if t["misc"].get("verdict") == "skipped")
    assert skipped["status"] == "SKIP"
    assert base["umem.boot"]["status"] == "PASS"
    assert base["umem.boot"]["environment"]["misc"]["accelerator"] == "tcg"


def test_checkouts_and_builds_say_what_was_built():
    doc = kcidb.export(results.load(REAL), ORIGIN)
    checkout = {c["misc"]["variant"]: c for c in doc["checkouts"]}
    assert checkout["base"]["patchset_hash"] == ""        # KCIDB: "" for no patches
    assert checkout["base"]["tree_name"] == "debian-6-1"
    assert "git_commit_hash" not in checkout["base"]       # a Debian package, not a commit
    assert checkout["write-if-able"]["patchset_hash"] == kcidb.patchset_hash(
        [p.sha256 for p in results.load(REAL).variant("write-if-able").environment.patches])
    build = {b["checkout_id"]: b for b in doc["builds"]}[checkout["upstream"]["id"]]
    assert build["status"] == "PASS" and build["architecture"] == "x86_64"
    assert build["duration"] == pytest.approx(1803.864)


def test_the_patchset_hash_is_kcidbs_shell_definition(tmp_path):
    """sha256sum *.patch | cut -c-64 | sha256sum, on the diffs the rig applies."""
    from rig.kernel import patches as patchlib
    series = patchlib.load(SERIES)
    for p in series:
        (tmp_path / results.patch_file(tmp_path, "v", p.index, p.subject).name).write_bytes(
            p.diff.encode("utf-8", "surrogateescape"))
    shell = subprocess.run("sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64", shell=True,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert kcidb.patchset_hash([p.sha256 for p in series]) == shell.strip()
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(tmp_path.iterdir())] \
        == [p.sha256 for p in series]


def test_patch_files_beside_the_results_are_linked(tmp_path):
    res = results.load(REAL)
    wia = res.variant("write-if-able")
    files = [results.patch_file(tmp_path, "write-if-able", i, p.subject)
             for i, p in enumerate(wia.environment.patches, 1)]
    files[0].parent.mkdir(parents=True)
    for f in files:
        f.write_text("diff\n")
    names = [f.name for f in files]
    doc = kcidb.export(res, ORIGIN, results_dir=tmp_path)
    checkout = {c["misc"]["variant"]: c for c in doc["checkouts"]}
    files = checkout["write-if-able"]["patchset_files"]
    assert [f["name"] for f in files] == names
    assert names[0] == "0001-mm-gup-add-FOLL_WRITE_IF_ABLE.patch"
    assert files[0]["url"] == f"{tmp_path.resolve().as_uri()}/patches/write-if-able/{names[0]}"
    assert "patchset_files" not in checkout["umem-rfc"]     # its files are not there
    published = kcidb.export(res, ORIGIN, results_dir=tmp_path,
                             artifacts_url="https://ci.example/r/7/")
    url = {c["misc"]["variant"]: c for c in published["checkouts"]}["write-if-able"][
        "patchset_files"][1]["url"]
    assert url == f"https://ci.example/r/7/patches/write-if-able/{names[1]}"


def test_a_build_failure_is_a_failed_build_with_the_compiler_error_and_no_tests():
    doc = kcidb.export(results.load(V1), ORIGIN)
    kcidb_io.schema.LATEST.validate(doc)
    checkout = {c["misc"]["variant"]: c for c in doc["checkouts"]}
    build = {b["checkout_id"]: b for b in doc["builds"]}[checkout["write-if-able"]["id"]]
    assert build["status"] == "FAIL"
    assert "'FOLL_WRITE_IF_ABLE' undeclared" in build["log_excerpt"]
    assert not [t for t in doc["tests"] if t["build_id"] == build["id"]]


def test_a_series_that_does_not_apply_is_an_invalid_checkout_without_a_build():
    """The variant here is made up (real results with one variant's outcome changed)."""
    res = results.load(V1)
    v: VariantResult = res.variant("write-if-able")
    v.outcome = Outcome.PATCH_FAILED
    v.timings = {}
    v.errors = [StageError("patch", "patch 2 (IB/umem: ...) does not apply: hunk #1 of "
                                    "drivers/infiniband/core/umem.c (at line 231) does not match")]
    v.environment.patches[0] = PatchInfo("mm/gup: add FOLL_WRITE_IF_ABLE", "0" * 64, "x.mbox",
                                         "20261102.1@umem-rig.invalid")
    doc = kcidb.export(res, ORIGIN)
    checkout = {c["misc"]["variant"]: c for c in doc["checkouts"]}["write-if-able"]
    assert checkout["valid"] is False and "hunk #1" in checkout["log_excerpt"]
    assert checkout["message_id"] == "20261102.1@umem-rig.invalid"
    assert checkout["id"] not in {b["checkout_id"] for b in doc["builds"]}


def test_ids_are_stable_and_the_origin_is_configurable():
    res = results.load(REAL)
    assert kcidb.export(res, ORIGIN) == kcidb.export(res, ORIGIN)
    doc = kcidb.export(res, "my_lab")
    assert {o["origin"] for k in ("checkouts", "builds", "tests") for o in doc[k]} == {"my_lab"}
    with pytest.raises(kcidb.ExportError, match="'umem-rig'.*only lower-case"):
        kcidb.export(res, "umem-rig")


def test_the_validator_is_really_applied():
    doc = copy.deepcopy(kcidb.export(results.load(V1), ORIGIN))
    doc["tests"][0]["path"] = "umem.not a path"
    with pytest.raises(kcidb.ExportError, match="tests/0/path"):
        kcidb.validate(doc)
    with pytest.raises(jsonschema.exceptions.ValidationError):
        kcidb_io.schema.LATEST.validate(doc)


def test_rig_export_writes_the_document_beside_the_results(tmp_path, capsys):
    shutil.copyfile(REAL, tmp_path / "results.json")
    assert cli.main(["export", "--kcidb", str(tmp_path / "results.json")]) == 0
    kcidb_io.schema.LATEST.validate(json.loads((tmp_path / "kcidb.json").read_text()))
    assert capsys.readouterr().out == (f"{tmp_path / 'kcidb.json'}: KCIDB 5.3, 4 checkouts, "
                                       "4 builds, 260 tests\n")
    config_file = tmp_path / "lab.toml"
    config_file.write_text('[kcidb]\norigin = "my_lab"\n')
    assert cli.main(["export", "--kcidb", str(tmp_path / "results.json"), "--config",
                     str(config_file), "-o", str(tmp_path / "lab.json")]) == 0
    doc = json.loads((tmp_path / "lab.json").read_text())
    assert doc["checkouts"][0]["id"].startswith("my_lab:")


@pytest.mark.parametrize("argv, says", [
    (["--origin", "Lab-1"], "KCIDB origin 'Lab-1': only lower-case letters, digits and '_'"),
    (["-o", "/nonexistent/k.json"], "/nonexistent/k.json: cannot write it"),
])
def test_rig_export_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    assert cli.main(["export", "--kcidb", str(REAL), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rig: ") and says in err and len(err.splitlines()) == 1, err


def test_a_lab_boot_says_so_in_the_test_environment():
    """Real results with the base's boot said to be LAVA job 3 (tests/fixtures/lab/job3.json):
    the lab fields are made up here, the job's are real."""
    res = results.load(REAL)
    job = json.loads((FIXTURES / "lab" / "job3.json").read_text())
    base = res.variant("base")
    base.environment.lab = "lavalab"
    base.environment.lab_jobs = [LabJob("lavalab", str(job["id"]), "http://lab/scheduler/job/3",
                                        job["actual_device"], job["state"], job["health"])]
    doc = kcidb.export(res, ORIGIN)
    env = by_path(doc, "base")["umem.boot"]["environment"]
    assert env["comment"].startswith("lab lavalab, QEMU 7.2.22")
    assert env["misc"]["lab_jobs"] == [{"id": "3", "url": "http://lab/scheduler/job/3",
                                        "device": "qemu01"}]
    assert "lab" not in by_path(doc, "umem-rfc")["umem.boot"]["environment"]["misc"]
