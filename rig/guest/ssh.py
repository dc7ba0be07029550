"""SSH into a guest with paramiko: pinned host key, the rig's own client key, no passwords."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import select
import stat
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import paramiko

from rig.core import datafiles
from rig.core.model import CommandResult
from rig.core.status import InfraError

RETRY_PAUSE = 0.25                  # seconds between connection attempts


class SSHError(InfraError):
    """The guest could not be reached or a transfer failed; the message says which and why."""


class HostKeyRejected(SSHError):
    """The server's host key is not the pinned one: never retried, never accepted."""


class GuestGone(SSHError):
    """The caller's liveness check failed while waiting on the guest."""


class Refused(SSHError):
    """Files the guest handed back that the host would not take; the message names each."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    host_key: str                   # the pinned key, "ssh-ed25519 AAAA..."
    client_key: Path
    user: str = "root"


def load_client_key(path: Path) -> paramiko.PKey:
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise SSHError(f"client key {path}: {e.strerror}") from None
    if mode & 0o077:
        raise SSHError(f"client key {path} has mode {stat.S_IMODE(mode):04o}; "
                       "it must be readable by its owner only (0600)")
    try:
        return paramiko.Ed25519Key.from_private_key_file(str(path))
    except (paramiko.SSHException, ValueError) as e:
        raise SSHError(f"client key {path} is not an OpenSSH Ed25519 key: {e}") from None


def _pinned(target: Target) -> paramiko.PKey:
    try:
        kind, blob = target.host_key.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    except (ValueError, paramiko.SSHException) as e:
        raise SSHError(f"pinned host key {target.host_key[:40]!r}... is not valid: {e}") from None


def connect(target: Target, timeout: float, alive: Callable[[], bool] = lambda: True) -> Session:
    """Connect, retrying until TIMEOUT seconds pass or ALIVE() turns false."""
    pkey = load_client_key(target.client_key)
    host_key = _pinned(target)
    deadline = time.monotonic() + timeout
    while True:
        client = paramiko.SSHClient()
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        client.get_host_keys().add(name, host_key.get_name(), host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        left = deadline - time.monotonic()
        try:
            client.connect(target.host, target.port, username=target.user, pkey=pkey,
                           look_for_keys=False, allow_agent=False, timeout=max(left, 1),
                           banner_timeout=max(left, 1), auth_timeout=max(left, 1))
            return Session(client, target)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyRejected(
                f"{name} offered host key {e.key.fingerprint}, not the pinned "
                f"{e.expected_key.fingerprint}; refusing to log in") from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise SSHError(f"{name} refused the client key {target.client_key}: {e}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise HostKeyRejected(f"{name}: {e}; refusing to log in") from None
            if not alive():
                raise GuestGone(f"{name}: the guest went away while connecting") from None
            if time.monotonic() + RETRY_PAUSE > deadline:
                raise SSHError(f"no SSH connection to {name} within {timeout:.0f} s: "
                               f"{type(e).__name__}: {e}") from None
            time.sleep(RETRY_PAUSE)


class Session:
    def __init__(self, client: paramiko.SSHClient, target: Target):
        self.client = client
        self.target = target
        self._sftp: paramiko.SFTPClient | None = None
        self.fetched = 0            # bytes get() took from the guest, against [fetch] boot_bytes

    def run(self, cmd: str, timeout: float,
            alive: Callable[[], bool] = lambda: True) -> CommandResult:
        """Run CMD through the remote shell; on TIMEOUT the channel is closed.

        Raises GuestGone as soon as ALIVE() turns false (checked while waiting).
        """
        start = time.monotonic()
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"the SSH connection to port {self.target.port} is closed")
        try:
            chan = transport.open_session(timeout=timeout)
            chan.exec_command(cmd)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SSHError(f"cannot start {cmd!r}: {e}") from None
        out, err = bytearray(), bytearray()
        try:
            while not (chan.exit_status_ready() and chan.eof_received):
                left = start + timeout - time.monotonic()
                if left <= 0:
                    _drain(chan, out, err)
                    return CommandResult(-1, out.decode(errors="replace"),
                                         err.decode(errors="replace"),
                                         time.monotonic() - start, timed_out=True)
                if not alive():
                    raise GuestGone(f"the guest went away while running {cmd!r}")
                if not transport.is_active():
                    raise SSHError(f"the SSH connection dropped while running {cmd!r}")
                select.select([chan], [], [], min(left, 0.2))
                _drain(chan, out, err)
            _drain(chan, out, err)
            return CommandResult(chan.recv_exit_status(), out.decode(errors="replace"),
                                 err.decode(errors="replace"), time.monotonic() - start)
        finally:
            chan.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError) as e:
                raise SSHError(f"no SFTP on port {self.target.port}: {e}") from None
        return self._sftp

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or a directory tree to REMOTE (created; modes kept)."""
        try:
            if local.is_dir():
                self._mkdir(remote, local.stat().st_mode)
                for child in sorted(local.iterdir()):
                    self.put(child, str(PurePosixPath(remote) / child.name))
            else:
                self.sftp.put(str(local), remote)
                self.sftp.chmod(remote, stat.S_IMODE(local.stat().st_mode))
        except OSError as e:
            raise SSHError(f"cannot copy {local} to guest:{remote}: {e}") from None

    def _mkdir(self, remote: str, mode: int) -> None:
        try:
            self.sftp.mkdir(remote, stat.S_IMODE(mode))
        except OSError:
            if not stat.S_ISDIR(self.sftp.stat(remote).st_mode or 0):
                raise

    def get(self, remote: str, local: Path) -> None:
        """Copy the file or folder tree REMOTE to LOCAL, taking nothing from the guest but
        bytes: files land only under LOCAL (beside it, for a file), as plain files and
        folders with the rig's modes, within the size caps of guest-limits.toml [fetch].
        The rest is copied, then Refused names what was not."""
        limits = datafiles.guest_limits("fetch")
        refused: list[str] = []
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            parent = os.open(local.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._fetch(remote, self.sftp.lstat(remote), parent, local.name, refused,
                            limits)
            finally:
                os.close(parent)
        except OSError as e:
            raise SSHError(f"cannot copy guest:{remote} to {local}: {e}") from None
        if refused:
            raise Refused(f"refused from guest:{remote}: {'; '.join(refused)}")

    def _fetch(self, remote: str, attrs: paramiko.SFTPAttributes, dirfd: int, name: str,
               refused: list[str], limits: dict[str, int]) -> None:
        """REMOTE (whose lstat the guest said is ATTRS) as NAME in the folder DIRFD."""
        mode = attrs.st_mode or 0
        if stat.S_ISREG(mode):
            self._file(remote, attrs.st_size or 0, dirfd, name, refused, limits)
            return
        if not stat.S_ISDIR(mode):
            refused.append(f"{remote}: {_kind(mode)}, not a plain file")
            return
        try:
            entries = self.sftp.listdir_attr(remote)
        except UnicodeDecodeError:
            refused.append(f"{remote}: a name in it is not UTF-8; the folder was not read")
            return
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, limits["dir_mode"], dir_fd=dirfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        try:
            os.fchmod(fd, limits["dir_mode"])
            for entry in sorted(entries, key=lambda e: e.filename):
                child = f"{remote.rstrip('/')}/{entry.filename}"
                why = bad_name(entry.filename, limits["name_bytes"])
                if why:
                    refused.append(f"{remote}: the name {entry.filename!r} {why}")
                else:
                    self._fetch(child, entry, fd, entry.filename, refused, limits)
        finally:
            os.close(fd)

    def _file(self, remote: str, size: int, dirfd: int, name: str, refused: list[str],
              limits: dict[str, int]) -> None:
        """The regular file REMOTE as NAME in DIRFD: written under a fresh name (O_EXCL,
        never through a link), then renamed over NAME, which is replaced, never followed."""
        cap = limits["file_bytes"]
        left = limits["boot_bytes"] - self.fetched
        if size > min(cap, left):
            refused.append(f"{remote}: {_too_big(size, cap, left)}")
            return
        tmp = f".rig-fetch-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     limits["file_mode"], dir_fd=dirfd)
        done = False
        try:
            got = 0
            with os.fdopen(os.dup(fd), "wb") as out, self.sftp.open(remote, "rb") as fh:
                fh.prefetch(size)
                # the size the guest gave may lie: count what comes
                while chunk := fh.read(min(1 << 20, min(cap, left) + 1 - got)):
                    got += len(chunk)
                    if got > min(cap, left):
                        refused.append(f"{remote}: {_too_big(got, cap, left)}")
                        return
                    out.write(chunk)
            os.fchmod(fd, limits["file_mode"])
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            self.fetched += got
            done = True
        finally:
            os.close(fd)
            if not done:
                os.unlink(tmp, dir_fd=dirfd)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


def bad_name(name: str, limit: int) -> str:
    """Why NAME, one entry of a guest's folder, is no file name on the host ("" if it is)."""
    if name in ("", ".", ".."):
        return "is not a file name"
    if "/" in name or "\0" in name:
        return "has a '/' or NUL in it"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "has a control character in it"
    if len(name.encode()) > limit:
        return f"is longer than {limit} bytes"
    return ""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), f"mode {mode:o}")


def _too_big(size: int, cap: int, left: int) -> str:
    if size > cap:
        return f"more than {cap} bytes ({size} or more), the cap on one file"
    return (f"{size} bytes, more than the {left} left of what one guest may hand back "
            "([fetch] boot_bytes)")


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    try:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
    except TimeoutError:
        pass
