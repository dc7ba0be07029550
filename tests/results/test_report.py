"""The HTML and text reports, from the committed results document and real parsed JUnit."""

import html.parser

from support.paths import FIXTURES

from rig.core.model import Outcome, StageError
from rig.results import junit, kcidb, report
from rig.results import schema as results
from rig.results.compare import Change, compare
from rig.results.schema import PatchInfo, Results, VariantResult, Verdict

V1 = FIXTURES / "results" / "results-v1.synthetic.json"
HOSTILE = '<script>alert("x")</script>'


class Collect(html.parser.HTMLParser):
    """Tags and attributes, to check the page really is self-contained."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs


def parsed(page):
    c = Collect()
    c.feed(page)
    return c


def hostile_results() -> Results:
    """The committed run with guest and console text replaced by markup, as a hostile guest
    (or an unlucky console) would send it."""
    doc = results.load(V1)
    rfc = doc.variant("umem-rfc")
    odd = junit.parse(FIXTURES / "junit" / "odd.xml")
    rfc.tests += odd                                     # pytest's own rendering of markup
    first = rfc.tests[0]
    first.message = HOSTILE
    first.doc = HOSTILE
    first.observations = {HOSTILE: HOSTILE, "raw_" + HOSTILE: 1}
    first.kmsg = [HOSTILE]
    crashed = junit.host_result("test_coherent_after_rdma_write[zero-page-rw-mr]",
                                Verdict.CRASHED, "the guest died: panic",
                                f"Kernel panic - not syncing: {HOSTILE}\x1b[0m", rfc.tests)
    rfc.tests = [crashed if t.id == crashed.id else t for t in rfc.tests]
    rfc.outcome = Outcome.TESTS_RAN
    rfc.console = HOSTILE
    rfc.environment.patches.append(PatchInfo(HOSTILE, HOSTILE, HOSTILE))
    wia = doc.variant("write-if-able")
    wia.errors.append(StageError("boot", HOSTILE, HOSTILE + "\x07"))
    wia.name = HOSTILE
    return doc


def test_html_has_the_headline_labels_and_markers():
    doc = results.load(V1)
    page = report.render(doc)
    for line in compare(doc).headline():
        assert line.replace("'", "&#39;") in page
    for text in ("▼ REGRESSED", "▲ FIXED", "Δ CHANGED", ">PASS<", ">FAIL<", ">XFAIL<",
                 ">SKIP<", "NOT RUN", "exit status 1: a candidate regressed"):
        assert text in page, text
    # each regressed cell of the matrix links to its observations, which are open
    assert page.count('class="v failed regressed"') == 3
    assert page.count("<details class=\"cell\" id=\"row-") == 64
    assert "drivers/infiniband/core/umem.c:231:49: error" in page    # the build error excerpt


def test_html_is_self_contained():
    page = report.render(results.load(V1))
    tags = parsed(page)
    assert not {"script", "link", "img", "iframe", "object"} & set(tags.tags)
    assert not [v for k, v in tags.attrs if k in ("src", "href") and not v.startswith("#")]
    assert not [k for k, _ in tags.attrs if k.startswith("on")]


def test_everything_from_the_guest_is_escaped():
    page = report.render(hostile_results())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp;" not in page   # no double escape
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; #x1B[31m" in page
    assert "script" not in {t for t in parsed(page).tags}
    assert ">CRASH<" in page and "Kernel panic - not syncing" in page
    assert "\x1b" not in page and "\x07" not in page


def test_text_report_is_short_and_says_what_changed():
    doc = results.load(V1)
    text = report.render_text(doc)
    for line in compare(doc).headline():
        assert f"* {line}\n" in text
    assert "  regressed:\n    coherent_after_cpu_write [anon-untouched ro-mr]: passed -> failed\n" \
           '      rdma_read: "new bytes" -> "old bytes"\n' in text
    assert '    no_side_effect [zero-page ro-mr]: passed\n      page_after: "new" -> "zero"\n' \
        in text
    assert "  fixed:\n    registration_matches_access [drv-shared-ro ro-mr]: failed -> passed" \
        in text
    assert "Reproduce: rig run --variant base --variant umem-rfc --variant write-if-able" in text
    assert "base: 6.1.192 (debian-6.1 6.1.192-2" in text
    assert "[PATCH/RFC] IB/umem: Modernize our get_user_pages() parameters" in text
    assert len(text.splitlines()) < 70


def test_text_report_has_no_control_characters():
    text = report.render_text(hostile_results())
    assert not [c for c in text if ord(c) < 32 and c != "\n"]
    assert HOSTILE in text          # plain text: nothing to escape, nothing rendered


def test_text_report_lists_few_cells_of_a_kind():
    doc = results.load(V1)
    rfc = doc.variant("umem-rfc")
    for t in rfc.tests:
        if t.verdict is Verdict.PASSED:
            t.verdict = Verdict.FAILED
    text = report.render_text(doc)
    n = compare(doc).variants[0].count(Change.REGRESSED)
    assert n > report.TEXT_LIMIT
    assert f"    ... and {n - report.TEXT_LIMIT} more in the HTML report\n" in text
    assert len(text.splitlines()) < 80


def test_a_base_without_verdict_renders():
    doc = results.load(V1)
    base = doc.base
    base.outcome, base.tests = Outcome.HUNG, []
    base.errors = [StageError("boot", "no ready line: console silent for 45 s")]
    page, text = report.render(doc), report.render_text(doc)
    assert "base: hung: no ready line: console silent for 45 s" in page
    assert "umem-rfc vs base: not comparable, base has no verdict" in text
    assert "exit status 2: a variant has no verdict" in page


def test_a_variant_without_the_base_suite_renders_every_cell():
    doc = Results(results.load(V1).runs, [
        VariantResult("base", True, Outcome.OK,
                      tests=junit.parse(FIXTURES / "junit" / "collection-error.xml")),
        VariantResult("umem-rfc", False, Outcome.OK,
                      tests=junit.parse(FIXTURES / "junit" / "rfc.synthetic.xml"))])
    page = report.render(doc)
    assert "not a cell (collection and other errors)" in page
    assert "No module named &#39;pyverbs&#39;" in page
    assert page.count("+ NEW") == 64 * 2          # matrix and observation summaries


def test_a_real_run_with_every_suite_renders_one_report():
    """real-4-variants-3-suites.json.gz: `rig run --suite umem --suite kselftest-mm
    --suite rdma-core` of the four default variants."""
    import gzip

    path = FIXTURES / "results" / "real-4-variants-3-suites.json.gz"
    doc = results.Results.from_json(gzip.decompress(path.read_bytes()).decode(), str(path))
    page, text = report.render(doc), report.render_text(doc)
    for title in ("Matrix: umem: region × access × check",
                  "Matrix: kselftest-mm: program run × test",
                  "Matrix: rdma-core: test class × test"):
        assert f"<h2>{title}</h2>" in page
    for line in compare(doc).headline():
        assert f"* {line}\n" in text
    assert "suite kselftest-mm: linux-source-6.12 6.12.117-1~deb12u1" in text
    assert "    test_qp_ex_rc_atomic_write [test_qpex.QpExTestCase]: failed -> passed\n" in text


def test_a_flaky_test_is_marked_so_in_both_reports_and_kcidb():
    doc = results.load(V1)
    rfc = doc.variant("umem-rfc")
    stale = next(t for t in rfc.tests if t.id == "test_coherent_after_cpu_write[zero-page-ro-mr]")
    stale.reruns = [Verdict.PASSED]
    assert "~ FLAKY" in report.render(doc) and 'class="v flaky' in report.render(doc)
    text = report.render_text(doc)
    assert "1 flaky" in text and "  flaky:\n    coherent_after_cpu_write [zero-page ro-mr]" in text
    [test] = [t for t in kcidb.export(doc, "umem_rig")["tests"]
              if t["misc"].get("pytest_id") == stale.id and t["misc"].get("flaky")]
    assert test["misc"]["reruns"] == ["passed"]
