"""The results document: round trip, the committed version-1 file, clear errors, shard merge."""

import json

import pytest
from support.paths import FIXTURES

from rig.core.model import Outcome
from rig.results import junit
from rig.results import schema as results
from rig.results.schema import Results, ResultsError, RunInfo, VariantResult, Verdict

V1 = FIXTURES / "results" / "results-v1.synthetic.json"


def run(host="vm"):
    return RunInfo("2026-11-26T13:40:02+00:00", "2026-11-26T13:46:40+00:00", "0.1.0", host,
                   ["rig", "run"])


def fresh() -> Results:
    base = VariantResult("base", True, Outcome.OK, timings={"boot": 3.8},
                         tests=junit.parse(FIXTURES / "junit" / "base.synthetic.xml"))
    rfc = VariantResult("umem-rfc", False, Outcome.TESTS_RAN,
                        tests=junit.parse(FIXTURES / "junit" / "rfc.synthetic.xml"))
    rfc.tests.append(junit.host_result("test_coherent_after_rdma_write[zero-page-rw-mr]",
                                       Verdict.CRASHED, "the guest died: panic",
                                       "Kernel panic - not syncing: Fatal exception", rfc.tests))
    return Results([run()], [base, rfc])


def test_round_trip():
    doc = fresh()
    text = doc.to_json()
    assert json.loads(text)["schema"] == "umem-rig/results"
    assert json.loads(text)["version"] == 2
    assert Results.from_json(text) == doc


def test_save_and_load(tmp_path):
    path = tmp_path / "results.json"
    fresh().save(path)
    assert results.load(path) == fresh()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_committed_version_1_document_still_loads():
    doc = results.load(V1)
    assert [v.name for v in doc.variants] == ["base", "umem-rfc", "write-if-able"]
    assert doc.base is doc.variants[0]
    assert doc.variant("write-if-able").outcome is Outcome.BUILD_FAILED
    assert not doc.variant("write-if-able").has_verdict
    assert doc.variant("umem-rfc").environment.patches[0].subject.startswith("[PATCH/RFC]")
    assert Results.from_json(doc.to_json()) == doc


def mutated(change) -> str:
    data = json.loads(V1.read_text())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(schema="kcidb"), "schema is 'kcidb', not 'umem-rig/results'"),
    (lambda d: d.update(version=3), "results version 3 is not supported"),
    (lambda d: d["variants"][1].pop("name"), r"results-v1.synthetic.json.variants\[1\]: 'name' is missing"),
    (lambda d: d["variants"][0]["tests"][3].update(verdict="bogus"),
     r"variants\[0\].tests\[3\].verdict: 'bogus' is not one of passed, failed"),
    (lambda d: d["variants"][0].update(outcome="exploded"),
     r"variants\[0\].outcome: 'exploded' is not one of ok, tests-ran"),
    (lambda d: d["variants"][0].update(is_base="yes"),
     r"variants\[0\].is_base: expected true or false, found a string"),
    (lambda d: d["variants"][0]["timings"].update(boot=True),
     r"variants\[0\].timings.boot: expected a number, found true or false"),
    (lambda d: d["variants"][2]["environment"]["patches"][0].pop("sha256"),
     r"variants\[2\].environment.patches\[0\]: 'sha256' is missing"),
    (lambda d: d["variants"][0]["tests"][0].update(kmsg=[1]),
     r"tests\[0\].kmsg\[0\]: expected a string, found a number"),
])
def test_a_broken_document_is_named(change, message):
    with pytest.raises(ResultsError, match=message):
        Results.from_json(mutated(change), "results-v1.synthetic.json")


def test_not_json(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("<html>")
    with pytest.raises(ResultsError, match=f"{bad}: not JSON"):
        results.load(bad)
    with pytest.raises(ResultsError, match="cannot read"):
        results.load(tmp_path / "absent.json")


def test_unknown_keys_are_ignored_within_a_version():
    text = mutated(lambda d: d["variants"][0].update(kcidb_id="umem-rig:1"))
    assert Results.from_json(text) == results.load(V1)


def test_merge_shards():
    whole = results.load(V1)
    shards = [Results([run(f"shard{i}")], [v]) for i, v in enumerate(reversed(whole.variants))]
    merged = results.merge(shards, ["a.json", "b.json", "c.json"])
    assert [v.name for v in merged.variants] == ["base", "write-if-able", "umem-rfc"]
    assert [r.host for r in merged.runs] == ["shard0", "shard1", "shard2"]
    assert merged.variant("umem-rfc") == whole.variant("umem-rfc")


def test_merge_refuses_a_variant_in_two_shards():
    whole = results.load(V1)
    with pytest.raises(ResultsError, match="'umem-rfc' is in both a.json and b.json"):
        results.merge([whole, Results([run()], [whole.variant("umem-rfc")])],
                      ["a.json", "b.json"])


def test_merge_refuses_two_bases():
    whole = results.load(V1)
    other = VariantResult("base-6.12", True, Outcome.OK)
    with pytest.raises(ResultsError, match="more than one base variant: base, base-6.12"):
        results.merge([whole, Results([run()], [other])])


def test_version_2_keeps_suites_and_version_1_is_the_umem_suite():
    doc = fresh()
    for v in doc.variants:
        for t in v.tests:
            t.suite = "umem"
        v.suites = [results.SuiteInfo("umem", v.outcome, "guest_tests 72d6a1647acf"),
                    results.SuiteInfo("kselftest-mm", Outcome.BUILD_FAILED)]
    back = Results.from_json(doc.to_json())
    assert back == doc
    assert back.variant("umem-rfc").suite("kselftest-mm").has_verdict is False
    old = results.load(V1)
    assert {t.suite for v in old.variants for t in v.tests} == {"umem"}
    assert [s.name for s in old.variant("base").suites] == ["umem"]
    assert old.variant("write-if-able").suites == []          # it never ran its tests
