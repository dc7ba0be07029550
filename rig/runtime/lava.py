"""A LAVA server's REST API (v0.2), as much of it as the rig uses.

    server = LavaServer("nightly", "https://lava.example.org/", token)
    server.check("qemu")                     # reachable, the token works, devices exist
    job_id = server.submit(definition_yaml)
    server.job(job_id).state                 # Submitted, Scheduling, Running, Finished
    server.log(job_id)                       # [LogLine(dt, lvl, msg), ...]

Every failure is a LabError whose message names the lab and says what is wrong, in words a
user can act on (the lab is down, the token is refused, the device type is unknown).  The
token goes into the Authorization header only: never into a message, a URL or a file.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

from rig.core import datafiles
from rig.core.status import InfraError

# The states and healths the API reports (get_state_display / get_health_display).
FINISHED = "Finished"
COMPLETE, INCOMPLETE, CANCELED = "Complete", "Incomplete", "Canceled"
# Device healths a job may be scheduled on.
_USABLE = {"Good", "Unknown"}


class LabError(InfraError):
    """The lab cannot do what the rig asked; the message names the lab and what is wrong."""


@dataclass(frozen=True)
class Job:
    """One job as the lab reports it."""

    id: int
    state: str                       # Submitted | Scheduling | Scheduled | Running | Canceling
    #                                  | Finished
    health: str                      # Unknown | Complete | Incomplete | Canceled
    device: str                      # the device it ran on; "" until scheduled
    submitted: str                   # ISO 8601 times as the lab gives them; "" when not yet
    started: str
    finished: str
    failure: str                     # the lab's failure comment, if any

    @property
    def finished_state(self) -> bool:
        return self.state == FINISHED


@dataclass(frozen=True)
class LogLine:
    dt: str
    lvl: str                         # target (the console), info, debug, error, results, ...
    msg: Any                         # a string, or a dict for results


@dataclass(frozen=True)
class Devices:
    """The devices of one type: how many there are, and how many a job could run on now."""

    total: int
    usable: int                      # health Good or Unknown, on a worker that is online
    names: tuple[str, ...]


class LavaServer:
    def __init__(self, lab: str, url: str, token: str, timeout: float = 30.0):
        self.lab = lab
        self.url = url.rstrip("/") + "/"
        self._token = token
        self.timeout = timeout

    def job_url(self, job_id: int) -> str:
        return f"{self.url}scheduler/job/{job_id}"

    # -- requests --------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None,
                 ok: tuple[int, ...] = (200,), limit: int | None = None) -> tuple[int, bytes]:
        """(status, body), the body read up to LIMIT + 1 bytes if LIMIT is given."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(urllib.parse.urljoin(self.url, path), data=data,
                                     method=method)
        req.add_header("Authorization", f"Token {self._token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read() if limit is None else resp.read(limit + 1)
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        except (TimeoutError, urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LabError(f"lab {self.lab}: cannot reach {self.url}: {reason}") from None
        if status in ok:
            return status, text
        detail = _detail(text)
        if status in (401, 403):
            raise LabError(f"lab {self.lab}: the server at {self.url} refused the token "
                           f"({status}: {detail}); check the lab's token")
        raise LabError(f"lab {self.lab}: {method} {path} failed with HTTP {status}: {detail}")

    def _json(self, method: str, path: str, body: dict | None = None,
              ok: tuple[int, ...] = (200,)) -> Any:
        _, text = self._request(method, path, body, ok)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise LabError(f"lab {self.lab}: {self.url} answered {path} with something that "
                           f"is not JSON; is it a LAVA server?") from None

    # -- what the rig asks -----------------------------------------------------------------

    def whoami(self) -> str:
        """The user the token belongs to; a LabError if the server refuses it."""
        user = self._json("GET", "api/v0.2/system/whoami/").get("user", "")
        if not user:
            raise LabError(f"lab {self.lab}: the server at {self.url} did not accept the "
                           "token (it answered as an anonymous user)")
        return user

    def devices(self, device_type: str) -> Devices:
        """The devices of DEVICE_TYPE; a LabError if the lab has no such type."""
        status, _ = self._request("GET", f"api/v0.2/devicetypes/{_q(device_type)}/",
                                     ok=(200, 404))
        if status == 404:
            raise LabError(f"lab {self.lab}: the lab has no device type {device_type!r}")
        workers = {w["hostname"]: w.get("state", "")
                   for w in self._all("api/v0.2/workers/?limit=100")}
        found = self._all(f"api/v0.2/devices/?device_type={_q(device_type)}&limit=100")
        found = [d for d in found if d.get("health") != "Retired"]
        usable = [d for d in found if d.get("health") in _USABLE
                  and workers.get(d.get("worker_host") or "") == "Online"]
        return Devices(len(found), len(usable), tuple(d["hostname"] for d in found))

    def check(self, device_type: str) -> Devices:
        """Reachable, the token accepted, DEVICE_TYPE known and with a device; else LabError."""
        self.whoami()
        devices = self.devices(device_type)
        if devices.total == 0:
            raise LabError(f"lab {self.lab}: device type {device_type!r} has no devices")
        return devices

    def submit(self, definition: str) -> int:
        status, text = self._request("POST", "api/v0.2/jobs/", {"definition": definition},
                                     ok=(201, 400))
        answer = _loads(text)
        if status == 400:
            raise LabError(f"lab {self.lab}: the lab refused the job: "
                           f"{answer.get('message') or _detail(text)}")
        ids = answer.get("job_ids") or []
        if len(ids) != 1:
            raise LabError(f"lab {self.lab}: expected one job id for the submission, "
                           f"got {ids!r}")
        return int(ids[0])

    def job(self, job_id: int) -> Job:
        d = self._json("GET", f"api/v0.2/jobs/{job_id}/")
        return Job(int(d["id"]), d.get("state") or "", d.get("health") or "",
                   d.get("actual_device") or "", d.get("submit_time") or "",
                   d.get("start_time") or "", d.get("end_time") or "",
                   d.get("failure_comment") or "")

    def cancel(self, job_id: int) -> None:
        self._request("GET", f"api/v0.2/jobs/{job_id}/cancel/", ok=(200, 404))

    def log(self, job_id: int) -> list[LogLine]:
        """The job's log (console lines are lvl "target"); empty if the job has none yet."""
        cap = datafiles.guest_limits("lab")["log_bytes"]
        status, text = self._request("GET", f"api/v0.2/jobs/{job_id}/logs/", ok=(200, 404),
                                     limit=cap)
        if len(text) > cap:       # the guest's console is in it, as much as it printed
            raise LabError(f"lab {self.lab}: job {job_id}'s log is more than {cap} bytes "
                           "([lab] log_bytes of guest-limits.toml): not read")
        return parse_log(text.decode("utf-8", "replace")) if status == 200 else []

    def _all(self, path: str) -> list[dict]:
        items: list[dict] = []
        url: str | None = path
        while url:
            page = self._json("GET", url)
            items += page.get("results", [])
            url = page.get("next")
        return items


def parse_log(text: str) -> list[LogLine]:
    """A LAVA job log (a YAML list of {dt, lvl, msg}, one flow mapping a line)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = yaml.load(text, Loader=loader) or []
    return [LogLine(str(d.get("dt", "")), str(d.get("lvl", "")), d.get("msg", ""))
            for d in docs if isinstance(d, dict)]


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _loads(text: bytes) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _detail(text: bytes) -> str:
    answer = _loads(text)
    found = answer.get("detail") or answer.get("message")
    return str(found) if found else text.decode("utf-8", "replace").strip()[:200]
