"""SSH into a guest with paramiko: pinned host key, the rig's own client key, no passwords."""

from __future__ import annotations

import base64
import os
import select
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import paramiko

from rig.model import CommandResult

RETRY_PAUSE = 0.25                  # seconds between connection attempts


class SSHError(Exception):
    """The guest could not be reached or a transfer failed; the message says which and why."""


class HostKeyRejected(SSHError):
    """The server's host key is not the pinned one: never retried, never accepted."""


class GuestGone(SSHError):
    """The caller's liveness check failed while waiting on the guest."""


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
        """Copy a file or a directory tree from REMOTE to LOCAL (created; modes kept)."""
        try:
            attrs = self.sftp.stat(remote)
            if stat.S_ISDIR(attrs.st_mode or 0):
                local.mkdir(parents=True, exist_ok=True)
                for entry in self.sftp.listdir_attr(remote):
                    self.get(str(PurePosixPath(remote) / entry.filename), local / entry.filename)
            else:
                self.sftp.get(remote, str(local))
            os.chmod(local, stat.S_IMODE(attrs.st_mode or 0o644))
        except OSError as e:
            raise SSHError(f"cannot copy guest:{remote} to {local}: {e}") from None

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    try:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
    except TimeoutError:
        pass
