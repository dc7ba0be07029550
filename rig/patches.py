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
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from .model import Patch


class PatchError(Exception):
    """A patch set that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


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
# The diff part of a patch

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_GIT_HEADERS = ("old mode ", "new mode ", "deleted file mode ", "new file mode ", "index ",
                "similarity index ", "dissimilarity index ", "copy from ", "copy to ",
                "rename from ", "rename to ", "Binary files ")
# Lines that diff -ruN or quilt write between files; git apply skips them, so may we.
_BETWEEN_FILES = re.compile(r"(diff |Index: |Only in |=+$)")
_RENAME = re.compile(r"(?:rename|copy) (from|to) (.+)")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass
class _FileDiff:
    written: list[str] = field(default_factory=list)   # paths as the patch spells them
    old: str | None = None           # the path git apply -p1 patches; None: a new file
    new: str | None = None           # the path it writes; None: a deleted file
    hunks: list[int] = field(default_factory=list)     # each hunk's old start line
    has_names: bool = False          # saw ---/+++ lines, so hunks may follow
    changes: bool = False            # hunks, or a git header that changes something


@dataclass(frozen=True)
class _Diff:
    text: str
    files: tuple[_FileDiff, ...]


def _unquote(path: str) -> str:
    """A path as git writes one with special characters: "C-style quoted"."""
    if len(path) < 2 or path[0] != '"' or path[-1] != '"':
        return path
    out, i, s = bytearray(), 1, path
    while i < len(s) - 1:
        if s[i] == "\\" and s[i + 1] in "01234567":
            out.append(int(s[i + 1:i + 4], 8) & 0xFF)
            i += 4
        elif s[i] == "\\":
            out.append(_C_ESCAPES.get(s[i + 1], ord(s[i + 1])))
            i += 2
        else:
            out += s[i].encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _name(written: str) -> str:
    """A ---/+++ path without the timestamp diff -u appends."""
    if written.startswith('"'):
        return _unquote(written[:written.rindex('"') + 1])
    return written.split("\t")[0]


def _strip1(path: str) -> str | None:
    """What git apply -p1 makes of a ---/+++ or diff --git path; None for /dev/null."""
    if path == "/dev/null":
        return None
    return path.split("/", 1)[1] if "/" in path else path


def _git_line_names(rest: str) -> list[str]:
    """The two paths of "diff --git a/P b/P"; they may contain spaces, so split in the middle."""
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[2:half] == rest[half + 3:]:
        return [rest[:half], rest[half + 1:]]
    m = re.fullmatch(r'("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)', rest)
    return [_unquote(m[1]), _unquote(m[2])] if m else []


def _hunk_end(lines: list[str], i: int, m: re.Match, origin: Path, file: str) -> int:
    """The index of the line after the hunk whose header is lines[i]."""
    old = int(m[2]) if m[2] is not None else 1
    new = int(m[4]) if m[4] is not None else 1
    j = i + 1
    while old > 0 or new > 0:
        if j >= len(lines):
            raise PatchError(origin, f"hunk {lines[i]!r} of {file} is cut short: the text ends "
                                     "before the lines its header counts")
        tag = lines[j][:1]
        if tag in (" ", ""):         # "": a context line whose blank a mailer trimmed
            old, new = old - 1, new - 1
        elif tag == "-":
            old -= 1
        elif tag == "+":
            new -= 1
        elif tag != "\\":            # "\ No newline at end of file"
            raise PatchError(origin, f"hunk {lines[i]!r} of {file} is corrupt: line "
                                     f"{lines[j][:60]!r} is not part of a hunk")
        j += 1
    if old < 0 or new < 0:
        raise PatchError(origin, f"hunk {lines[i]!r} of {file} is corrupt: it has more lines "
                                 "than its header counts")
    return j + 1 if j < len(lines) and lines[j].startswith("\\") else j


def _diff_start(lines: list[str], at: int = 0) -> int | None:
    for i in range(at, len(lines)):
        if lines[i].startswith("diff --git ") or (
                lines[i].startswith("--- ") and i + 1 < len(lines)
                and lines[i + 1].startswith("+++ ")):
            return i
    return None


def _parse_diff(text: str, origin: Path) -> _Diff | None:
    """The diff in TEXT, which may start with a message and end with a signature; None if
    there is none.  Only what git apply would act on is kept."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    start = _diff_start(lines)
    if start is None:
        return None
    files: list[_FileDiff] = []
    cur: _FileDiff | None = None
    i = end = start
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            cur = _FileDiff()
            files.append(cur)
            names = _git_line_names(line[len("diff --git "):])
            cur.written += names
            if names:
                cur.old, cur.new = _strip1(names[0]), _strip1(names[1])
            i += 1
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            if cur is None or cur.has_names:
                cur = _FileDiff()
                files.append(cur)
            old, new = _name(line[4:]), _name(lines[i + 1][4:])
            cur.written += [old, new]
            cur.old, cur.new, cur.has_names = _strip1(old), _strip1(new), True
            i += 2
        elif cur is not None and cur.has_names and (m := _HUNK.match(line)):
            cur.hunks.append(int(m[1]))
            cur.changes = True
            i = _hunk_end(lines, i, m, origin, cur.new or cur.old or "?")
        elif cur is not None and not cur.hunks and line.startswith(_GIT_HEADERS):
            if r := _RENAME.match(line):
                cur.written.append(_unquote(r[2]))
                if r[1] == "from":
                    cur.old = _unquote(r[2])
                else:
                    cur.new = _unquote(r[2])
            elif line.startswith("new file mode "):
                cur.old = None
            elif line.startswith("deleted file mode "):
                cur.new = None
            cur.changes = cur.changes or not line.startswith("index ")
            i += 1
        elif cur is not None and line == "GIT binary patch":
            cur.changes = True
            i += 1
            while i < len(lines) and not lines[i].startswith("diff --git ") and lines[i] != "-- ":
                i += 1
        elif _BETWEEN_FILES.match(line):
            i += 1
            continue
        else:
            # Text after a diff: a signature, or words before another diff git would apply too.
            nxt = _diff_start(lines, i + 1)
            if nxt is None:
                break
            cur, i = None, nxt
            continue
        end = i
    if not any(f.changes for f in files):
        return None
    return _Diff("\n".join(lines[start:end]) + "\n", tuple(files))


def _check_paths(origin: Path, diff: _Diff) -> list[str]:
    """The paths DIFF touches, relative to the tree; refuses any that reach outside it."""
    touched: list[str] = []
    for f in diff.files:
        for path in f.written:
            if path != "/dev/null" and path.startswith("/"):
                raise PatchError(origin, f"refusing a patch that touches an absolute path: {path}")
            if ".." in path.split("/"):
                raise PatchError(origin, f"refusing a patch that reaches outside the tree with "
                                         f"'..': {path}")
        for path in (f.old, f.new):
            if path is None:
                continue
            if not path or path.startswith("/"):
                raise PatchError(origin, f"refusing a patch whose path {path!r} is absolute or "
                                         "empty once git apply -p1 strips its first component")
            if path not in touched:
                touched.append(path)
    return touched


def patch_files(patch: Patch) -> list[str]:
    """The paths, relative to the tree, that PATCH creates, changes, renames or deletes."""
    diff = _parse_diff(patch.diff, patch.origin)
    if diff is None:
        raise PatchError(patch.origin, f"patch {patch.index} ({patch.subject}) has no diff")
    return _check_paths(patch.origin, diff)


# ---------------------------------------------------------------------------------------------
# Reading patch files, mails and mboxes

@dataclass
class _Mail:
    subject: str
    prefix: str
    author: str
    message_id: str
    diff: _Diff | None
    reply: bool = False

    @property
    def number(self) -> tuple[int, int] | None:
        """(n, N) from "[PATCH v2 n/N]"; the last such pair, after any "5.10/6.1"-like tag."""
        found = re.findall(r"\b(\d+)/(\d+)\b", self.prefix)
        return (int(found[-1][0]), int(found[-1][1])) if found else None

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
                 _parse_diff(body, path), reply)


def _from_plain(path: Path, text: str) -> _Mail:
    diff = _parse_diff(text, path)
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
    missing = [n for n in range(1, totals[0] + 1) if n not in seen]
    if missing:
        raise PatchError(path, "incomplete series: "
                               f"{', '.join(f'{n}/{totals[0]}' for n in missing)} missing")
    return sorted(patches, key=lambda p: p.number or (0, 0))


def _series_entries(series: Path) -> list[Path]:
    folder, names = series.parent, []
    for lineno, raw in enumerate(series.read_text(errors="replace").split("\n"), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        name, options = words[0], words[1:]
        for opt in options:
            if opt != "-p1":
                raise PatchError(series, f"line {lineno}: option {opt!r} for {name}: only -p1 is "
                                         "supported (patches apply as git apply -p1 does)")
        if not (folder / name).is_file():
            raise PatchError(series, f"line {lineno} names {name}, which is not a file in {folder}")
        names.append(folder / name)
    if not names:
        raise PatchError(series, "names no patches")
    return names


def _patch(origin: Path, index: int, mail: _Mail) -> Patch:
    assert mail.diff is not None
    _check_paths(origin, mail.diff)
    text = mail.diff.text
    return Patch(origin, index, mail.subject, mail.author, mail.message_id, text,
                 hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(), mail.prefix)


def load(source: Path) -> list[Patch]:
    """The patches of SOURCE in order: a series folder, a patch file, or an mbox.

    Raises PatchError, naming the file and the problem, for anything that is not a usable
    patch set.  Paths are checked here already, so a bad set is refused before any work.
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
    return [_patch(origin, k, mail) for k, (origin, mail) in enumerate(found, 1)]


# ---------------------------------------------------------------------------------------------
# Applying

_PATCH_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.MULTILINE)
_FILE_ERROR = re.compile(r"^error: (.+?): (.+)$", re.MULTILINE)


def _git_apply(git: str, tree: Path, patch: Patch, check: bool) -> subprocess.CompletedProcess:
    # GIT_DIR pointing nowhere: the tree is patched as a plain directory whether or not it (or
    # a directory above it) is a git repository; no user or system config changes semantics.
    env = dict(os.environ, GIT_DIR=os.devnull, GIT_CONFIG_NOSYSTEM="1",
               GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C")
    cmd = [git, "apply", *(["--check"] if check else []), "-"]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, check=False,
                          input=patch.diff.encode("utf-8", "surrogateescape"))


def _failure(applied: int, patch: Patch, stderr: str) -> ApplyResult:
    diff = _parse_diff(patch.diff, patch.origin)
    files = diff.files if diff else ()
    detail = stderr.strip()
    m = _PATCH_FAILED.search(stderr)
    if m:
        name, line = m[1], int(m[2])
        hunks = next((f.hunks for f in files if name in (f.old, f.new)), [])
        hunk = hunks.index(line) + 1 if line in hunks else None
        return ApplyResult(applied, patch, name, hunk, line, "patch does not apply", detail)
    names = {n for f in files for n in (f.old, f.new) if n}
    for m in _FILE_ERROR.finditer(stderr):
        if m[1] in names:
            return ApplyResult(applied, patch, m[1], reason=m[2], detail=detail)
    first = next((ln for ln in detail.splitlines() if ln.startswith(("error:", "fatal:"))),
                 detail.splitlines()[0] if detail else "git apply failed without a message")
    return ApplyResult(applied, patch, reason=first.partition(": ")[2] or first, detail=detail)


def apply(tree: Path, patches: Sequence[Patch]) -> ApplyResult:
    """Apply PATCHES to TREE in order, each checked first, none with fuzz.

    Stops at the first patch that does not apply and names it, its file and hunk; the tree
    is then exactly as the patches before it left it.  Paths of every patch are checked
    before the first is applied.
    """
    if not tree.is_dir():
        raise PatchError(tree, "not a directory: cannot apply patches to it")
    git = shutil.which("git")
    if git is None:
        raise PatchError(tree, "git is not installed: patches are applied with git apply")
    for patch in patches:
        patch_files(patch)
    for done, patch in enumerate(patches):
        for check in (True, False):
            proc = _git_apply(git, tree, patch, check)
            if proc.returncode != 0:
                return _failure(done, patch, proc.stderr.decode("utf-8", "replace"))
    return ApplyResult(len(patches))
