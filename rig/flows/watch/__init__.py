"""`rig watch`: follow public-inbox inboxes, vet every series that touches the umem/GUP code
as it arrives, and answer on its thread.

One poll (`once`): search each inbox for messages whose diffs touch the files followed
(rig/data/watch-patterns.toml), fetch each hit's whole thread, and reduce it with b4 to the
newest revision of its series (replies and reviews are no series).  A series with patches
missing waits until they come or the deadline passes; then the patches that came are vetted
alone if they apply without the others, and the answer names the missing ones and claims no
verdict for them; a newer revision supersedes an older one still waiting or queued.  The
queue is vetted one series at a time with the vet flow, in this process, and each vet's
summary is answered on the thread into the outbox (and over SMTP with --send).  The state is
one sqlite file (state.py): a run killed anywhere, mid-vet included, neither loses a series
nor answers one twice.  Everything from a list is untrusted: refusals name the inbox or
message, and the rig writes only under its state folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import b4

from rig.core.cache import Cache, digest
from rig.core.progress import Progress
from rig.core.status import ExitStatus, RigError
from rig.core.text import printable
from rig.flows.config import RunConfig
from rig.flows.vet import VetRequest, read_series, vet
from rig.flows.watch import feed, reply
from rig.flows.watch.state import Row, State
from rig.kernel import thread, tree

# b4 was written for a maintainer's own mail, not a hostile list: what it raises on a
# malformed message is refused as that message's fault.
_MALFORMED = (ValueError, KeyError, IndexError, AttributeError, TypeError, UnicodeError)


@dataclass(frozen=True)
class Settings:
    """[watch] of the configuration (rig/data/default.toml says what each is)."""

    inboxes: tuple[str, ...]
    state: Path
    lookback_days: int
    deadline: float
    interval: float
    sender: str
    report_url: str
    max_bytes: int
    per_hour: int
    smtp: reply.Smtp

    @classmethod
    def of(cls, data: dict, cache: Cache, inboxes: tuple[str, ...] = ()) -> Settings:
        w = data["watch"]
        smtp = w["smtp"]
        return cls(inboxes or tuple(w["inboxes"]),
                   Path(w["state"]).expanduser() if w["state"] else cache.root / "watch",
                   int(w["lookback_days"]), float(w["deadline"]), float(w["interval"]),
                   w["from"], w["report_url"], int(w["max_bytes"]), int(w["per_hour"]),
                   reply.Smtp(smtp["host"], int(smtp["port"]), bool(smtp["starttls"]),
                              smtp["user"], smtp["password_file"]))

    @property
    def outbox(self) -> Path:
        return self.state / "outbox"

    @property
    def database(self) -> Path:
        return self.state / "state.sqlite"


@dataclass
class Poll:
    """What one poll did."""

    arrived: list[str] = field(default_factory=list)     # keys whose state changed
    vetted: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)   # vets a killed run left
    held: list[str] = field(default_factory=list)        # answers past the hour's limit
    errors: list[str] = field(default_factory=list)      # inboxes or messages refused

    @property
    def status(self) -> ExitStatus:
        return ExitStatus.NO_VERDICT if self.errors else ExitStatus.OK


@contextlib.contextmanager
def _alone(folder: Path) -> Iterator[None]:
    """One follower per state folder: two timers overlapping would vet a series twice."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RigError(f"{folder}: another rig watch is running on this state") from None
        yield


def _msgid(msg) -> str:
    return b4.LoreMessage.get_clean_msgid(msg) or ""


def mboxrd(messages) -> bytes:
    """MESSAGES as one mboxrd, as public-inbox serves a thread."""
    out = io.BytesIO()
    b4.save_mboxrd_mbox(messages, out)
    return out.getvalue()


def _take(st: State, inbox: str, messages, patterns: feed.Patterns, poll: Poll) -> None:
    source = f"{inbox} thread of <{_msgid(messages[0])}>"
    try:
        found = thread.arrival(source, messages)
        touches = any(patterns.touches(m) for m in messages)
    except _MALFORMED as exc:
        poll.errors.append(f"{source}: a message b4 cannot read: {type(exc).__name__}: {exc}")
        return
    if found is None or not touches:
        return
    key = digest("watch-v1", inbox, found.message_id, found.revision)[:24]
    topic = f"{found.author.lower()} {found.subject.lower()}"
    before = st.get(key)
    after = st.arrive(key, topic, found.revision, inbox, found.message_id, found.subject,
                      found.author, ", ".join(found.missing), mboxrd(messages),
                      st.muted({_msgid(m) for m in messages}))
    if before is None or before.state != after:
        poll.arrived.append(key)


def _poll(st: State, settings: Settings, patterns: feed.Patterns, poll: Poll) -> None:
    for inbox in settings.inboxes:
        started = time.time()
        # a day of overlap: received times are the server's, and a series seen twice is
        # recognised by its key
        last = st.last_poll(inbox) or started - settings.lookback_days * 86400
        since = time.strftime("%Y%m%d", time.gmtime(last - 86400))
        try:
            hits = feed.search(inbox, patterns, since, settings.max_bytes)
        except feed.FeedError as exc:
            poll.errors.append(str(exc))
            continue
        done: set[str] = set()
        for hit in hits:
            if not _msgid(hit) or _msgid(hit) in done:
                continue
            try:
                messages = feed.thread(inbox, _msgid(hit), settings.max_bytes) or [hit]
            except feed.FeedError as exc:
                poll.errors.append(str(exc))
                continue
            done |= {_msgid(m) for m in messages}
            _take(st, inbox, messages, patterns, poll)
        st.polled(inbox, started)


def _body(row: Row, settings: Settings) -> str:
    lines = [row.summary.rstrip("\n"), ""]
    if settings.report_url and row.out:
        lines += [f"Full report: {settings.report_url.rstrip('/')}/{row.key}/report.html", ""]
    lines += ["-- ", "umem-rig watch: an automated reply (what ibv_reg_mr() does to a",
              "process's memory on each kind of region, without and with the series)"]
    return "\n".join(lines) + "\n"


def _answer(st: State, row: Row, settings: Settings, outbox: reply.Outbox, send: bool,
            poll: Poll) -> None:
    """Answer ROW, unless [watch] per_hour answers went out in the last hour: then it stays
    vetted, and a later poll answers it."""
    if st.answers_since(time.time() - 3600) >= settings.per_hour:
        poll.held.append(row.key)
        return
    found = thread.arrival(row.key, feed.messages(row.thread, row.key))
    assert found is not None                  # it was a series when it arrived
    message_id = reply.reply_id(row.key, settings.sender)
    try:
        msg = reply.compose(found.head, _body(row, settings), settings.sender, message_id)
    except reply.ReplyError as exc:
        st.set(row.key, state="unanswerable", summary=row.summary + f"\n{exc}\n")
        poll.errors.append(str(exc))
        return
    st.set(row.key, answer_id=message_id)
    outbox.add(msg)                           # none twice: the outbox is asked first
    st.set(row.key, state="answered", answered=time.time())
    poll.answered.append(row.key)
    if send:
        # never retried: a send cut short may have reached the server; the answer stays in
        # the outbox for a human
        st.set(row.key, state="sending")
        try:
            settings.smtp.send(msg)
        except RigError as exc:
            st.set(row.key, state="answered")
            poll.errors.append(f"{exc} (the answer to <{row.message_id}> is in the outbox)")
            return
        st.set(row.key, state="sent")


def _vet(st: State, row: Row, settings: Settings, configure: Callable[[Path], RunConfig],
         cache: Cache, progress: Progress) -> None:
    st.set(row.key, state="vetting", attempts=row.attempts + 1)
    out = settings.state / "vets" / row.key
    shutil.rmtree(out, ignore_errors=True)           # a killed vet's leftovers
    threads = settings.state / "threads"
    threads.mkdir(parents=True, exist_ok=True)
    mbox = threads / f"{row.key}.mbox"
    mbox.write_bytes(row.thread)
    cfg = configure(out)
    req, why = where(cfg, VetRequest(series=mbox, revision=row.revision,
                                     command=("rig", "vet", "--msgid", row.message_id),
                                     partial=bool(row.missing)), cache)
    progress.log(f"vetting {printable(row.subject)} (v{row.revision}, <{row.message_id}>)")
    try:
        done = vet(cfg, cache, progress, req)
        summary, status = why + done.summary.read_text(), int(done.run.exit_status)
    except RigError as exc:
        # the reply is public: the series is named by its Message-Id, not by the files the
        # rig read it from (the thread here, its scratch copies in the cache), and the tree
        # by what it is, not where it is on this machine
        said = str(exc) if req.tree is None else str(exc).replace(str(req.tree),
                                                                   "the configured tree")
        said = re.sub("|".join(re.escape(str(p)) + r"[^\s:]*" for p in (settings.state, cache.root)),
                      f"<{row.message_id}>", said)
        summary = f"umem-rig could not vet this series:\n  {said}\n"
        status = int(ExitStatus.NO_VERDICT)
    st.set(row.key, state="vetted", summary=summary, status=status, out=str(out))


def where(cfg: RunConfig, req: VetRequest, cache: Cache) -> tuple[VetRequest, str]:
    """REQ on the configured tree ([vet] tree) at the series' base-commit when the tree has
    that commit, else on the rig's base variant; and, for the answer, why not on the tree.
    A tree that is not one is the configuration's fault: raised, never answered."""
    if cfg.vet_tree is None:
        return req, ""
    root = tree.open_tree(cfg.vet_tree)
    try:
        named = read_series(req, cache).base_commit
    except RigError:
        return req, ""                  # the vet refuses the series, and the answer says so
    if not named:
        return req, ("The series names no base-commit: vetted on the rig's base variant, "
                     "not on the configured tree.\n\n")
    try:
        tree.base(root, named)
    except tree.TreeError:
        return req, (f"The series names base-commit {named[:12]}, which the configured tree "
                     "does not have: vetted on the rig's base variant instead.\n\n")
    return dataclasses.replace(req, tree=root), ""


def once(settings: Settings, configure: Callable[[Path], RunConfig], cache: Cache,
         progress: Progress, send: bool = False) -> Poll:
    """One poll: new series in, the queue vetted one at a time, every due answer written.
    CONFIGURE gives the vet's run configuration for an output folder."""
    poll = Poll()
    patterns = feed.Patterns.load()
    with _alone(settings.state):
        st = State(settings.database)
        try:
            poll.recovered = [r.key for r in st.recover()]
            _poll(st, settings, patterns, poll)
            now = time.time()
            for row in st.rows("waiting"):
                if now - row.first_seen >= settings.deadline:
                    st.set(row.key, state="queued")         # the patches there are
            outbox = reply.Outbox(settings.outbox)
            for row in st.rows("vetted"):                  # due from an earlier poll
                _answer(st, row, settings, outbox, send, poll)
            for row in st.rows("queued"):
                _vet(st, row, settings, configure, cache, progress)
                poll.vetted.append(row.key)
                _answer(st, st.get(row.key), settings, outbox, send, poll)
        finally:
            st.close()
    return poll


def daemon(settings: Settings, configure: Callable[[Path], RunConfig], cache: Cache,
           progress: Progress, send: bool = False) -> None:
    """Poll every [watch] interval until interrupted; a poll's refusals are logged."""
    while True:
        poll = once(settings, configure, cache, progress, send)
        for error in poll.errors:
            progress.log(f"refused: {printable(error)}")
        time.sleep(settings.interval)


def mute(settings: Settings, message_id: str) -> int:
    """Never answer the thread of MESSAGE_ID (nor vet it): the series muted before their
    answer."""
    msgid = message_id.strip().strip("<>")
    if not msgid or any(c.isspace() or c in "<>" for c in msgid):
        raise RigError(f"--mute {message_id!r}: not a Message-Id")
    st = State(settings.database)
    try:
        return st.mute(msgid)
    finally:
        st.close()


def status(settings: Settings) -> str:
    """The queue and the answers, newest first."""
    path = settings.database
    if not path.exists():
        return f"{settings.state}: nothing watched yet\n"
    st = State(path)
    try:
        rows = st.all()
    finally:
        st.close()
    queue = [r for r in rows if r.state in ("waiting", "queued", "vetting", "sending")]
    answers = [r for r in rows if r.answered is not None]
    lines = [f"state: {path}", f"queue ({len(queue)}):"]
    lines += [f"  {r.state:9} v{r.revision} {r.subject} <{r.message_id}>"
              + (f" (missing {r.missing})" if r.missing else "") for r in queue]
    lines.append(f"answers ({len(answers)}):")
    for r in answers:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.answered))
        said = r.summary.splitlines() or [""]
        verdict = next((line for line in said if line.startswith("Result: ")), said[0])
        lines.append(f"  {when} {r.state:8} v{r.revision} {r.subject}: {verdict} "
                     f"{r.answer_id}")
    others = [r for r in rows if r not in queue and r.answered is None]
    lines.append(f"other ({len(others)}):")
    lines += [f"  {r.state:12} v{r.revision} {r.subject} <{r.message_id}>" for r in others]
    return printable("\n".join(lines) + "\n")
