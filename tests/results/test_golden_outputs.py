"""The outputs made from one real run against their golden copies (support/golden.py).

The run is fixtures/results/real-4-variants-3-suites.json.gz (four variants, three suites),
cut here to keep the copies short: the umem cells of three regions (a fixed, a regressed and an
unchanged one), two kselftest-mm program runs, rdma-core's MRTest, and the kernel log.
The text report is made from the whole run.
"""

import copy
import gzip
import json
from pathlib import Path

import pytest
from support.golden import matches
from support.paths import FIXTURES

from rig.results import junit, kcidb, report
from rig.results import schema as results
from rig.results.compare import Change, compare

_PATH = FIXTURES / "results" / "real-4-variants-3-suites.json.gz"
REAL = results.Results.from_json(gzip.decompress(_PATH.read_bytes()).decode(), str(_PATH))
REGIONS = {"umem": {"zero-page", "drv-shared-ro", "anon-written"},   # regressed, fixed, same
           "kselftest-mm": {"gup_test-u", "gup_test-L"}, "rdma-core": {"test_mr.MRTest"}}


def _kept(t: results.TestResult) -> bool:
    return t.region in REGIONS[t.suite] or not t.region      # no region: the kernel log


CUT = copy.deepcopy(REAL)
for _v in CUT.variants:
    _v.tests = [t for t in _v.tests if _kept(t)]


def test_the_cut_keeps_a_fix_and_a_regression_of_every_suite_it_has():
    changes = {(c.suite, c.change) for vc in compare(CUT).variants for c in vc.cells}
    assert {("umem", Change.FIXED), ("umem", Change.REGRESSED)} <= changes
    assert {t.suite for v in CUT.variants for t in v.tests} == set(REGIONS)


def test_the_html_report():
    matches("report.html", report.render(CUT))


def test_the_text_report():
    matches("report.txt", report.render_text(REAL))


@pytest.mark.parametrize("variant", ["umem-rfc"])
def test_the_junit_file(variant):
    matches(f"junit-{variant}.xml", junit.to_junit(CUT.variant(variant)))


def test_the_kcidb_document():
    doc = kcidb.export(CUT, "umem_rig", Path("/srv/runs/one"), "https://ci.example.invalid/one/")
    matches("kcidb.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
