"""What the list follower knows, on disk: every series seen, where it stands, its answer.

One sqlite file, each change its own transaction, so a kill at any point leaves a state the
next run picks up: a series being vetted when the rig died is vetted again (a vet writes
nothing the next one needs), and an answer is recorded as due before it is written, under a
Message-Id fixed from the series, so the outbox is checked for it rather than written twice.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

# waiting: patches missing, until the deadline (then queued, MISSING kept: the patches there
# are are vetted); queued: to vet; vetting: being vetted (a run that finds one at its start
# was killed); vetted: summary ready; answered: in the outbox; sent: over SMTP too;
# sending: an SMTP send began and its end was not recorded (never retried); superseded: a
# newer revision came; failed: vetting it killed the rig ATTEMPTS times; muted: its thread
# is not to be answered (--mute), so it is not vetted either.
ACTIVE = ("waiting", "queued", "vetting")
ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    key TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    revision INTEGER NOT NULL,
    inbox TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    author TEXT NOT NULL,
    state TEXT NOT NULL,
    missing TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    thread BLOB NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    status INTEGER,
    out TEXT NOT NULL DEFAULT '',
    answer_id TEXT NOT NULL DEFAULT '',
    answered REAL
);
CREATE TABLE IF NOT EXISTS polls (inbox TEXT PRIMARY KEY, last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS muted (message_id TEXT PRIMARY KEY);
"""


@dataclass(frozen=True)
class Row:
    key: str
    topic: str
    revision: int
    inbox: str
    message_id: str
    subject: str
    author: str
    state: str
    missing: str
    first_seen: float
    updated: float
    attempts: int
    thread: bytes
    summary: str
    status: int | None
    out: str
    answer_id: str
    answered: float | None


class State:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _rows(self, where: str, *args) -> list[Row]:
        cur = self.db.execute(f"SELECT * FROM series WHERE {where}", args)
        return [Row(*r) for r in cur.fetchall()]

    def get(self, key: str) -> Row | None:
        rows = self._rows("key = ?", key)
        return rows[0] if rows else None

    def rows(self, *states: str) -> list[Row]:
        marks = ",".join("?" * len(states))
        return self._rows(f"state IN ({marks}) ORDER BY first_seen, key", *states)

    def all(self) -> list[Row]:
        return self._rows("1 ORDER BY updated DESC, key")

    def set(self, key: str, **fields) -> None:
        fields["updated"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        with self.db:
            self.db.execute(f"UPDATE series SET {names} WHERE key = ?", (*fields.values(), key))

    def arrive(self, key: str, topic: str, revision: int, inbox: str, message_id: str,
               subject: str, author: str, missing: str, thread: bytes,
               muted: bool = False) -> str:
        """Record a series as the thread shows it now; its state after.  MUTED: its thread
        is not to be answered (State.muted).  A newer revision
        supersedes the older ones still waiting or queued; an older one arriving after a
        newer one is superseded at once; one seen before, not yet vetted, gains the patches
        it was missing."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            old = self.db.execute("SELECT state FROM series WHERE key = ?", (key,)).fetchone()
            newer = self.db.execute("SELECT 1 FROM series WHERE topic = ? AND revision > ?",
                                    (topic, revision)).fetchone()
            if old is None:
                state = ("muted" if muted else "superseded" if newer
                         else "waiting" if missing else "queued")
                self.db.execute(
                    "INSERT INTO series (key, topic, revision, inbox, message_id, subject, "
                    "author, state, missing, first_seen, updated, thread) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, topic, revision, inbox, message_id, subject, author, state, missing,
                     now, now, thread))
            else:
                state = old[0]
                # a patch that comes late is vetted with the rest, a deadline's past or not
                if state in ("waiting", "queued"):
                    state = "waiting" if missing and state == "waiting" else "queued"
                    self.db.execute("UPDATE series SET state = ?, missing = ?, thread = ?, "
                                    "updated = ? WHERE key = ?",
                                    (state, missing, thread, now, key))
            if not newer:
                self.db.execute("UPDATE series SET state = 'superseded', updated = ? WHERE "
                                "topic = ? AND revision < ? AND state IN ('waiting', 'queued')",
                                (now, topic, revision))
        return state

    def recover(self) -> list[Row]:
        """At a run's start: a vet the last run did not finish is queued again, or failed
        once it has been tried ATTEMPTS times.  The rows recovered."""
        found = self.rows("vetting")
        for row in found:
            self.set(row.key, state="failed" if row.attempts >= ATTEMPTS else "queued")
        return found

    def mute(self, message_id: str) -> int:
        """No answer on the thread of MESSAGE_ID (any message of it: a later revision sent in
        reply is muted too); the number of series muted before their answer."""
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO muted (message_id) VALUES (?)", (message_id,))
            return self.db.execute(
                "UPDATE series SET state = 'muted', updated = ? WHERE message_id = ? AND "
                "state IN ('waiting', 'queued', 'vetting', 'vetted')",
                (time.time(), message_id)).rowcount

    def muted(self, message_ids: set[str]) -> bool:
        marks = ",".join("?" * len(message_ids))
        return bool(message_ids) and self.db.execute(
            f"SELECT 1 FROM muted WHERE message_id IN ({marks})",
            tuple(message_ids)).fetchone() is not None

    def answers_since(self, when: float) -> int:
        return self.db.execute("SELECT count(*) FROM series WHERE answered >= ?",
                               (when,)).fetchone()[0]

    def last_poll(self, inbox: str) -> float | None:
        row = self.db.execute("SELECT last FROM polls WHERE inbox = ?", (inbox,)).fetchone()
        return row[0] if row else None

    def polled(self, inbox: str, when: float) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO polls (inbox, last) VALUES (?, ?)",
                            (inbox, when))
