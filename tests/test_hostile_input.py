"""Issue 19, input side: what a series, a guest, a results file or a configuration brings in is
data, never a path, an escape sequence or a crash.  Hostile inputs are made from the real
fixtures (tests/fixtures/results/, thread/, vet/), each changed in the one place an attacker
would change it."""

import io
import json
import os
import subprocess
import sys
from email.header import Header
from pathlib import Path

from rig import bisect_report, compare, report, results, vet
from rig import patches as patchlib
from rig.bisection import State, Step
from rig.cache import Cache
from rig.model import Outcome
from rig.progress import Progress

FIXTURES = Path(__file__).parent / "fixtures"
REAL = FIXTURES / "results" / "real-4-variants.json"
SYNTHETIC = FIXTURES / "results" / "results-v1.synthetic.json"
# OSC 52 sets the terminal's clipboard (here to "rm -rf ~\n"); CSI 8 m hides what follows.
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"
HIDE = "\x1b[8m"


def rig(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """The real command line, with a throw-away cache and HOME (as tests/test_cli.py runs it)."""
    env = dict(os.environ, RIG_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"),
               RIG_PROJECT=str(Path(__file__).resolve().parent.parent))
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "rig.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)


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
