"""The nightly history page, from nights made of the committed real results document."""

from html.parser import HTMLParser
from pathlib import Path

from support.nights import night

from rig import cli
from rig.core.model import Outcome, StageError
from rig.results import history
from rig.results import schema as results

REGRESSED = "test_coherent_after_cpu_write[zero-page-ro-mr]"


def nightly_dir(tmp_path: Path) -> Path:
    d = tmp_path / "nightly"
    d.mkdir()
    night("2026-11-24", rfc_like_base=True).save(d / "results-2026-11-24.json")
    night("2026-11-25").save(d / "results-2026-11-25.json")
    (d / "2026-11-26").mkdir()
    night("2026-11-26", wia_built=True).save(d / "2026-11-26" / "results.json")
    (d / "results-2026-11-23.json").write_text("{half a file")
    (d / "2026-11-26" / "console").mkdir()           # what else a run leaves: not results
    return d


def test_nights_are_found_in_order_and_bad_files_named(tmp_path):
    d = nightly_dir(tmp_path)
    nights, problems = history.load_nights(d)
    assert [n.label for n in nights] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    bad = d / "results-2026-11-23.json"
    why = "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert problems == [f"{bad}: {why}"]
    assert [n.label for n in history.load_nights(d, last=2)[0]] == ["2026-11-25", "2026-11-26"]


def test_two_runs_in_one_night_are_told_apart_by_time(tmp_path):
    night("2026-11-24").save(tmp_path / "results-a.json")
    later = night("2026-11-24")
    later.runs[0].started = "2026-11-24T14:30:00+00:00"
    later.save(tmp_path / "results-b.json")
    assert [n.label for n in history.load_nights(tmp_path)[0]] == \
        ["2026-11-24 02:00", "2026-11-24 14:30"]


def test_a_verdict_change_is_marked_on_the_night_it_happened(tmp_path):
    h = history.build(history.load_nights(nightly_dir(tmp_path))[0])
    assert [t.variant for t in h.tables] == ["base", "umem-rfc", "write-if-able"]
    rfc = h.tables[1]
    row = next(r for r in rfc.rows if r.id == REGRESSED)
    assert [(c.label, c.was) for c in row.cells] == [("PASS", ""), ("FAIL", "PASS"),
                                                     ("FAIL", "")]
    assert not any(r.changes for r in h.tables[0].rows)      # the base never moved


def test_an_outcome_change_and_the_tests_of_a_kernel_that_did_not_build(tmp_path):
    h = history.build(history.load_nights(nightly_dir(tmp_path))[0])
    wia = h.tables[2]
    assert [(m.label, m.was) for m in wia.status] == [
        ("build-failed", ""), ("build-failed", ""), ("ok", "build-failed")]
    assert wia.status[0].title.startswith("build-failed: drivers/infiniband/core/umem.c:231")
    row = next(r for r in wia.rows if r.id == REGRESSED)
    # no verdict before, so nothing to have changed from on the first night it ran
    assert [(c.label, c.was) for c in row.cells] == [("NOT RUN", ""), ("NOT RUN", ""),
                                                     ("FAIL", "")]


def test_the_change_list_is_newest_first(tmp_path):
    events = history.build(history.load_nights(nightly_dir(tmp_path))[0]).events
    first = events[0]
    assert (first.night, first.variant, first.what) == ("2026-11-26", "write-if-able", "outcome")
    assert (first.was.label, first.was.css, first.now.label, first.now.css) == \
        ("build-failed", "no-verdict", "ok", "ok")
    rfc = [(e.what, e.was.label, e.now.label) for e in events if e.variant == "umem-rfc"]
    assert (REGRESSED, "PASS", "FAIL") in rfc
    assert ("test_registration_matches_access[drv-shared-ro-ro-mr]", "FAIL", "PASS") in rfc
    assert {e.night for e in events if e.variant == "umem-rfc"} == {"2026-11-25"}


def test_a_variant_missing_one_night_and_a_lost_test(tmp_path):
    first, second, third = night("2026-11-24"), night("2026-11-25"), night("2026-11-26")
    second.variants = [v for v in second.variants if v.name != "umem-rfc"]
    lost = next(t for t in third.variant("umem-rfc").tests if t.id == REGRESSED)
    lost.verdict = results.Verdict.LOST
    h = history.build([history.Night(n.runs[0].started[:10], tmp_path, n)
                       for n in (first, second, third)])
    row = next(r for r in h.tables[1].rows if r.id == REGRESSED)
    assert [(c.label, c.was) for c in row.cells] == [("FAIL", ""), ("—", ""), ("LOST", "")]


class Cells(HTMLParser):
    """The text of every td, with its classes."""

    def __init__(self):
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self._in: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._in = [dict(attrs).get("class", ""), ""]

    def handle_data(self, data):
        if self._in is not None:
            self._in[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._in is not None:
            self.cells.append((self._in[0], self._in[1].strip()))
            self._in = None


def test_the_page_marks_changes_in_colour_and_words(tmp_path):
    d = nightly_dir(tmp_path)
    nights, problems = history.load_nights(d)
    nights[0].results.variant("base").tests[0].message = "<script>alert(1)</script>"
    page = history.render(history.build(nights, problems))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = Cells()
    parser.feed(page)
    changed = [(css, text) for css, text in parser.cells if "changed" in css.split()]
    assert ("v failed changed", "FAILwas PASS") in changed
    assert ("v ok changed", "okwas build-failed") in changed
    assert "results-2026-11-23.json: not JSON" in page
    assert "1: a candidate regressed" in page
    assert "http" not in page.replace("http-equiv", "")       # self-contained: nothing to fetch


def run_command(argv) -> int:
    return cli.main(argv)


def test_the_command_writes_the_page_and_lists_the_changes(tmp_path, capsys):
    d = nightly_dir(tmp_path)
    assert run_command(["history", str(d)]) == 0
    out, err = capsys.readouterr()
    assert (d / "history.html").read_text().startswith("<!DOCTYPE html>")
    assert out.startswith("3 nights, 2026-11-24 .. 2026-11-26; ")
    assert "  2026-11-26 write-if-able outcome: build-failed -> ok\n" in out
    assert err.startswith(f"rig: skipped {d / 'results-2026-11-23.json'}: not JSON")


def test_the_command_without_nights(tmp_path, capsys):
    assert run_command(["history", str(tmp_path)]) == 2
    assert "no readable results*.json or */results.json in it" in capsys.readouterr().err
    assert run_command(["history", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"rig: {tmp_path / 'nope'}: not a directory\n"
    assert list(tmp_path.iterdir()) == []


def test_a_variant_without_verdict_has_its_reason_as_hover_text(tmp_path):
    res = night("2026-11-24")
    base = res.variant("base")
    base.outcome, base.tests = Outcome.PANICKED, []
    base.errors = [StageError("boot", "no ready line: kernel panic after 2.0 s under tcg")]
    h = history.build([history.Night("2026-11-24", tmp_path, res)])
    assert h.tables[0].status[0].title == \
        "panicked: no ready line: kernel panic after 2.0 s under tcg"
    assert "2: a variant has no verdict" in history.render(h)
