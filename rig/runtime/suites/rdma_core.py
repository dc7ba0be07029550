"""The rdma-core suite: rdma-core's own tests (tests/test_mr.py, ...) on the guest's rxe0.

Debian's python3-pyverbs ships them as documentation, in /usr/share/doc/rdma-core/tests, the
larger files gzipped; the guest image keeps that folder, so the tests are exactly those of the
guest's rdma-core.  In the guest they are copied out, unzipped, and run by pytest (they are
unittest test cases) with the rig's marker plugin and a plugin that gives them the options
run_tests.py would (rig/guest_plugin/rig_rdma_core.py).  Which modules run, and which tests
are left out and why, is data: rig/data/rdma-core.toml.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rig.core import datafiles
from rig.core.model import ImageResult, StageError
from rig.guest.image import PACKAGES
from rig.guest.machine import Guest
from rig.results.schema import TestResult, Verdict
from rig.runtime.crashes import Stops
from rig.runtime.suites import guest_pytest
from rig.runtime.suites.base import (
    Limits,
    Staged,
    StageRequest,
    Suite,
    SuiteError,
    SuiteReport,
    reserve_hugepages,
    run_step,
)

NAME = "rdma-core"
WORK = "/tmp/rdma-core"               # the unzipped copy; tests/ in it is a package
GUEST_XML = "/tmp/rig-rdma-core.xml"
PLUGIN = guest_pytest.PLUGIN_DIR / "rig_rdma_core.py"
PACKAGE = "python3-pyverbs"


@dataclass(frozen=True)
class Recipe:
    tests: str                       # where the guest's package put them
    args: tuple[str, ...]            # run_tests.py's options
    hugepages: int                   # free 2 MiB huge pages it makes sure of
    modules: tuple[str, ...]
    deselect: dict[str, str]         # test id -> why it is left out

    @classmethod
    def load(cls, text: str | None = None) -> Recipe:
        if text is None:
            text = datafiles.text("rdma-core.toml")
        data = tomllib.loads(text)
        return cls(data["tests"], tuple(data["args"]), int(data["hugepages"]),
                   tuple(data["modules"]),
                   {d["test"]: d["reason"] for d in data.get("deselect", [])})


def image_package(image: ImageResult, package: str) -> str:
    """PACKAGE's version in the guest image, from the list the image stage keeps beside it."""
    try:
        lines = (image.path.parent / PACKAGES).read_text().splitlines()
    except OSError:
        return "(version unknown)"
    return next((line.split()[1] for line in lines if line.split()[:1] == [package]
                 and len(line.split()) > 1), "(not in the image)")


def node(test: str) -> str:
    """pytest's node for a test id, class or module: test_mr.MRTest.test_x ->
    tests/test_mr.py::MRTest::test_x."""
    module, *rest = test.split(".")
    return "::".join([f"tests/{module}.py", *rest])


def case_id(classname: str, name: str) -> str:
    """The id of a testcase: unittest's own, without the package (test_mr.MRTest.test_x)."""
    return f"{classname.removeprefix('tests.')}.{name}"


def from_node(node_id: str) -> str:
    path, *rest = node_id.split("::")
    return ".".join([Path(path).stem, *rest])


class RdmaCore(Suite):
    name = NAME
    runs_pytest = True

    def __init__(self, recipe: Recipe | None = None):
        self.recipe = recipe or Recipe.load()

    def validate(self, select: tuple[str, ...]) -> None:
        for wanted in select:
            if wanted.split(".")[0] not in self.recipe.modules:
                raise SuiteError(f"{NAME}: {wanted!r} is not in a module the suite runs "
                                 f"({', '.join(self.recipe.modules)})")

    def stage(self, req: StageRequest) -> Staged:
        self.validate(req.select)
        plugins = req.scratch / NAME / "plugins"
        plugins.mkdir(parents=True)
        for plugin in (guest_pytest.MARKERS, PLUGIN):
            shutil.copy2(plugin, plugins / plugin.name)
        origin = f"{PACKAGE} {image_package(req.image, PACKAGE)}: {self.recipe.tests}"
        return Staged(self.name, ((plugins, guest_pytest.GUEST_PLUGINS),), origin,
                      req.scratch / self.name, req.select)

    def run(self, guest: Guest, staged: Staged, skip: frozenset[str], limits: Limits,
            stopped: Stops | None = None) -> SuiteReport:
        tests = self.recipe.tests
        reserve_hugepages(guest, self.recipe.hugepages, limits)
        copy = run_step(guest, f"test -d {tests} && rm -rf {WORK} && mkdir -p {WORK} && "
                               f"cp -r {tests} {WORK}/ && gunzip -f {WORK}/tests/*.gz", limits)
        if copy.status:
            return SuiteReport(errors=[StageError(
                "tests", f"cannot unpack {tests} in the guest (is the guest image's "
                         f"{PACKAGE} documentation kept?)", (copy.stdout + copy.stderr)[-3000:])])
        targets = [node(t) for t in staged.select] or [node(m) for m in self.recipe.modules]
        deselect = sorted(skip | {node(t) for t in self.recipe.deselect})
        env = {"PYTHONPATH": f"{WORK}/tests:{guest_pytest.GUEST_PLUGINS}",
               "RIG_RDMA_ARGS": " ".join(self.recipe.args)}
        staged.workdir.mkdir(parents=True, exist_ok=True)
        report = guest_pytest.run(
            guest, lambda died: guest_pytest.command(
                WORK, GUEST_XML, ["-p", "rig_rdma_core", *targets], env, deselect + died,
                guest.marker_token),
            GUEST_XML, limits, staged.workdir / "rdma.xml", self.host_result, case_id)
        for t in report.tests:
            t.region, _, t.check = t.id.rpartition(".")
            t.access = ""
        return report

    def running_test(self, console: str) -> str | None:
        return guest_pytest.running_test(console)

    def test_id(self, key: str) -> str:
        return from_node(key)

    def host_result(self, key: str, verdict: Verdict, message: str, details: str,
                    known: list[TestResult]) -> TestResult:
        tid = from_node(key)
        region, _, check = tid.rpartition(".")
        return TestResult(tid, check, region, "", verdict, message, details, suite=NAME)
