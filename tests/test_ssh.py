"""rig.ssh against a real paramiko SSH server running in this process on 127.0.0.1.

The server accepts only the client's public key and runs commands with /bin/sh, so the
client's pinning, retries, exit status, output and timeout are all exercised for real.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from rig import ssh
from rig.cache import Cache
from rig.image import client_key


class _Server(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey):
        self.allowed = allowed

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "root" and key.asbytes() == self.allowed.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_execute, args=(channel, command), daemon=True).start()
        return True


def _execute(channel: paramiko.Channel, command: bytes) -> None:
    with subprocess.Popen(["/bin/sh", "-c", command.decode()], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            # Output goes out as it comes, as sshd's does, so a timeout keeps what was printed.
            while chunk := proc.stdout.read1():
                channel.sendall(chunk)
            channel.sendall_stderr(proc.stderr.read())
            channel.send_exit_status(proc.wait())
            channel.close()
        except (OSError, EOFError):
            proc.kill()             # the client gave up on this command (timeout test)


class SSHServer:
    """Listens on 127.0.0.1 with HOST_KEY, optionally only after DELAY seconds."""

    def __init__(self, host_key: paramiko.PKey, client: paramiko.PKey, delay: float = 0.0):
        self.host_key, self.client = host_key, client
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(delay,), daemon=True)
        self._thread.start()

    def _serve(self, delay: float) -> None:
        time.sleep(delay)
        with socket.socket() as lsock:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(("127.0.0.1", self.port))
            lsock.listen()
            lsock.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    conn, _ = lsock.accept()
                except TimeoutError:
                    continue
                t = paramiko.Transport(conn)
                t.add_server_key(self.host_key)
                self.transports.append(t)
                try:
                    t.start_server(server=_Server(self.client))
                except (paramiko.SSHException, OSError):
                    continue        # a client that refuses our host key hangs up mid-handshake

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for t in self.transports:
            t.close()


def _public(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, paramiko.PKey, paramiko.PKey]:
    """(client key file made the rig's way, the client key, the host key the rig pins)."""
    path = client_key(Cache(tmp_path / "cache"))
    host_path = client_key(Cache(tmp_path / "host"))
    return (path, paramiko.Ed25519Key.from_private_key_file(str(path)),
            paramiko.Ed25519Key.from_private_key_file(str(host_path)))


def test_client_key_is_private(keys):
    path, _, _ = keys
    assert path.stat().st_mode & 0o777 == 0o600


def test_pinned_host_key_logs_in_and_runs(keys):
    path, client, host = keys
    server = SSHServer(host, client)
    try:
        session = ssh.connect(ssh.Target("127.0.0.1", server.port, _public(host), path), 10)
        result = session.run("echo out; echo err >&2; exit 3", timeout=10)
        session.close()
    finally:
        server.close()
    assert (result.status, result.stdout, result.stderr, result.timed_out) == \
        (3, "out\n", "err\n", False)


def test_unknown_host_key_is_refused_at_once(keys):
    path, client, host = keys
    impostor = paramiko.Ed25519Key.from_private_key_file(str(client_key(Cache(path.parent.parent
                                                                            / "impostor"))))
    server = SSHServer(impostor, client)
    start = time.monotonic()
    try:
        with pytest.raises(ssh.HostKeyRejected, match="not the pinned"):
            ssh.connect(ssh.Target("127.0.0.1", server.port, _public(host), path), 30)
    finally:
        server.close()
    # Refused, not retried until the deadline.
    assert time.monotonic() - start < 5
    assert not any(t.is_authenticated() for t in server.transports)


def test_connect_retries_until_the_server_listens(keys):
    path, client, host = keys
    server = SSHServer(host, client, delay=1.5)
    start = time.monotonic()
    try:
        session = ssh.connect(ssh.Target("127.0.0.1", server.port, _public(host), path), 20)
        assert session.run("true", timeout=10).status == 0
        session.close()
    finally:
        server.close()
    assert time.monotonic() - start >= 1.5


def test_connect_gives_up_when_the_guest_is_gone(keys):
    path, _, host = keys
    with socket.socket() as s:            # a free port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ssh.GuestGone):
        ssh.connect(ssh.Target("127.0.0.1", port, _public(host), path), 30, alive=lambda: False)


def test_command_timeout(keys):
    path, client, host = keys
    server = SSHServer(host, client)
    try:
        session = ssh.connect(ssh.Target("127.0.0.1", server.port, _public(host), path), 10)
        result = session.run("echo started; sleep 10", timeout=1.0)
        session.close()
    finally:
        server.close()
    assert result.timed_out and result.status == -1
    assert result.stdout == "started\n"
    assert result.seconds < 5


def test_world_readable_client_key_is_refused(keys):
    path, _, host = keys
    path.chmod(0o644)
    with pytest.raises(ssh.SSHError, match="0644"):
        ssh.connect(ssh.Target("127.0.0.1", 1, _public(host), path), 1)
