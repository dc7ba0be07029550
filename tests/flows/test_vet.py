"""`rig vet`: the summary for a reply on the list, and bad input.  The summaries are built on
the synthetic version 1 results (tests/fixtures/results/results-v1.synthetic.json: a model of
the kernels, for formatting); the e2e test vets a real mbox on real kernels."""

import argparse
import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
from support.golden import matches
from support.paths import FIXTURES

from rig import cli
from rig.commands import vet as vet_command
from rig.core.model import Outcome, SourceSpec, StageError, Variant
from rig.core.status import RigError
from rig.core.text import variant_name
from rig.flows import vet
from rig.kernel import patches as patchlib
from rig.kernel import tree
from rig.results import compare, junit
from rig.results import schema as results
from rig.results.schema import Environment, PatchInfo, Results, VariantResult, Verdict

VET = FIXTURES / "vet"
V1 = results.load(FIXTURES / "results" / "results-v1.synthetic.json")
RFC = patchlib.load(VET / "umem-rfc.mbox")
VETTED = vet.Vetted(tuple(RFC), str(VET / "umem-rfc.mbox"),
                    "IB/umem: Pin read-only MRs with the access userspace has",
                    RFC[0].author, "cover.1795701157.git.maintainers@umem-rig.invalid", 1, (1,))
CRASHED = "test_coherent_after_cpu_write[anon-untouched-ro-mr]"


def test_the_mbox_is_the_two_patch_rfc_without_its_cover_letter():
    assert [p.subject for p in RFC] == ["IB/umem: Choose the GUP flags in umem_gup_flags()",
                                        "IB/umem: Don't force write access for read-only MRs"]
    assert RFC[1].prefix == "[PATCH RFC 2/2]"


def test_summary_names_what_the_series_fixed_and_regressed():
    text = vet.summary(compare.compare(V1), "umem-rfc", VETTED, "rig vet umem-rfc.mbox")
    assert text.startswith(
        "Vetted: IB/umem: Pin read-only MRs with the access userspace has (v1)\n"
        "  From: umem-rig maintainers <maintainers@umem-rig.invalid>\n"
        "  Message-Id: <cover.1795701157.git.maintainers@umem-rig.invalid>\n"
        "  Base: debian-6.1 6.1.192-2 (kernel 6.1.192), the rig's base variant\n"
        "\n"
        "Series (2 patches):\n"
        "  [PATCH RFC 1/2] IB/umem: Choose the GUP flags in umem_gup_flags()\n"
        "    From: umem-rig maintainers <maintainers@umem-rig.invalid>\n"
        f"    Message-Id: <{RFC[0].message_id}>\n")
    assert "\nResult: REGRESSION: 2 fixed, 3 regressed, 7 changed, of 64 tests\n" in text
    assert "\nRegressed:\n" \
           "  coherent_after_cpu_write [anon-untouched ro-mr]: passed -> failed\n" \
           '      rdma_read: "new bytes" -> "old bytes"\n' in text
    assert "\nFixed:\n" \
           "  registration_matches_access [drv-shared-ro ro-mr]: failed -> passed\n" \
           '      errno: "EFAULT" -> null\n' \
           "      registered: false -> true\n" in text
    assert "  no_side_effect [zero-page ro-mr]: passed\n" \
           '      page_after: "new" -> "zero"\n' in text
    assert text.index("Regressed:") < text.index("Fixed:") < text.index("Changed")
    assert "\nTested on: debian-6.1 6.1.192-2 (kernel 6.1.192), QEMU 7.2.22 (tcg), " \
           "soft-RoCE (rdma_rxe)\n  onto base; with the series: kernel 6.1.192\n" in text
    assert text.endswith("\nReproduce with umem-rig: rig vet umem-rfc.mbox\n")


def test_a_long_list_points_to_the_report(monkeypatch):
    monkeypatch.setattr(vet, "LIMIT", 2)
    text = vet.summary(compare.compare(V1), "umem-rfc", VETTED, "rig vet x")
    assert "  ... and 1 more in report.html\n" in text       # 3 regressed, 2 shown
    assert "  ... and 5 more in report.html\n" in text       # 7 changed


def test_summary_of_a_series_that_does_not_build():
    text = vet.summary(compare.compare(V1), "write-if-able", VETTED, "rig vet x")
    assert "\nThe kernel with the series does not build: drivers/infiniband/core/umem.c:231:49:" \
           " error: 'FOLL_WRITE_IF_ABLE' undeclared\n" in text
    assert "    231 |                 gup_flags |= FOLL_WRITE_IF_ABLE;\n" in text
    assert "\nWhat was tested: base: 64 tests: 39 passed, 2 failed, 21 skipped, 2 xfailed\n" \
        in text
    assert "with the series: build-failed\n" in text


def not_applying(name: str, tmp_path: Path) -> tuple[Results, list]:
    """The synthetic base results beside a candidate whose patch git apply refused on a copy
    of 6.1's umem.c (a real git apply), recorded as the build stage records it."""
    series = patchlib.load(VET / name)
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "patches" / "tree", tree)
    applied = patchlib.apply(tree, series)
    assert not applied.ok
    cand = VariantResult("cand", False, Outcome.PATCH_FAILED, Environment(
        source="debian-6.1", source_version="6.1.192-2",
        patches=[PatchInfo(p.subject, p.sha256, str(p.origin)) for p in series]),
        errors=[StageError("patch", applied.message, applied.detail)])
    return Results(V1.runs, [V1.variant("base"), cand]), series


def plain(series) -> vet.Vetted:
    """A patch read as a file, not from a thread."""
    return vet.Vetted(tuple(series), str(series[0].origin), series[0].subject, "", "")


def test_summary_names_the_patch_and_hunk_that_do_not_apply(tmp_path):
    res, series = not_applying("stale-2012.patch", tmp_path)
    text = vet.summary(compare.compare(res), "cand", plain(series), "rig vet stale-2012.patch")
    assert "\nThe series does not apply: patch 1 (IB/umem: Don't force write access for " \
           "read-only MRs) does not apply: hunk #1 of drivers/infiniband/core/umem.c " \
           "(at line 160) does not match\n" in text
    assert "\nWhat was tested: base: 64 tests:" in text
    assert "with the series: patch-failed\n" in text


def test_a_patch_for_another_tree_names_the_missing_file(tmp_path):
    res, series = not_applying("other-tree.patch", tmp_path)
    text = vet.summary(compare.compare(res), "cand", plain(series), "rig vet other-tree.patch")
    assert "The series does not apply: patch 1 (hw/rdma: Pin guest MRs read-only when the " \
           "guest asks for it) does not apply: hw/rdma/rdma_backend.c: No such file or " \
           "directory" in text


def test_the_candidate_goes_on_top_of_the_onto_variant():
    src = SourceSpec("debian-6-1", "debian", "linux-source-6.1")
    onto = Variant("base", src, (Path("a.config"),), tuple(RFC[:1]))
    cand = vet.candidate(onto, RFC[1:], VET / "umem-rfc.mbox")
    assert (cand.name, cand.source, cand.fragments) == ("umem-rfc", src, onto.fragments)
    assert cand.patches == tuple(RFC) and cand.series == str(VET / "umem-rfc.mbox")
    assert vet.candidate(onto, RFC, Path("/x/base.patch")).name == "base-candidate"
    assert vet.candidate(onto, RFC, VET).name == "vet"
    assert variant_name("v2 [PATCH] a/b") == "v2__PATCH__a_b"


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.parser().parse_args(argv)


def test_the_reproduce_line():
    args = parse(["vet", "my series.mbox", "--onto", "upstream", "--select", "zero-page"])
    req = vet_command.request(args, None)
    assert vet.reproduce(req, VETTED) == \
        "rig vet 'my series.mbox' --onto upstream --select zero-page"
    # a configured tree is named; a thread's revision and a HEAD base are pinned
    args = parse(["vet", "t.mbox"])
    req = vet_command.request(args, Path("/src/linux"))
    base = tree.Base(SourceSpec("linux", "git", path=Path("/src/linux"), ref="c" * 40),
                     "c" * 40, "v6.1-1-gcccccccccccc", "the tree's HEAD", "")
    vetted = dataclasses.replace(VETTED, revision=3, revisions=(1, 2, 3), base=base)
    assert vet.reproduce(req, vetted) == \
        f"rig vet t.mbox --tree /src/linux --revision 3 --base {'c' * 40}"
    vetted = dataclasses.replace(vetted, base_commit="c" * 12)   # the series names its base
    assert vet.reproduce(req, vetted) == "rig vet t.mbox --tree /src/linux --revision 3"


@pytest.mark.parametrize("argv, says", [
    (["vet"], "give the series to vet: a file or folder, or --msgid MESSAGE-ID"),
    (["vet", "a.mbox", "--msgid", "x@y"], "give the series to vet"),
    (["vet", "a.mbox", "--tree", "/t", "--onto", "upstream"], "--onto and --tree both say"),
])
def test_what_to_vet_and_where_is_one_thing_each(argv, says):
    with pytest.raises(RigError, match=says):
        vet_command.request(parse(argv), None)


@pytest.mark.parametrize("name, problem", [
    ("empty.mbox", "empty file, not a patch"),
    ("garbage.bin", "binary data, not a patch"),
    ("cover-only.mbox", "no patches in it: 1 message, none with a diff"),
    ("escape.patch", "refusing a patch that reaches outside the tree with '..'"),
    ("no-such.mbox", "no such file"),
])
def test_bad_input_is_refused_before_anything_is_written(name, problem, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert cli.main(["vet", str(VET / name), "--out", str(out), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rig: {VET / name}: {problem}"), err
    assert list(tmp_path.iterdir()) == []


def test_summary_when_the_guest_crashed_with_the_series():
    res = copy.deepcopy(V1)
    rfc = res.variant("umem-rfc")
    at = next(i for i, t in enumerate(rfc.tests) if t.id == CRASHED)
    rfc.tests = rfc.tests[:at] + [junit.host_result(
        CRASHED, Verdict.CRASHED, "the guest died: panic", "Kernel panic", rfc.tests)] + [
        junit.host_result(t.id, Verdict.LOST, "never ran", "", rfc.tests)
        for t in rfc.tests[at + 1:]]
    rfc.outcome = Outcome.TESTS_RAN
    text = vet.summary(compare.compare(res), "umem-rfc", VETTED, "rig vet x")
    assert f"\nThe guest crashed in: {CRASHED}\n" in text
    assert "2 fixed, 1 regressed, 4 changed, 14 lost, 15 not-comparable, of 64 tests\n" in text
    assert "  coherent_after_cpu_write [anon-untouched ro-mr]: passed -> crashed\n" in text


def test_the_summary_as_golden():
    matches("vet-summary.txt",
            vet.summary(compare.compare(V1), "umem-rfc", VETTED, "rig vet umem-rfc.mbox"))


def test_a_flaky_cell_is_said_apart_and_not_counted_as_regressed():
    doc = copy.deepcopy(V1)
    stale = next(t for t in doc.variant("umem-rfc").tests
                 if t.id == "test_coherent_after_cpu_write[zero-page-ro-mr]")
    stale.reruns = [Verdict.PASSED]
    text = vet.summary(compare.compare(doc), "umem-rfc", VETTED, "rig vet x")
    assert ", 1 flaky, of 64 tests" in text and "regressed, 7 changed" in text
    flaky = text.split("Flaky (a re-run changed its mind: not counted as fixed or regressed):\n")
    assert flaky[1].startswith("  coherent_after_cpu_write [zero-page ro-mr]: passed -> failed")
