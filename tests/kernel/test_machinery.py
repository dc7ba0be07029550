"""A series that changes build machinery is flagged in the vet summary and the reports.

The comparisons are the real run in tests/fixtures/results/results-v1.synthetic.json, with the
candidate's build environment set as a build of the synthetic canary patch records it.
"""

from __future__ import annotations

import copy

import pytest
from support.paths import FIXTURES

from rig.flows import vet
from rig.kernel import machinery
from rig.kernel import patches as patchlib
from rig.results import compare, report
from rig.results import schema as results

V1 = results.load(FIXTURES / "results" / "results-v1.synthetic.json")
CANARY = patchlib.load(FIXTURES / "vet" / "build-canary.synthetic.patch")
RFC = patchlib.load(FIXTURES / "vet" / "umem-rfc.mbox")


def vetted(series) -> vet.Vetted:
    """The series as vet reads a patch file (no thread, no tree)."""
    return vet.Vetted(tuple(series), str(series[0].origin), series[0].subject, "", "")


REFUSED = ["/bin/sh: 1: cannot create /root/.cache/rig-build-canary: Read-only file system"]


@pytest.mark.parametrize("path, flagged", [
    ("drivers/infiniband/core/Makefile", True),
    ("arch/x86/boot/Makefile", True),
    ("mm/Kconfig", True),
    ("arch/x86/Kconfig.cpu", True),
    ("drivers/infiniband/core/Kbuild", True),
    ("scripts/kconfig/conf.c", True),
    ("tools/objtool/check.c", True),
    ("arch/x86/tools/gen-insn-attr-x86.awk", True),
    ("arch/x86/entry/syscalls/syscallhdr.sh", True),
    ("drivers/infiniband/core/umem.c", False),
    ("include/linux/mm.h", False),
    ("mm/gup.c", False),
])
def test_build_machinery_patterns(path, flagged):
    assert machinery.is_machinery(path, machinery._patterns()) is flagged


def test_the_series_files_that_are_build_machinery():
    assert machinery.files(CANARY) == ["drivers/infiniband/core/Makefile"]
    assert machinery.files(RFC) == []


def _with_canary(sandbox: str) -> results.Results:
    res = copy.deepcopy(V1)
    env = res.variant("umem-rfc").environment
    env.build_machinery = machinery.files(CANARY)
    env.sandbox = sandbox
    env.sandbox_refused = REFUSED
    return res


def test_vet_summary_flags_the_makefile_and_the_refused_writes():
    text = vet.summary(compare.compare(_with_canary("bubblewrap 0.8.0")), "umem-rfc",
                       vetted(CANARY), "rig vet build-canary.synthetic.patch")
    flag = ("BUILD MACHINERY: the series changes files that run on the host while the kernel "
            "is built:\n  drivers/infiniband/core/Makefile\n"
            "  Applied and built in the sandbox: bubblewrap 0.8.0\n")
    assert flag in text
    assert text.index(flag) < text.index("Result: ")     # seen before the verdict
    assert ("The sandbox refused writes while the series was built (build log):\n"
            f"  {REFUSED[0]}\n") in text


def test_vet_summary_says_when_there_was_no_sandbox():
    text = vet.summary(compare.compare(_with_canary("none: --no-sandbox")), "umem-rfc",
                       vetted(CANARY), "rig vet x --no-sandbox")
    assert ("  Applied and built WITHOUT a sandbox (none: --no-sandbox): its code ran on "
            "the host\n") in text


def test_a_series_without_build_machinery_is_not_flagged():
    text = vet.summary(compare.compare(V1), "umem-rfc", vetted(RFC), "rig vet umem-rfc.mbox")
    assert "BUILD MACHINERY" not in text and "refused" not in text


def test_reports_flag_the_makefile():
    res = _with_canary("bubblewrap 0.8.0")
    text = report.render_text(res)
    assert ("! umem-rfc: its patches change build machinery, run on the host while the kernel "
            "was built: drivers/infiniband/core/Makefile (sandbox: bubblewrap 0.8.0)\n") in text
    assert f"! umem-rfc: the sandbox refused 1 write(s) while it was built, e.g. {REFUSED[0]}" \
        in text
    html = report.render(res)
    assert "⚠ umem-rfc: its patches change build machinery" in html
    assert "<tr><th>sandbox</th>" in html and "bubblewrap 0.8.0" in html
    assert "<code>drivers/infiniband/core/Makefile</code>" in html
    plain = report.render_text(V1)
    assert "build machinery" not in plain and "refused" not in plain


def test_the_flag_survives_the_results_file(tmp_path):
    res = _with_canary("bubblewrap 0.8.0")
    res.save(tmp_path / "results.json")
    env = results.load(tmp_path / "results.json").variant("umem-rfc").environment
    assert env.build_machinery == ["drivers/infiniband/core/Makefile"]
    assert env.sandbox == "bubblewrap 0.8.0" and env.sandbox_refused == REFUSED
