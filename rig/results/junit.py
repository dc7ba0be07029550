"""JUnit XML in and out: the guest suite's pytest report in, one file per variant out for CI.

In: pytest's ``--junitxml`` with ``-o junit_family=xunit1``, whose testcases carry the guest
suite's record_property values: "cell" (JSON {"region", "access", "check"}), "doc" (one
line), "observations" (JSON object) and "kmsg" (JSON list of kernel log lines).  Verdicts:
no child element is passed; <failure> failed, or xpassed when pytest marks a strict XPASS;
<error> error (setup, teardown or collection); <skipped type="pytest.xfail"> xfailed, any
other <skipped> skipped.  pytest writes a test that failed and then errored in teardown as two
testcases of one name: they become one result with the worse verdict.

Out: the same dialect, so a CI system reads it and parse() reads it back, with the host's
own verdicts as <failure type="rig.crashed"> and <error type="rig.lost">, one <testsuite> per
suite (each testcase also carries its "suite" property), and a variant that never reached its
tests, or a suite that could not run, as one error testcase per failed stage.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import defusedxml.ElementTree as defused
from defusedxml import DefusedXmlException

from rig.core import datafiles
from rig.core.model import StageError
from rig.core.status import InfraError
from rig.results.schema import TestResult, VariantResult, Verdict

CRASHED_TYPE = "rig.crashed"
LOST_TYPE = "rig.lost"
XFAIL_TYPE = "pytest.xfail"
XPASS_PREFIX = "[XPASS(strict)]"

# Which verdict stands when pytest reports one test twice (call failure, then teardown error).
_SEVERITY = [Verdict.PASSED, Verdict.SKIPPED, Verdict.XFAILED, Verdict.LOST, Verdict.ERROR,
             Verdict.XPASSED, Verdict.FAILED, Verdict.CRASHED]

_NAME = re.compile(r"(?:test_)?(?P<func>[^\[]*)(?:\[(?P<param>.*)\])?", re.DOTALL)


# A suite's own test ids from a testcase's (classname, name), where pytest's name is not one.
Namer = Callable[[str, str], str]


class JUnitError(InfraError):
    """A JUnit file that cannot be read; the message names the file and the problem."""


def parse(path: Path, name_of: Namer | None = None) -> list[TestResult]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_cap(0, str(path)) + 1)
    except OSError as e:
        raise JUnitError(f"{path}: cannot read: {e.strerror}") from None
    _cap(len(data), str(path))
    return parse_string(data.decode(errors="replace"), str(path), name_of)


def _cap(size: int, source: str) -> int:
    """The cap on a JUnit file's size; JUnitError if SIZE is past it."""
    cap = datafiles.guest_limits("parse")["junit_bytes"]
    if size > cap:
        raise JUnitError(f"{source}: more than {cap} bytes ([parse] junit_bytes of "
                         "guest-limits.toml): not read")
    return cap


def parse_string(text: str, source: str = "<junit>",
                 name_of: Namer | None = None) -> list[TestResult]:
    """The results in a JUnit document, in file order; SOURCE names it in errors.

    Ids are pytest's test names, qualified by the module where two modules share one, unless
    NAME_OF says otherwise.  The guest wrote it: it is read only up to [parse] junit_bytes
    of guest-limits.toml, and never with a DTD (entities can expand it a hundredfold)."""
    _cap(len(text), source)
    try:
        root = defused.fromstring(text, forbid_dtd=True)
    except ET.ParseError as e:
        # a guest that died while pytest wrote the file leaves it cut short
        raise JUnitError(f"{source}: not well-formed XML ({e})") from None
    except DefusedXmlException:
        raise JUnitError(f"{source}: it has a DTD, which a JUnit report never has (its "
                         "entities can expand a small file a hundredfold): not read") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise JUnitError(f"{source}: root element is <{root.tag}>, not <testsuites> or "
                         "<testsuite>: not a JUnit report")
    cases: dict[tuple[str, str], list[ET.Element]] = {}
    for case in root.iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        if not key[1]:
            raise JUnitError(f"{source}: a <testcase> has no name attribute")
        cases.setdefault(key, []).append(case)
    # ids are pytest's names; one that two modules share is qualified by its module
    shared = Counter(name for _, name in cases)
    results = [_result(name_of(classname, name) if name_of else
                       name if shared[name] == 1 else f"{classname}::{name}", group)
               for (classname, name), group in cases.items()]
    cells = {r.cell: (r.region, r.access) for r in results if r.access}
    for r in results:
        if not r.check:
            r.check, r.region, r.access = cell_of(r.id.rpartition("::")[2], cells)
    return results


def cell_of(test_id: str, known: dict[str, tuple[str, str]]) -> tuple[str, str, str]:
    """(check, region, access) from a test id alone, for a result without a "cell" property.

    KNOWN maps "<region>-<access>" to its parts, as other results of the run spelled them;
    a parameter not among them is taken as the region, with no access.
    """
    m = _NAME.fullmatch(test_id)
    assert m is not None  # every string matches
    param = m["param"] or ""
    region, access = known.get(param, (param, ""))
    return m["func"], region, access


def host_result(test_id: str, verdict: Verdict, message: str, details: str,
                known: Iterable[TestResult] = ()) -> TestResult:
    """A result the host decides itself (crashed, lost) for a test the guest never reported.

    KNOWN: results of the same suite, which tell how the test id splits into a cell.
    """
    known = list(known)
    check, region, access = cell_of(test_id, {r.cell: (r.region, r.access)
                                               for r in known if r.access})
    return TestResult(test_id, check, region, access, verdict, message, details,
                      suite=next((r.suite for r in known), ""))


def _result(name: str, cases: list[ET.Element]) -> TestResult:
    """One result from the testcase elements pytest wrote for one test (usually one)."""
    verdicts, messages, details = [], [], []
    for child in (c for case in cases for c in case):
        if child.tag in ("failure", "error", "skipped"):
            verdicts.append(_verdict(child))
            messages.append(child.get("message", ""))
            details.append(child.text or "")
    verdict = max(verdicts, key=_SEVERITY.index, default=Verdict.PASSED)
    duration = 0.0
    for case in cases:
        try:
            duration += float(case.get("time", "0"))
        except ValueError:
            pass  # a missing or odd time is no reason to lose the verdict
    result = TestResult(name, "", "", "", verdict, "; then ".join(m for m in messages if m),
                        "\n\n".join(d for d in details if d), duration=duration)
    props = {p.get("name", ""): p.get("value", "") for case in cases
             for p in case.iter("property")}
    result.doc = props.get("doc", "")
    result.suite = props.get("suite", "")
    problems = []
    for key, kind in (("cell", dict), ("observations", dict), ("kmsg", list)):
        if key not in props:
            continue
        try:
            value = json.loads(props[key])
        except json.JSONDecodeError as e:
            problems.append(f"property {key!r} is not JSON ({e})")
            continue
        if not isinstance(value, kind) or (key == "kmsg" and
                                           not all(isinstance(x, str) for x in value)):
            problems.append(f"property {key!r} is not a JSON "
                            f"{'object' if kind is dict else 'list of strings'}")
        elif key == "cell":
            cell = [value.get(k) for k in ("region", "access", "check")]
            if all(isinstance(v, str) for v in cell):
                result.region, result.access, result.check = cell
            else:
                problems.append("property 'cell' lacks a region, access or check string")
        elif key == "observations":
            result.observations = value
        else:
            result.kmsg = value
    if problems:
        # the guest's data is broken: say so in the verdict rather than drop the test
        result.verdict = Verdict.ERROR
        result.message = "; ".join(problems + ([result.message] if result.message else []))
    return result


def _verdict(el: ET.Element) -> Verdict:
    kind = el.get("type", "")
    if el.tag == "failure":
        if kind == CRASHED_TYPE:
            return Verdict.CRASHED
        return Verdict.XPASSED if el.get("message", "").startswith(XPASS_PREFIX) else Verdict.FAILED
    if el.tag == "error":
        return Verdict.LOST if kind == LOST_TYPE else Verdict.ERROR
    return Verdict.XFAILED if kind == XFAIL_TYPE else Verdict.SKIPPED


def to_junit(variant: VariantResult) -> str:
    """VARIANT as a JUnit document for CI, pytest's dialect plus the host's verdicts."""
    root = ET.Element("testsuites")
    names = variant.suite_names() or [""]
    for name in names:
        suite = ET.SubElement(root, "testsuite",
                              name=f"{variant.name}/{name}" if name else variant.name)
        props = ET.SubElement(suite, "properties")
        for prop, value in (("outcome", variant.outcome.value), ("base", str(variant.is_base)),
                            ("kernel_release", variant.environment.kernel_release)):
            ET.SubElement(props, "property", name=prop, value=_xml_safe(value))
        classname = ".".join(filter(None, ("umem-rig", variant.name, name)))
        for t in variant.tests:
            if t.suite == name or (name == names[0] and t.suite not in names):
                _testcase(suite, classname, t)
        info = variant.suite(name)
        # a CI system must see the variant (or the suite) fail, not an empty suite that passed
        if not variant.has_verdict or (info and not info.has_verdict):
            for err in variant.errors or [StageError(variant.outcome.value, "no verdict")]:
                if variant.has_verdict and name not in err.stage:
                    continue
                case = ET.SubElement(suite, "testcase", classname=classname, name=err.stage)
                el = ET.SubElement(case, "error", message=_xml_safe(
                    f"{(info.outcome if info else variant.outcome).value}: {err.message}"))
                el.text = _xml_safe(err.excerpt)
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        for attr, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            suite.set(attr, str(sum(1 for c in cases if c.find(tag) is not None)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _testcase(suite: ET.Element, classname: str, t: TestResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=t.id,
                         time=f"{t.duration:.3f}")
    tprops = ET.SubElement(case, "properties")
    cell = {"region": t.region, "access": t.access, "check": t.check}
    for name, value in (("cell", json.dumps(cell)), ("doc", t.doc), ("suite", t.suite),
                        ("observations", json.dumps(t.observations, sort_keys=True)),
                        ("kmsg", json.dumps(t.kmsg))):
        ET.SubElement(tprops, "property", name=name, value=_xml_safe(value))
    if t.verdict in _ELEMENT:
        tag, kind = _ELEMENT[t.verdict]
        message = t.message
        if t.verdict is Verdict.XPASSED and not message.startswith(XPASS_PREFIX):
            message = f"{XPASS_PREFIX} {message}"
        el = ET.SubElement(case, tag, message=_xml_safe(message))
        if kind:
            el.set("type", kind)
        el.text = _xml_safe(t.details)


def write(variant: VariantResult, path: Path) -> None:
    path.write_text(to_junit(variant))


_ELEMENT = {
    Verdict.FAILED: ("failure", ""),
    Verdict.XPASSED: ("failure", ""),
    Verdict.CRASHED: ("failure", CRASHED_TYPE),
    Verdict.ERROR: ("error", ""),
    Verdict.LOST: ("error", LOST_TYPE),
    Verdict.SKIPPED: ("skipped", "pytest.skip"),
    Verdict.XFAILED: ("skipped", XFAIL_TYPE),
}

# Characters XML 1.0 cannot carry, which consoles do send (ANSI escapes), and lone surrogates.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"#x{ord(m[0]):02X}", text)
