"""Patch sets: read them from a series folder, a patch file or an mbox, and apply them.

A patch set is a folder with a quilt-style ``series`` file (or, without one, the ``*.patch``
files ``git format-patch -o`` wrote), a single .patch/.diff with or without mail headers, or an
mbox of several patches (``git format-patch --stdout``, ``b4 am``).  Only the diff part of each
patch is kept, hashed and applied, so mail headers and signatures never change a cache key.
Patches apply with ``git apply`` semantics: no fuzz, and each patch all or nothing.  Every
path a patch touches is checked before anything is written: a patch reaching outside the
tree (an absolute path, a ``..`` component) is refused.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import mailbox
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from rig.core import proc, safefs
from rig.core.model import Patch
from rig.core.status import RigError
from rig.kernel import sandbox as sandboxlib


class PatchError(RigError):
    """A patch set that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class IncompleteSeries(PatchError):
    """Patches numbered n/N of which some n never came: refused unless asked for as partial."""


@dataclass(frozen=True)
class ApplyResult:
    """What apply() did: the first APPLIED patches are in the tree, the next one failed."""

    applied: int
    failed: Patch | None = None
    file: str = ""                   # the file git could not patch, "" if it named none
    hunk: int | None = None          # 1-based, among that file's hunks in the patch
    line: int | None = None          # where git looked for that hunk in the file
    reason: str = ""                 # git's one-line reason
    detail: str = ""                 # git apply's whole message

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def message(self) -> str:
        if self.failed is None:
            return ""
        what = f"patch {self.failed.index} ({self.failed.subject}) does not apply"
        if self.hunk is not None:
            return f"{what}: hunk #{self.hunk} of {self.file} (at line {self.line}) does not match"
        if self.file:
            return f"{what}: {self.file}: {self.reason}"
        return f"{what}: {self.reason}"


# ---------------------------------------------------------------------------------------------
# The diff part of a patch: git says what it touches

_HUNK_COUNTS = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
# Lines that diff -ruN or quilt write before a file's diff: not a subject.
_BETWEEN_FILES = re.compile(r"(diff |Index: |Only in |=+$)")
_HUNK = re.compile(r"^@@ -(\d+)")
_MOVE = re.compile(r"^(?:rename|copy) (from|to) (.+)$")
_NO_PATCH = "No valid patches in input"


def _git(args: list[str], what: str, *, cwd: Path | None = None,
         input: bytes | None = None, sandbox: proc.Sandbox | None = None) -> proc.Ran:
    # GIT_DIR pointing nowhere: a tree is patched as a plain directory whether or not it (or a
    # directory above it) is a git repository; no user or system config changes semantics.
    env = {"GIT_DIR": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "LC_ALL": "C"}
    try:
        return proc.run(["git", *args], what, cwd=cwd, env=env, input=input, check=False,
                        sandbox=sandbox)
    except proc.LimitExceeded:
        raise
    except proc.CommandFailed:
        raise PatchError(cwd or Path("."), "git is not installed: patches are read and "
                                           "applied with git apply") from None


def _diff_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if line.startswith("diff --git ") or (
                line.startswith("--- ") and i + 1 < len(lines)
                and lines[i + 1].startswith("+++ ")):
            return i
    return None


def _diff_text(text: str) -> str | None:
    """TEXT from its first diff line on, without the format-patch signature ("-- " and what
    follows), so that mail headers and signatures never change a patch's hash; None when
    there is no diff line at all.  Whether it is a usable diff is git's to say (_touched)."""
    lines = text.split("\n")
    start = _diff_start(lines)
    if start is None:
        return None
    end = _signature(lines, start)
    diff = "\n".join(lines[start:end]) + "\n" * (end < len(lines))
    return diff.rstrip("\n") + "\n" if not diff.endswith("\n\n") else diff


def _signature(lines: list[str], start: int) -> int:
    """Where the format-patch signature ("-- ") begins: the first such line outside a hunk;
    inside one, "-- " is a removed line "- " (each hunk's header says how many lines it
    has).  len(LINES) when there is none."""
    old = new = 0                    # lines of the current hunk still to come
    for i in range(start, len(lines)):
        line = lines[i]
        if old > 0 or new > 0:
            if line.startswith(("-", " ")) or line == "":
                old -= 1
            if line.startswith(("+", " ")) or line == "":
                new -= 1
        elif m := _HUNK_COUNTS.match(line):
            old, new = (int(n) if n is not None else 1 for n in m.groups())
        elif line == "-- ":
            return i
    return len(lines)


def _touched(origin: Path, diff: str) -> list[str]:
    """The paths git apply -p1 patches, as git apply --numstat names them (new names)."""
    ran = _git(["apply", "--numstat", "-z", "-"], f"reading {origin}",
               input=diff.encode("utf-8", "surrogateescape"))
    if ran.status != 0:
        why = ran.stderr.strip().splitlines()
        if any(_NO_PATCH in line for line in why):
            raise PatchError(origin, "not a patch: it has no diff (git apply: "
                                     f"{_NO_PATCH.lower()})")
        raise PatchError(origin, f"git apply cannot read it: {why[0] if why else 'no reason'}")
    # "added<TAB>deleted<TAB>path<NUL>" per file
    return [entry.split("\t", 2)[2] for entry in ran.stdout.split("\0") if entry]


def _written(diff: str) -> tuple[list[str], dict[str, str]]:
    """What git apply's output does not tell: every name as the diff writes it (both sides
    of each ---/+++ pair and of git's rename and copy headers), and each renamed or copied
    file's new name -> old name."""
    names: list[str] = []
    moved: dict[str, str] = {}
    lines = diff.split("\n")
    source = ""
    for i, line in enumerate(lines):
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            names += [line[4:].split("\t")[0], lines[i + 1][4:].split("\t")[0]]
        elif m := _MOVE.match(line):
            names.append(m[2])
            if m[1] == "from":
                source = m[2]
            else:
                moved[m[2]] = source
    return [n for n in names if n != "/dev/null"], moved


def _check_paths(origin: Path, diff: str) -> list[str]:
    """The paths DIFF touches, relative to the tree (a renamed file's old name before its
    new one); refuses any that reach outside the tree, before git apply ever runs."""
    touched = _touched(origin, diff)
    written, moved = _written(diff)
    for path in written + touched:
        if path.startswith("/"):
            raise PatchError(origin, f"refusing a patch that touches an absolute path: {path}")
        if ".." in path.split("/"):
            raise PatchError(origin, f"refusing a patch that reaches outside the tree with "
                                     f"'..': {path}")
    return list(dict.fromkeys(p for new in touched for p in (moved.get(new), new) if p))


def patch_files(patch: Patch) -> list[str]:
    """The paths, relative to the tree, that PATCH creates, changes, renames or deletes."""
    return _check_paths(patch.origin, patch.diff)


def _hunk_starts(diff: str, path: str) -> list[int]:
    """The old start lines of PATH's hunks.  git apply names a failed hunk only by the line
    where it looked; its number among the file's hunks, as a maintainer reads the patch, is
    counted here."""
    def names(name: str) -> bool:
        name = name.split("\t")[0]
        return name == path or name.endswith(f"/{path}")

    starts: list[int] = []
    inside = False
    lines = diff.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("diff --git "):
            inside = names(line)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            inside = names(line[4:]) or names(lines[i + 1][4:])
        elif inside and (m := _HUNK.match(line)):
            starts.append(int(m[1]))
    return starts


# ---------------------------------------------------------------------------------------------
# Reading patch files, mails and mboxes

def number(prefix: str) -> tuple[int, int] | None:
    """(n, N) from "[PATCH v2 n/N]"; the last such pair, after any "5.10/6.1"-like tag."""
    found = re.findall(r"\b(\d+)/(\d+)\b", prefix)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def gaps(patches: Sequence[Patch]) -> tuple[str, ...]:
    """"2/3", ...: the patches of a series numbered n/N, all of one N, that are not here (a
    patch saved alone from a mail numbered 10/20 has 19)."""
    numbers = [number(p.prefix) for p in patches]
    if not numbers or None in numbers or len({n[1] for n in numbers}) > 1:
        return ()
    total = numbers[0][1]
    return tuple(f"{k}/{total}" for k in range(1, total + 1) if (k, total) not in numbers)


@dataclass
class _Mail:
    subject: str
    prefix: str
    author: str
    message_id: str
    diff: str | None
    reply: bool = False

    @property
    def number(self) -> tuple[int, int] | None:
        return number(self.prefix)

    @property
    def skipped(self) -> bool:
        """A cover letter (0/N) or a reply: not part of the series, whatever it quotes."""
        return self.reply or (self.number is not None and self.number[0] == 0)

    def describe(self) -> str:
        return f"{self.prefix} {self.subject}".strip()


def _split_subject(raw: str) -> tuple[str, str]:
    """("[PATCH v2 3/7]", "IB/umem: ...") from a subject, folded or not."""
    raw = " ".join(raw.split())
    m = re.match(r"(?:\[[^\]]*\]\s*)+", raw)
    return (m[0].strip(), raw[m.end():]) if m else ("", raw)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PatchError(path, "no such file") from None
    except OSError as exc:
        raise PatchError(path, f"cannot read it: {exc.strerror}") from None
    if not data.strip():
        raise PatchError(path, "empty file, not a patch")
    nul = data.find(b"\0")
    if nul >= 0:
        raise PatchError(path, f"binary data, not a patch (a NUL byte at offset {nul})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PatchError(path, f"binary data or text that is not UTF-8, not a patch (byte "
                               f"{data[exc.start]:#04x} at offset {exc.start})") from None


def _mail_text(path: Path, msg: EmailMessage) -> str:
    """The text parts of MSG (the body and any text/x-patch attachments), decoded."""
    parts = [p for p in msg.walk() if not p.is_multipart()
             and p.get_content_maintype() == "text" and p.get_content_subtype() != "html"]
    try:
        return "\n".join(p.get_content() for p in parts)
    except (LookupError, UnicodeError) as exc:
        raise PatchError(path, f"message {msg.get('Subject', '')!r}: cannot decode its text: "
                               f"{exc}") from None


def _from_message(path: Path, msg: EmailMessage) -> _Mail:
    body = _mail_text(path, msg)
    subject, author = str(msg.get("Subject", "")), str(msg.get("From", ""))
    reply = subject.lstrip().lower().startswith("re:")
    # git am convention: "From:"/"Subject:" lines opening the body override the mail's own.
    lines = body.split("\n")
    inbody = 0
    while inbody < len(lines) and re.match(r"(From|Subject|Date): ", lines[inbody]):
        inbody += 1
    if inbody and inbody < len(lines) and not lines[inbody].strip():
        for line in lines[:inbody]:
            key, _, value = line.partition(": ")
            if key == "From":
                author = value.strip()
            elif key == "Subject":
                subject = value
    prefix, subject = _split_subject(subject)
    name, address = email.utils.parseaddr(author)
    author = f"{name} <{address}>" if name and address else author.strip()
    return _Mail(subject, prefix, author, str(msg.get("Message-ID", "")).strip().strip("<>"),
                 _diff_text(body), reply)


def _from_plain(path: Path, text: str) -> _Mail:
    diff = _diff_text(text)
    lines = text.split("\n")
    top = lines[:_diff_start(lines) or 0]
    first = next((line.strip() for line in top if line.strip()
                  and not _BETWEEN_FILES.match(line)), path.name)
    prefix, subject = _split_subject(first)
    return _Mail(subject, prefix, "", "", diff)


_MAIL_HEADER = re.compile(r"[A-Za-z][A-Za-z0-9-]*: ")


def _read_mails(path: Path) -> list[_Mail]:
    text = _read_text(path)
    if text.startswith("From "):
        box = mailbox.mbox(path, create=False, factory=lambda f: email.message_from_binary_file(
            f, policy=email.policy.default))
        try:
            return [_from_message(path, msg) for msg in box]
        finally:
            box.close()
    if _MAIL_HEADER.match(text):
        msg = email.message_from_string(text, policy=email.policy.default)
        if msg.get("Subject") or msg.get("From"):
            return [_from_message(path, msg)]
    return [_from_plain(path, text)]


def _patch_mails(path: Path, mails: list[_Mail]) -> list[_Mail]:
    """The mails that are patches; cover letters and replies are skipped."""
    for k, mail in enumerate(mails, 1):
        if mail.diff is None and not mail.skipped:
            what = f"message {k} ({mail.describe()!r})" if len(mails) > 1 else "it"
            raise PatchError(path, f"not a patch: {what} has no diff (no 'diff --git' or "
                                   "'---'/'+++' lines)")
    return [m for m in mails if not m.skipped]


def _in_series_order(path: Path, patches: list[_Mail]) -> list[_Mail]:
    """Several patches of one file in "n/N" order when numbered, else as they come."""
    numbers = [p.number for p in patches]
    if len(patches) < 2 or not any(numbers):
        return patches
    if not all(numbers):
        bare = next(p for p in patches if not p.number)
        raise PatchError(path, f"some patches are numbered n/N and some not ({bare.describe()!r}):"
                               " is this one series?")
    totals = sorted({n[1] for n in numbers if n})
    if len(totals) > 1:
        raise PatchError(path, "patches of different series (numbered out of "
                               f"{', '.join(map(str, totals))}): give one series at a time")
    seen = sorted(n[0] for n in numbers if n)
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise PatchError(path, f"two patches numbered {dup[0]}/{totals[0]}: two versions of the "
                               "series mixed?")
    return sorted(patches, key=lambda p: p.number or (0, 0))


def _series_entries(series: Path) -> list[Path]:
    """The patches SERIES names: plain files in its own folder (no link, no '..', no
    absolute path), each once."""
    folder, names, first = series.parent, [], {}
    for lineno, raw in enumerate(series.read_text(errors="replace").split("\n"), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        name, options = words[0], words[1:]
        for opt in options:
            if opt != "-p1":
                raise PatchError(series, f"line {lineno}: option {opt!r} for {name}: only -p1 is "
                                         "supported (patches apply as git apply -p1 does)")
        if name.startswith("/") or ".." in name.split("/"):
            raise PatchError(series, f"line {lineno} names {name}, which is outside {folder}: "
                                     "a series names patches in its own folder")
        if (folder / name).is_symlink() or (
                (folder / name).exists() and safefs.regular(folder, name) is None):
            raise PatchError(series, f"line {lineno} names {name}, which is a symbolic link "
                                     f"or on one: refused (a series names plain files)")
        if not (folder / name).is_file():
            raise PatchError(series, f"line {lineno} names {name}, which is not a file in {folder}")
        key = os.path.normpath(name)
        if key in first:
            raise PatchError(series, f"line {lineno} names {name} again (first on line "
                                     f"{first[key]}): each patch is applied once")
        first[key] = lineno
        names.append(folder / name)
    if not names:
        raise PatchError(series, "names no patches")
    return names


def _patch(origin: Path, index: int, mail: _Mail) -> Patch:
    assert mail.diff is not None
    _check_paths(origin, mail.diff)
    text = mail.diff
    return Patch(origin, index, mail.subject, mail.author, mail.message_id, text,
                 hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(), mail.prefix)


def load(source: Path, partial: bool = False) -> list[Patch]:
    """The patches of SOURCE in order: a series folder, a patch file, or an mbox.

    Raises PatchError, naming the file and the problem, for anything that is not a usable
    patch set, and IncompleteSeries for patches numbered n/N with some missing unless
    PARTIAL.  Paths are checked here already, so a bad set is refused before any work.
    """
    if source.is_dir():
        series = source / "series"
        if series.is_file():
            files = _series_entries(series)
        else:
            files = sorted(source.glob("*.patch"))
            if not files:
                raise PatchError(source, "no series file and no *.patch files: not a patch set")
        found = [(f, m) for f in files for m in _patch_mails(f, _read_mails(f))]
        if not found:
            raise PatchError(source, "no patches in it, only cover letters")
    else:
        mails = _read_mails(source)
        found = [(source, m) for m in _in_series_order(source, _patch_mails(source, mails))]
        if not found:
            n = len(mails)
            raise PatchError(source, f"no patches in it: {n} message{'s' * (n > 1)}, only cover "
                                     "letters and replies")
    patches = [_patch(origin, k, mail) for k, (origin, mail) in enumerate(found, 1)]
    if (missing := gaps(patches)) and not partial:
        raise IncompleteSeries(source, f"incomplete series: {', '.join(missing)} missing")
    return patches


# ---------------------------------------------------------------------------------------------
# Applying

_PATCH_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.MULTILINE)
_FILE_ERROR = re.compile(r"^error: (.+?): (.+)$", re.MULTILINE)


def _failure(applied: int, patch: Patch, stderr: str) -> ApplyResult:
    detail = stderr.strip()
    m = _PATCH_FAILED.search(stderr)
    if m:
        name, line = m[1], int(m[2])
        hunks = _hunk_starts(patch.diff, name)
        hunk = hunks.index(line) + 1 if line in hunks else None
        return ApplyResult(applied, patch, name, hunk, line, "patch does not apply", detail)
    names = set(patch_files(patch))
    for m in _FILE_ERROR.finditer(stderr):
        if m[1] in names:
            return ApplyResult(applied, patch, m[1], reason=m[2], detail=detail)
    first = next((ln for ln in detail.splitlines() if ln.startswith(("error:", "fatal:"))),
                 detail.splitlines()[0] if detail else "git apply failed without a message")
    return ApplyResult(applied, patch, reason=first.partition(": ")[2] or first, detail=detail)


def apply(tree: Path, patches: Sequence[Patch],
          sandbox: sandboxlib.Settings | None = None) -> ApplyResult:
    """Apply PATCHES to TREE in order, each checked first, none with fuzz.

    Stops at the first patch that does not apply and names it, its file and hunk; the tree
    is then exactly as the patches before it left it.  Paths of every patch are checked
    before the first is applied.  With SANDBOX, git runs in it, able to write TREE only.
    """
    box = sandboxlib.Box(sandbox, writable=(tree,)) if sandbox else None
    if not tree.is_dir():
        raise PatchError(tree, "not a directory: cannot apply patches to it")
    for patch in patches:
        patch_files(patch)
    for done, patch in enumerate(patches):
        for check in (["--check"], []):
            try:
                ran = _git(["apply", *check, "-"], f"applying {patch.origin}", cwd=tree,
                           input=patch.diff.encode("utf-8", "surrogateescape"), sandbox=box)
            except proc.LimitExceeded as exc:
                return ApplyResult(done, patch, reason=str(exc), detail=exc.excerpt)
            if ran.status != 0:
                return _failure(done, patch, ran.stderr)
    return ApplyResult(len(patches))


def dry_run(pristine: Path, patches: Sequence[Patch], scratch: Path,
            sandbox: sandboxlib.Settings | None = None) -> ApplyResult:
    """What apply() would make of PATCHES on the tree PRISTINE, tried in SCRATCH on copies of
    only the files they touch (a kernel tree is too big to copy for a check); PRISTINE is
    only read."""
    for rel in dict.fromkeys(f for p in patches for f in patch_files(p)):
        if (pristine / rel).is_file():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(pristine / rel, scratch / rel)
    return apply(scratch, patches, sandbox)
