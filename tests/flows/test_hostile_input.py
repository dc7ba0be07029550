"""Issue 19, input side: what a series, a guest, a results file or a configuration brings in is
data, never a path, an escape sequence or a crash.  Hostile inputs are made from the real
fixtures (tests/fixtures/results/, thread/, vet/), each changed in the one place an attacker
would change it."""

import gzip
import io
import json
from email.header import Header
from pathlib import Path

import pytest
from support.cli import rig
from support.nights import night
from support.paths import FIXTURES

from rig.core import paths
from rig.core.cache import Cache
from rig.core.model import Outcome, SourceSpec, Variant
from rig.core.progress import Progress
from rig.flows import matrix as run
from rig.flows import vet
from rig.flows.bisect import report as bisect_report
from rig.flows.bisect.search import State, Step
from rig.kernel import patches as patchlib
from rig.results import compare, history, report
from rig.results import schema as results

REAL = FIXTURES / "results" / "real-4-variants.json"
V2 = FIXTURES / "results" / "real-4-variants-3-suites.json.gz"
SYNTHETIC = FIXTURES / "results" / "results-v1.synthetic.json"
# OSC 52 sets the terminal's clipboard (here to "rm -rf ~\n"); CSI 8 m hides what follows.
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"
HIDE = "\x1b[8m"


def write(tmp_path: Path, doc: dict, name: str = "results.json") -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def no_controls(text: str) -> bool:
    return not [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f]


# --- 7: control characters from a series or a guest are printed escaped ----------------------

def hostile_mbox(tmp_path: Path) -> Path:
    """The real one-patch thread with its Subject and author RFC 2047-encoded, carrying OSC 52
    and a hiding CSI, as a list member can send them."""
    text = (FIXTURES / "thread" / "no-cover.mbox").read_text()
    subject = "[PATCH v1] IB/umem: Say why ib_umem_get() checks the range first"
    evil = Header(f"[PATCH v1] IB/umem: Say why{OSC52} ib_umem_get() checks{HIDE} the range",
                  "utf-8").encode()
    author = "umem-rig maintainers"
    assert f"Subject: {subject}\n" in text and f"From: {author} <" in text
    text = text.replace(f"Subject: {subject}\n", f"Subject: {evil}\n", 1)
    text = text.replace(f"From: {author} <",
                        f"From: {Header(author + HIDE, 'utf-8').encode()} <", 1)
    path = tmp_path / "hostile.mbox"
    path.write_text(text)
    return path


def test_an_encoded_subject_reaches_the_vet_summary_escaped(tmp_path):
    req = vet.VetRequest(hostile_mbox(tmp_path), "", None, None, "", ("rig", "vet"))
    vetted = vet.read_series(req, Cache(tmp_path / "cache"))
    assert HIDE in vetted.subject and "\x1b" in vetted.author   # decoded as sent
    doc = results.load(REAL)
    text = vet.summary(compare.compare(doc), "umem-rfc", vetted, "rig vet hostile.mbox")
    assert no_controls(text)
    assert "52;c;cm0gLXJmIH4K\\x07 ib_umem_get() checks\\x1b[8m the range" in text
    assert "From: umem-rig maintainers\\x1b" in text


def test_bisect_log_lines_escape_subjects_and_compiler_messages(tmp_path):
    patches = patchlib.load(hostile_mbox(tmp_path))
    step = Step(1, 1, "s@1", Outcome.BUILD_FAILED, State.SKIP, {}, 6.1,
                f"build-failed: umem.c:231:49: error: {OSC52}undeclared")
    line = bisect_report.step_line(step, patches)
    assert no_controls(line) and "error: \\x1b]52;c;" in line and "checks\\x1b[8m" in line


def test_progress_log_lines_are_escaped():
    stream = io.StringIO()
    with Progress(stream, live=False) as progress:
        progress.log(f"write-if-able: build-failed: umem.c: error: {OSC52}")
    assert no_controls(stream.getvalue()) and "error: \\x1b]52;c;" in stream.getvalue()


def test_rig_report_prints_a_compiler_message_escaped(tmp_path):
    """The headline `rig report` prints carries each failed variant's first error lines (the
    synthetic results hold a real gcc error)."""
    doc = json.loads(SYNTHETIC.read_text())
    wia = next(v for v in doc["variants"] if v["outcome"] == "build-failed")
    wia["errors"][0]["message"] = f"build-failed: {OSC52}{HIDE}all is well"
    wia["errors"][0]["excerpt"] = f"umem.c:231:49: error: {OSC52}\n" + wia["errors"][0]["excerpt"]
    done = rig(tmp_path, "report", str(write(tmp_path, doc)), "--out", str(tmp_path / "out"))
    assert done.returncode in (0, 1, 2) and "Traceback" not in done.stderr, done.stderr
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07" in done.stdout, done.stdout
    assert no_controls(done.stdout + done.stderr)
    assert no_controls((tmp_path / "out" / "report.txt").read_text())


def test_an_error_line_from_input_is_escaped(tmp_path):
    config = tmp_path / "hostile.toml"
    # TOML has no raw ESC: the string's own \\u escape makes one
    config.write_text('[[variants]]\nname = "base\\u001b]52;c;cm0gLXJmIH4K\\u0007"\n'
                      'source = "nowhere"\nbase = true\n')
    done = rig(tmp_path, "build", "--config", str(config))
    assert done.returncode == 2 and done.stderr.startswith("rig: "), done.stderr
    assert no_controls(done.stderr) and "base\\x1b]52;c;" in done.stderr


def test_report_html_links_only_http():
    doc = results.load(REAL)
    jobs = doc.variants[0].environment
    jobs.lab = "lava"
    jobs.lab_jobs = [results.LabJob("lava", "7", "javascript:alert(document.cookie)"),
                     results.LabJob("lava", "8", " JavaScript:alert(1)"),
                     results.LabJob("lava", "9", "data:text/html,<script>alert(1)</script>"),
                     results.LabJob("lava", "10", "https://lava.example.org/scheduler/job/10")]
    page = report.render(doc)
    assert "javascript:" not in page.lower() and 'href="data:' not in page
    assert '<a href="https://lava.example.org/scheduler/job/10">lava #10</a>' in page
    assert "lava #7" in page and "lava #9" in page       # the job is named, just not linked


# --- 3: names from input are never paths ------------------------------------------------------

def renamed(doc: dict, old: str, new: str) -> dict:
    next(v for v in doc["variants"] if v["name"] == old)["name"] = new
    return doc


def test_rig_report_refuses_a_variant_named_to_climb_out(tmp_path):
    """junit/<name>.xml with name "../../escaped" was written two folders above OUT/junit."""
    path = write(tmp_path, renamed(json.loads(REAL.read_text()), "umem-rfc", "../../escaped"))
    done = rig(tmp_path, "report", str(path), "--out", str(tmp_path / "a" / "out"))
    assert done.returncode == 2 and done.stderr.startswith("rig: "), done.stderr
    assert "variants[1].name: '../../escaped' cannot be a name" in done.stderr, done.stderr
    assert not (tmp_path / "a" / "escaped.xml").exists()
    assert not (tmp_path / "a" / "out" / "report.html").exists()    # refused before writing


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", ".hidden"])
def test_results_refuse_variant_and_suite_names_that_are_not_file_names(bad):
    doc = renamed(json.loads(REAL.read_text()), "upstream", bad)
    with pytest.raises(results.ResultsError, match=r"variants\[3\]\.name: .* cannot be a name"):
        results.Results.from_json(json.dumps(doc), "hostile.json")
    doc = json.loads(gzip.decompress(V2.read_bytes()))
    doc["variants"][0]["suites"][1]["name"] = bad
    with pytest.raises(results.ResultsError, match=r"suites\[1\]\.name: .* cannot be a name"):
        results.Results.from_json(json.dumps(doc), "hostile.json")


def test_rig_run_refuses_a_patch_whose_name_climbs_out(tmp_path):
    (tmp_path / "work").mkdir()
    done = rig(tmp_path / "work", "run", "--patch", "..", "--out", str(tmp_path / "work" / "o"))
    assert done.returncode == 2, done.stderr
    assert "--patch ..: variant name '..' cannot be a name" in done.stderr, done.stderr


def test_an_earlier_runs_patches_are_removed_only_inside_out(tmp_path):
    """A variant called ".." made `rm -r OUT/patches/..`: OUT itself."""
    out = tmp_path / "out"
    (out / "patches").mkdir(parents=True)
    (out / "keep").write_text("canary")
    with pytest.raises(paths.OutsideError, match="is not inside"):
        run.save_patches(out, Variant("..", SourceSpec("debian-6-1", "debian"), ()))
    assert (out / "keep").read_text() == "canary"


def test_a_link_where_the_rig_removes_is_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("canary")
    out = tmp_path / "out"
    (out / "patches").mkdir(parents=True)
    (out / "patches" / "umem-rfc").symlink_to(outside)
    run.save_patches(out, Variant("umem-rfc", SourceSpec("debian-6-1", "debian"), ()))
    assert (outside / "keep").read_text() == "canary"
    assert not (out / "patches" / "umem-rfc").is_symlink()


def test_a_series_folder_named_dot_dot_gets_a_plain_candidate_name(tmp_path):
    onto = Variant("base", SourceSpec("debian-6-1", "debian"), ())
    for where in (tmp_path / "..", Path(".hidden.mbox")):
        name = vet.candidate(onto, (), where).name
        assert name and not name.startswith(".") and "/" not in name, name


# --- 8: results and configuration files are validated, one clear error each ---------------------

def test_rig_report_refuses_a_second_base(tmp_path):
    doc = json.loads(REAL.read_text())
    doc["variants"][1]["is_base"] = True       # umem-rfc too: never compared with the base
    done = rig(tmp_path, "report", str(write(tmp_path, doc)))
    assert done.returncode == 2, done.stdout
    assert "2 base variants (base, umem-rfc); a run has exactly one" in done.stderr, done.stderr


def test_results_refuse_no_base_and_a_variant_twice():
    doc = json.loads(REAL.read_text())
    doc["variants"][0]["is_base"] = False
    with pytest.raises(results.ResultsError, match=r"0 base variants \(none\)"):
        results.Results.from_json(json.dumps(doc), "hostile.json")
    doc = renamed(json.loads(REAL.read_text()), "upstream", "umem-rfc")
    with pytest.raises(results.ResultsError, match="variant 'umem-rfc' is there more than once"):
        results.Results.from_json(json.dumps(doc), "hostile.json")


def test_rig_export_refuses_a_nan_duration_and_writes_nothing(tmp_path):
    doc = json.loads(REAL.read_text())
    doc["variants"][1]["tests"][0]["duration"] = float("nan")
    path = write(tmp_path, doc)
    assert '"duration": NaN' in path.read_text()        # what json.dumps writes by default
    done = rig(tmp_path, "export", "--kcidb", str(path))
    assert done.returncode == 2, done.stdout
    assert "not JSON: NaN is not a number JSON has" in done.stderr, done.stderr
    assert not (path.parent / "kcidb.json").exists()


@pytest.mark.parametrize("where, value", [("duration", -1.5), ("duration", 1e300)])
def test_results_refuse_durations_that_are_not_durations(where, value):
    doc = json.loads(REAL.read_text())
    doc["variants"][2]["tests"][3][where] = value
    with pytest.raises(results.ResultsError, match=r"variants\[2\]\.tests\[3\]\.duration: .* "
                       "is not a duration in seconds"):
        results.Results.from_json(json.dumps(doc), "hostile.json")
    doc = json.loads(REAL.read_text())
    doc["variants"][0]["timings"]["boot"] = value
    with pytest.raises(results.ResultsError, match=r"variants\[0\]\.timings\.boot"):
        results.Results.from_json(json.dumps(doc), "hostile.json")


VARIANT = '[[variants]]\nname = "{}"\nsource = "debian-{}"\n'


@pytest.mark.parametrize("toml, says", [
    ("[timeouts]\nbot = 120\n",
     "timeouts: Additional properties are not allowed ('bot' was unexpected)"),
    ("[run]\njobs = -4\n", "run.jobs: -4 is less than the minimum of 0"),
    ("[timeouts]\ntest = -30\n", "timeouts.test: -30 is less than or equal to the minimum of 0"),
    ("[timeouts]\nboot = nan\n", "timeouts.boot: nan is not of type 'number'"),
    ("[timeouts]\nsuite = inf\n", "timeouts.suite: inf is not of type 'number'"),
    ("[run]\nparallel = 0\n", "run.parallel: 0 is less than the minimum of 1"),
    ("[run]\naccel = \"kvm \"\n", "run.accel: 'kvm ' is not one of ['auto', 'kvm', 'tcg']"),
    ("[run]\nsandbox = \"no\"\n", "run.sandbox: 'no' is not of type 'boolean'"),
    ("[[variants]]\nsource = \"debian-6-1\"\nbase = true\n",
     "variants[0]: 'name' is a required property"),
    (VARIANT.format("a", "6-1") + "base = true\n" + VARIANT.format("b", "6-1") + "base = true\n",
     "variants a and b are both marked base = true"),
    (VARIANT.format("a", "6-1") + "base = true\n" + VARIANT.format("a", "6-12"),
     "variant a: named twice"),
    ("[[variants]]\nname = \"../..\"\nsource = \"debian-6-1\"\nbase = true\n",
     "variant '../..' cannot be a name"),
])
def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path, toml, says):
    config = tmp_path / "rig.toml"
    config.write_text(toml)
    done = rig(tmp_path, "build", "--config", str(config))
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(f"rig: config file {config}: ") and says in done.stderr, \
        done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_the_history_page_escapes_test_ids(tmp_path):
    """A kernel's kselftest can name its own tests: the nightly page shows them."""
    d = tmp_path / "nightly"
    d.mkdir()
    for date, like_base in (("2026-11-24", True), ("2026-11-25", False)):
        res = night(date, rfc_like_base=like_base)
        for v in res.variants:
            for t in v.tests:
                t.id = t.id.replace("[zero-page-ro-mr]", f"[zero-page{OSC52}-ro-mr]")
        res.save(d / f"results-{date}.json")
    page = history.render(history.build(*history.load_nights(d)))
    assert "zero-page\\x1b]52;c;cm0gLXJmIH4K\\x07-ro-mr" in page
    assert no_controls(page)


def test_cache_clear_removes_a_planted_link_not_its_target(tmp_path):
    """`rig cache --clear` goes through the same check as a run's removals."""
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "keep").write_text("canary")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "kernel").symlink_to(outside)
    assert Cache(root).clear("kernel") == [root / "kernel"]
    assert (outside / "keep").read_text() == "canary" and not (root / "kernel").is_symlink()
