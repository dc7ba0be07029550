"""Bisection logic driven by recorded step results (fixtures/bisect/steps.synthetic.json), the summary
and result document, git ranges as series, and an end-to-end bisection of series-6."""

import argparse
import copy
import io
import json
import math
import os
import re
import shutil
import subprocess

import pytest
from support.golden import matches
from support.paths import FIXTURES

from rig import cli
from rig.commands import bisect as bisect_command
from rig.core.cache import Cache
from rig.core.model import Outcome, SourceSpec, Variant
from rig.core.progress import Progress
from rig.core.status import ExitStatus
from rig.flows import config
from rig.flows.bisect import executor as bisect
from rig.flows.bisect import report as bisect_report
from rig.flows.bisect.executor import Plan
from rig.flows.bisect.search import BisectError, Bisection, BuildBisection, Found, State
from rig.flows.matrix import Runner
from rig.kernel import patches as patchlib
from rig.kernel import sources
from rig.kernel.sources import SourceError
from rig.results import schema as results

FIXTURES = FIXTURES / "bisect"
STEPS = results.load(FIXTURES / "steps.synthetic.json")
SERIES6 = patchlib.load(FIXTURES / "series-6")
FLIPPED = "test_coherent_after_cpu_write[zero-page-ro-mr]"
# the tests whose verdicts differ between the base and the RFC in the recordings
DIFFERING = sorted(
    t.id for t in STEPS.variant("before").tests
    if t.verdict is not next(a for a in STEPS.variant("after").tests if a.id == t.id).verdict)


def recorded(kind: str, name: str):
    run = copy.copy(STEPS.variant(kind))     # the logic only reads a run
    run.name = name
    return run


def drive(n, kind_at, tests=(), retries=0) -> Bisection:
    """Run a bisection of N patches where KIND_AT(k, attempt) names the recorded result."""
    b = Bisection(n, tests, retries)
    while b.current is not None:
        k = b.current
        b.feed(recorded(kind_at(k, b.attempt), f"s@{k}.{b.attempt}"))
        assert len(b.steps) < 4 * n + 10, "the bisection does not end"
    return b


def flip_at(p, special=None):
    """Before patch P the base's verdicts, from P on the RFC's; SPECIAL maps some k to
    another kind, or to a list of kinds for its first, second... run."""
    special = special or {}

    def kind(k, attempt):
        if k in special:
            s = special[k]
            return s[min(attempt, len(s)) - 1] if isinstance(s, list) else s
        return "after" if k >= p else "before"
    return kind


def ks(b: Bisection) -> list[int]:
    return [s.k for s in b.steps]


def test_the_recordings_differ_in_a_handful_of_tests():
    assert FLIPPED in DIFFERING and 3 <= len(DIFFERING) < 20


@pytest.mark.parametrize("p", range(1, 7))
def test_first_flip_at_every_position_of_six(p):
    b = drive(6, flip_at(p))
    assert b.answer.found is Found.EXACT and b.answer.first == b.answer.last == p
    assert ks(b)[:2] == [0, 6]
    assert b.runs_beyond_ends <= math.ceil(math.log2(6)) + 1 == b.bound
    assert sorted(b.tests) == DIFFERING
    assert b.current is None


def test_the_bound_holds_for_every_flip_of_every_length_up_to_40():
    for n in range(1, 41):
        for p in range(1, n + 1):
            b = drive(n, flip_at(p))
            assert (b.answer.found, b.answer.first) == (Found.EXACT, p), (n, p)
            assert b.runs_beyond_ends <= math.ceil(math.log2(n)), (n, p)


def test_steps_halve_the_range():
    b = drive(6, flip_at(4))
    assert ks(b) == [0, 6, 3, 4]
    assert [s.state for s in b.steps] == [State.BEFORE, State.AFTER, State.BEFORE, State.AFTER]
    assert (b.lo, b.hi) == (3, 4)


def test_a_step_that_does_not_build_is_skipped_for_its_neighbour():
    b = drive(6, flip_at(5, {3: "build-failed"}))
    assert ks(b) == [0, 6, 3, 4, 5]
    assert b.steps[2].state is State.SKIP and "FOLL_WRITE_IF_ABLE" in b.steps[2].reason
    assert b.skipped == {3: b.steps[2].reason}
    assert (b.answer.found, b.answer.first) == (Found.EXACT, 5)


def test_a_skip_below_the_flip_tries_the_other_side():
    b = drive(6, flip_at(2, {3: "panicked"}))
    assert ks(b) == [0, 6, 3, 4, 2, 1]
    assert b.steps[2].reason.startswith("panicked: no ready line: kernel panic")
    assert (b.answer.found, b.answer.first) == (Found.EXACT, 2)


def test_a_flip_hidden_by_a_skip_is_a_range():
    b = drive(6, flip_at(4, {3: "build-failed"}))
    assert ks(b) == [0, 6, 3, 4, 2]
    assert (b.answer.found, b.answer.first, b.answer.last) == (Found.RANGE, 3, 4)
    assert "one of patches 3..4 of 6: step k=3 could not be tested" in b.answer.message


def test_every_middle_step_skipped():
    b = drive(6, flip_at(6, {k: "build-failed" for k in range(1, 6)}))
    assert sorted(ks(b)[2:]) == [1, 2, 3, 4, 5]
    assert (b.answer.found, b.answer.first, b.answer.last) == (Found.RANGE, 1, 6)


def test_a_chosen_test_the_guest_never_ran_is_a_skip():
    b = drive(6, flip_at(4, {3: "crashed"}))
    assert b.steps[2].state is State.SKIP
    assert FLIPPED in b.steps[2].reason and "lost" in b.steps[2].reason
    assert b.steps[2].verdicts[FLIPPED] == "lost"


def test_tests_flipping_at_different_patches_give_the_first():
    kind = flip_at(5, {2: "mixed", 3: "mixed", 4: "mixed"})
    assert drive(6, kind).answer.first == 2
    only = drive(6, kind, tests=[FLIPPED])
    assert (only.answer.found, only.answer.first, only.tests) == (Found.EXACT, 5, [FLIPPED])


def test_a_flaky_step_counts_once_its_verdicts_repeat():
    b = drive(6, flip_at(4, {4: ["mixed", "after", "after"]}), retries=2)
    assert (b.answer.found, b.answer.first) == (Found.EXACT, 4)
    at4 = [s for s in b.steps if s.k == 4]
    assert [(s.attempt, s.state) for s in at4] == [(1, State.AGAIN), (2, State.AGAIN),
                                                  (3, State.AFTER)]
    # every other step ran twice: its verdicts had to repeat
    assert all(len([s for s in b.steps if s.k == k]) == 2 for k in (0, 6, 3))


def test_a_step_that_never_repeats_is_flaky_and_skipped():
    b = drive(6, flip_at(4, {4: ["mixed", "after"]}), retries=1)
    flaky = [s for s in b.steps if s.k == 4][-1]
    assert flaky.state is State.SKIP
    assert flaky.reason == f"flaky: no verdicts repeated in 2 runs; varying: {FLIPPED}"
    assert (b.answer.found, b.answer.first, b.answer.last) == (Found.RANGE, 4, 5)


def test_a_failed_build_is_not_retried():
    b = drive(6, flip_at(5, {3: "build-failed"}), retries=2)
    assert [s.attempt for s in b.steps if s.k == 3] == [1]


def test_a_boot_failure_is_retried_and_may_pass():
    b = drive(6, flip_at(4, {3: ["panicked", "before", "before"]}), retries=2)
    assert [s.state for s in b.steps if s.k == 3] == [State.AGAIN, State.AGAIN, State.BEFORE]
    assert b.answer.first == 4


def test_a_base_without_verdicts_ends_it():
    b = drive(6, flip_at(3, {0: "panicked"}))
    assert ks(b) == [0] and b.current is None
    assert b.answer.found is Found.FAILED
    assert b.answer.message.startswith("cannot bisect: the base (s@0.1) has no verdicts: "
                                       "panicked: no ready line")


def test_a_full_series_that_does_not_build_ends_it():
    b = drive(6, flip_at(3, {6: "build-failed"}))
    assert ks(b) == [0, 6] and b.answer.found is Found.FAILED
    assert "the full series (s@6.1) has no verdicts: build-failed" in b.answer.message


def test_flaky_ends_are_named():
    b = drive(6, flip_at(3, {0: ["before", "mixed"]}), retries=1)
    assert b.answer.found is Found.FAILED
    # no tests chosen yet: the base's whole suite has to repeat
    assert "the base (s@0.2) has no verdicts: flaky: no verdicts repeated in 2 runs; varying: " \
        "test_registration_matches_access[drv-shared-ro-ro-mr]" in b.answer.message
    assert b.answer.message.endswith("and 4 more; choose the tests to judge by")


def test_ends_that_agree_leave_nothing_to_bisect():
    b = drive(6, lambda k, a: "before")
    assert (ks(b), b.answer.found, b.tests) == ([0, 6], Found.NOTHING, [])
    assert "no test's verdict differs" in b.answer.message
    chosen = drive(6, lambda k, a: "mixed" if k else "before", tests=[FLIPPED])
    assert chosen.answer.found is Found.NOTHING
    assert "the chosen tests have the same verdicts" in chosen.answer.message


def test_an_unknown_chosen_test_is_named():
    b = drive(6, flip_at(3), tests=["test_nonesuch[x]"])
    assert b.answer.found is Found.FAILED
    assert "not observed: test_nonesuch[x] not in its results" in b.answer.message


def test_one_patch():
    b = drive(1, flip_at(1))
    assert (ks(b), b.answer.found, b.answer.first, b.runs_beyond_ends) == \
        ([0, 1], Found.EXACT, 1, 0)


def test_misuse():
    with pytest.raises(BisectError, match="no patches"):
        Bisection(0)
    with pytest.raises(BisectError, match="retries"):
        Bisection(3, retries=-1)
    b = drive(2, flip_at(1))
    with pytest.raises(BisectError, match="over"):
        b.feed(recorded("before", "late"))


def test_summary_names_the_patch_with_the_evidence():
    b = drive(6, flip_at(5, {3: "build-failed"}))
    text = bisect_report.summary(b, SERIES6, "series-6", "rig bisect tests/fixtures/bisect/series-6")
    assert "First patch that changes the verdicts: 5/6\n" \
           "  [PATCH 5/6] IB/umem: Don't force write access for read-only MRs\n" \
           "  From: umem-rig maintainers <maintainers@umem-rig.invalid>\n" in text
    assert f"Message-Id: <{SERIES6[4].message_id}>" in text
    assert "with patches 1..4 (s@4.1) -> with patches 1..5 (s@5.1):" in text
    assert f"  * {FLIPPED}: passed -> failed\n" \
           '      rdma_read: "new bytes" -> "old bytes"\n' in text
    assert "  k=3 (up to 3/6 IB/umem: Take the GUP flags from umem_gup_flags()): build-failed, " \
           "skip [6.1 s] (build-failed: drivers/infiniband/core/umem.c:231:49: error: " \
           "'FOLL_WRITE_IF_ABLE' undeclared)\n" in text
    assert "  k=5 (up to 5/6 IB/umem: Don't force write access for read-only MRs): ok, after " \
           "[53.8 s]: 8 tests: 5 passed, 3 failed\n" in text
    assert "Steps: 3 test run(s) beyond the two ends (at most 4 without skips or retries)" in text
    assert text.endswith("Reproduce: rig bisect tests/fixtures/bisect/series-6\n")


def test_summary_of_a_range_lists_the_suspects():
    b = drive(6, flip_at(4, {3: "build-failed"}))
    text = bisect_report.summary(b, SERIES6, "series-6", "rig bisect x")
    assert "one of 3..4 of 6 (skipped steps hide which):\n" \
           "  3/6 IB/umem: Take the GUP flags from umem_gup_flags()  [skipped: build-failed: " \
           in text
    assert "  4/6 IB/umem: Add umem_gup_flags()\n" in text
    assert "with patches 1..2 (s@2.1) -> with patches 1..4 (s@4.1):" in text


def test_summary_when_nothing_could_be_bisected():
    b = drive(6, flip_at(3, {0: "panicked"}))
    text = bisect_report.summary(b, SERIES6, "series-6", "rig bisect x")
    assert "\nCannot bisect: the base (s@0.1) has no verdicts: panicked" in text
    assert "Evidence" not in text


def test_the_result_document():
    b = drive(6, flip_at(5, {3: "build-failed"}))
    plan = Plan(Variant("series-6", SourceSpec("debian-6-1", "debian", "linux-source-6.1"),
                        (), tuple(SERIES6), "tests/fixtures/bisect/series-6"))
    doc = json.loads(json.dumps(bisect_report.document(b, SERIES6, plan.variant, 0, "6.1.192-2")))
    assert doc["schema"] == "umem-rig/bisect" and doc["version"] == 1
    assert doc["result"] == {"found": "exact", "first": 5, "last": 5,
                             "message": "patch 5 of 6 is the first that changes the chosen "
                                        "tests' verdicts"}
    assert [s["k"] for s in doc["steps"]] == [0, 6, 3, 4, 5]
    assert doc["steps"][2]["outcome"] == "build-failed" and doc["steps"][2]["state"] == "skip"
    assert doc["steps"][4]["verdicts"][FLIPPED] == "failed"
    assert doc["series"]["patches"][4]["sha256"] == SERIES6[4].sha256
    assert (doc["runs_beyond_ends"], doc["bound"]) == (3, 4)


def test_plan_steps_keep_the_onto_patches():
    onto = Variant("onto", SourceSpec("debian-6-1", "debian", "linux-source-6.1"), (),
                   tuple(SERIES6[:2]))
    plan = Plan(Variant("cand", onto.source, (), onto.patches + tuple(SERIES6[2:])), 2)
    assert len(plan.series) == 4
    assert plan.at(0).patches == tuple(SERIES6[:2]) and plan.at(0).name == "cand@0"
    assert plan.at(3, 2).patches == tuple(SERIES6[:5]) and plan.at(3, 2).name == "cand@3.run2"


# ---------------------------------------------------------------------------------------------
# git ranges


def git(repo, *args):
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_AUTHOR_NAME="A",
               GIT_AUTHOR_EMAIL="a@x", GIT_COMMITTER_NAME="A", GIT_COMMITTER_EMAIL="a@x")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "linux"
    (r / "mm").mkdir(parents=True)
    git(tmp_path, "init", "-q", "-b", "main", str(r))
    for i in range(4):
        (r / "mm" / "gup.c").write_text("".join(f"line {j}\n" for j in range(i + 1)))
        git(r, "add", ".")
        git(r, "commit", "-q", "-m", f"mm/gup: step {i}")
        git(r, "tag", f"t{i}")
    return r


def test_a_git_range_becomes_a_source_and_a_series(repo, tmp_path):
    source, series = sources.git_series(repo, "t0..t3", tmp_path / "out" / "series")
    assert source == SourceSpec("linux", "git", path=repo.resolve(), ref=git(repo, "rev-parse",
                                                                               "t0"))
    assert [p.subject for p in series] == ["mm/gup: step 1", "mm/gup: step 2", "mm/gup: step 3"]
    assert sorted(p.name for p in (tmp_path / "out" / "series").iterdir()) == \
        ["0001-mm-gup-step-1.patch", "0002-mm-gup-step-2.patch", "0003-mm-gup-step-3.patch"]
    # the series applies, in order, to the tree at A
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "gup.c").write_text("line 0\n")
    assert patchlib.apply(tree, series).ok
    assert (tree / "mm" / "gup.c").read_text() == (repo / "mm" / "gup.c").read_text()


@pytest.mark.parametrize("span, error", [
    ("t0", "'t0' is not a commit range: give it as A..B"),
    ("t0...t3", "not a commit range"),
    ("t3..t0", "t3..t0 holds no commits"),
    ("nonesuch..t3", "git rev-parse"),
])
def test_bad_git_ranges(repo, tmp_path, span, error):
    with pytest.raises(SourceError, match=error.replace(".", r"\.")):
        sources.git_series(repo, span, tmp_path / "series")


def test_a_range_with_merges_is_refused(repo, tmp_path):
    git(repo, "checkout", "-q", "-b", "side", "t1")
    (repo / "mm" / "other.c").write_text("x\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "side")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-edit", "side")
    with pytest.raises(SourceError, match="has merge commits"):
        sources.git_series(repo, "t0..main", tmp_path / "series")


def test_not_a_repository(tmp_path):
    with pytest.raises(SourceError, match="is not a git repository"):
        sources.git_series(tmp_path, "a..b", tmp_path / "series")


# ---------------------------------------------------------------------------------------------
# the real thing


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.parser().parse_args(argv)


@pytest.mark.parametrize("argv, error", [
    ([], "give exactly one of: a SERIES, --variant NAME, or --git TREE A..B"),
    (["x.mbox", "--variant", "umem-rfc"], "give exactly one of"),
    (["--variant", "umem-rfc", "--onto", "base"], "--onto goes with a SERIES only"),
    (["--git", "/nonexistent"], "--git TREE needs a commit range A..B"),
])
def test_what_to_bisect_must_be_said_once(argv, error, tmp_path):
    args = parse(["bisect", *argv, "--out", str(tmp_path / "out")])
    cfg = config.load(out=args.out)
    with pytest.raises(BisectError, match=re.escape(error)):
        bisect.plan(bisect_command.request(args), cfg)


def test_a_series_goes_on_top_of_the_onto_variant(tmp_path):
    args = parse(["bisect", str(FIXTURES / "series-6"), "--onto", "umem-rfc"])
    cfg = config.load(onto="umem-rfc")
    plan = bisect.plan(bisect_command.request(args), cfg)
    rfc = cfg.variant("umem-rfc")
    assert plan.offset == len(rfc.patches) and plan.series == tuple(SERIES6)
    assert plan.at(0).patches == rfc.patches and plan.variant.name == "series-6"


@pytest.mark.skipif(shutil.which("make") is None, reason="the config stage runs make")
def test_a_bisection_whose_base_cannot_build_writes_what_it_found(repo, tmp_path):
    """The executor with the real Runner on a git range that is not a kernel tree: the base's
    config stage fails in seconds, and the log, result, summary and report say so."""
    out = tmp_path / "out"
    args = parse(["bisect", "--git", str(repo), "t0..t3", "--out", str(out)])
    cfg = config.load(out=out)
    plan = bisect.plan(bisect_command.request(args), cfg)
    assert (plan.variant.name, plan.variant.source.ref) == ("linux-t0-t3",
                                                            git(repo, "rev-parse", "t0"))
    progress = Progress(io.StringIO(), live=False)
    runner = Runner(cfg, Cache(tmp_path / "cache"), progress)
    done = bisect.execute(runner, plan, Bisection(3), out, "rig bisect --git linux t0..t3")
    assert done.exit_status == ExitStatus.NO_VERDICT
    assert [r.name for r in done.runs] == ["linux-t0-t3@0"]
    log = (out / "bisect.log").read_text().splitlines()
    assert log[0] == "# rig bisect --git linux t0..t3"
    assert log[2].startswith("k=0 (base): build-failed, skip [")
    assert log[3].startswith("# failed: cannot bisect: the base (linux-t0-t3@0) has no "
                             "verdicts: build-failed: ")
    doc = json.loads((out / "bisect.json").read_text())
    assert doc["result"]["found"] == "failed" and len(doc["steps"]) == 1
    assert doc["series"]["source"] == "linux" and len(doc["series"]["patches"]) == 3
    assert "\nCannot bisect: the base (linux-t0-t3@0)" in (out / "summary.txt").read_text()
    res = results.load(out / "results.json")
    assert [(v.name, v.is_base, v.outcome.value) for v in res.variants] == \
        [("linux-t0-t3@0", True, "build-failed")]
    assert (out / "report.html").is_file()
    assert len(list((out / "series").glob("000[123]-mm-gup-step-*.patch"))) == 3


def test_a_series_that_cannot_be_read_is_refused_before_anything_runs(tmp_path, capsys):
    bad = FIXTURES.parent / "vet" / "garbage.bin"
    status = cli.main(["bisect", str(bad), "--out", str(tmp_path / "out"),
                       "--cache", str(tmp_path / "cache")])
    assert status == ExitStatus.NO_VERDICT
    assert capsys.readouterr().err.startswith(f"rig: {bad}: binary data, not a patch")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# a series whose end does not build


@pytest.mark.parametrize("n, broken_from, builds", [
    (6, 5, [3, 4, 5]), (6, 1, [3, 1]), (6, 6, [3, 4, 5]), (2, 2, [1]), (9, 2, [4, 2, 1])])
def test_build_bisection_finds_the_first_prefix_that_does_not_build(n, broken_from, builds):
    search = BuildBisection(n, f"umem.c:{n}: error: x")
    asked = []
    while (k := search.current) is not None:
        asked.append(k)
        ok = k < broken_from
        search.feed(k, Outcome.OK if ok else Outcome.BUILD_FAILED, 1.0,
                    "" if ok else f"umem.c:{k}: error: x")
    assert search.first_broken == broken_from and asked == builds
    assert len(asked) <= math.ceil(math.log2(n))
    assert search.errors[broken_from] == f"umem.c:{broken_from}: error: x"




def test_the_summary_as_golden():
    b = drive(6, flip_at(5, {3: "build-failed"}))
    matches("bisect-summary.txt", bisect_report.summary(b, SERIES6, "series-6",
                                                        "rig bisect series-6"))
