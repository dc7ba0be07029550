"""A finished LAVA job's log read back: the guest's console with the times its lines came,
the boot's markers (ready, uname), the results block (the JUnit file, gzip and base64,
between marker lines carrying the job's nonce, checked by its sha256 and bounded by
guest-limits.toml's [lab] caps), and what the dispatcher said of QEMU and of failures.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import zlib
from dataclasses import dataclass, field

from rig.core import datafiles
from rig.guest.console import Patterns
from rig.results.schema import LabJob
from rig.runtime.lava import Job, LogLine


@dataclass
class JobOutcome:
    """What one finished (or abandoned) job said, read from its log."""

    job: LabJob
    console: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)   # when each console line came
    ready: bool = False
    results_xml: str | None = None
    results_error: str = ""           # why a results block that was there could not be read
    malformed: bool = False           # ... because the block itself was bad (not pytest)
    pytest_status: int | None = None
    kernel_release: str = ""
    qemu_version: str = ""
    accel: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    lab_error: str = ""               # what the lab said went wrong (failure comment, errors)


_BEGIN = re.compile(r"^RIG-RESULTS-BEGIN:(?P<nonce>\S+) pytest=(?P<status>-?\d+) "
                    r"sha256=(?P<sha>[0-9a-f]{64})$")
_END = re.compile(r"^RIG-RESULTS-END:(?P<nonce>\S+)$")
_NONE = re.compile(r"^RIG-RESULTS-NONE:(?P<nonce>\S+) pytest=(?P<status>-?\d+)$")
_UNAME = re.compile(r"^RIG-UNAME:(?P<nonce>\S+) (?P<release>\S+)$")
_QEMU_VERSION = re.compile(r"qemu(?:-system-x86)?, installed at version: ([^,\s]+)")
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
LINUX = re.compile(r"Linux version \d")        # the kernel's first line


def read_log(record: LabJob, job: Job, log: list[LogLine], nonce: str) -> JobOutcome:
    """What a finished job's log says: the console, the markers, the results block."""
    fill(record, job)
    out = JobOutcome(record)
    ready = Patterns.load().ready_line(nonce)
    times: dict[str, float] = {}
    block: list[str] | None = None
    block_size = 0
    begin: re.Match[str] | None = None
    errors: list[str] = []
    for line in log:
        if line.lvl == "target" and isinstance(line.msg, str):
            text = line.msg.rstrip("\r\n")
            t = _seconds(line.dt)
            out.console.append(text)
            out.times.append(t)
            bare = _TIMESTAMP.sub("", text)
            times.setdefault("console", t)
            if ready.search(bare):
                out.ready = True
                times.setdefault("ready", t)
            elif (m := _UNAME.match(bare)) and m["nonce"] == nonce:
                out.kernel_release = m["release"]
            elif (m := _BEGIN.match(bare)) and m["nonce"] == nonce:
                begin, block, block_size = m, [], 0
                out.pytest_status = int(m["status"])
            elif (m := _END.match(bare)) and m["nonce"] == nonce and begin and block is not None:
                out.results_xml, out.results_error = _decode(block, begin["sha"])
                out.malformed = out.results_xml is None
                times.setdefault("results", t)
                block = None
            elif (m := _NONE.match(bare)) and m["nonce"] == nonce:
                out.pytest_status = int(m["status"])
                out.results_error = f"pytest exited {m['status']} and wrote no JUnit file"
                times.setdefault("results", t)
            elif block is not None:
                block.append(bare.strip())
                block_size += len(block[-1])
                if block_size > _limits()["block_bytes"]:
                    out.results_error = (f"the results block on the console is more than "
                                         f"{_limits()['block_bytes']} bytes ([lab] "
                                         "block_bytes): not read")
                    out.malformed, block = True, None
        elif isinstance(line.msg, str):
            if line.lvl == "error":
                errors.append(line.msg)
            elif m := _QEMU_VERSION.search(line.msg):
                out.qemu_version = m.group(1)
            elif "qemu-system" in line.msg and " -kernel " in line.msg:
                out.accel = "kvm" if "-enable-kvm" in line.msg else "tcg"
    out.lab_error = job.failure or (errors[-1] if errors else "")
    start = _seconds(job.started)
    if start and "console" in times:
        out.timings["deploy"] = round(times["console"] - start, 3)
    if "ready" in times and "console" in times:
        out.timings["boot"] = round(times["ready"] - times["console"], 3)
    if "results" in times and "ready" in times:
        out.timings["tests"] = round(times["results"] - times["ready"], 3)
    if start and _seconds(job.submitted):
        out.timings["queue"] = round(start - _seconds(job.submitted), 3)
    return out


def _decode(block: list[str], sha: str) -> tuple[str | None, str]:
    try:
        data = base64.b64decode("".join(block), validate=True)
    except ValueError as e:
        return None, f"the results block on the console is not base64 ({e})"
    if hashlib.sha256(data).hexdigest() != sha:
        return None, ("the results block on the console was garbled (sha256 mismatch): "
                      "console output mixed into it?")
    cap = _limits()["results_bytes"]
    unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)     # gzip, one member
    try:
        xml = unzip.decompress(data, cap + 1)
    except zlib.error as e:
        return None, f"the results block on the console is malformed: not gzip data ({e})"
    if len(xml) > cap:
        return None, (f"the results block on the console unpacks to more than {cap} bytes "
                      "([lab] results_bytes): not read")
    if not unzip.eof:
        return None, ("the results block on the console is malformed: its gzip data is cut "
                      "short")
    return xml.decode("utf-8", "replace"), ""


def _limits() -> dict[str, int]:
    return datafiles.guest_limits("lab")


def fill(record: LabJob, job: Job) -> None:
    record.device, record.state, record.health = job.device, job.state, job.health
    record.submitted, record.started, record.finished = job.submitted, job.started, job.finished


def _seconds(stamp: str) -> float:
    """An ISO 8601 time as seconds since the epoch (naive times are UTC); 0.0 if none."""
    if not stamp:
        return 0.0
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
