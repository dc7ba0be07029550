"""rig.ssh against a real paramiko SSH server running in this process on 127.0.0.1.

The server accepts only the client's public key and runs commands with /bin/sh, so the
client's pinning, retries, exit status, output and timeout are all exercised for real.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from rig.core import datafiles
from rig.core.cache import Cache
from rig.guest import ssh
from rig.guest.image import client_key
from rig.guest.qemu import free_port


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
            # EOF, not close: this thread can beat paramiko's reply to the exec request, and a
            # channel closed before it makes the client's exec_command() fail ("Channel
            # closed", seen under load); the rig's client closes every channel itself
            channel.shutdown_write()
        except (OSError, EOFError):
            proc.kill()             # the client gave up on this command (timeout test)


class SSHServer:
    """Listens on 127.0.0.1 with HOST_KEY, optionally only after DELAY seconds."""

    def __init__(self, host_key: paramiko.PKey, client: paramiko.PKey, delay: float = 0.0,
                 sftp: tuple | None = None):
        self.host_key, self.client = host_key, client
        self.sftp = sftp            # (SFTPServerInterface subclass, its arguments)
        self.port = free_port()
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
                if self.sftp:
                    t.set_subsystem_handler("sftp", paramiko.SFTPServer, self.sftp[0],
                                            *self.sftp[1:])
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
    port = free_port()                    # a free port that nothing listens on
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


class _HostileSFTP(paramiko.SFTPServerInterface):
    """A guest's SFTP server over the folder ROOT that also lists, in every folder, the
    ALIASES (a name it announces -> the file of ROOT it serves for it, and a size it claims,
    or None for the true one): names like "../x" or absolute ones, as a hostile guest's would."""

    def __init__(self, server, root: Path, aliases: dict[str, tuple[str, int | None]]):
        super().__init__(server)
        self.root, self.aliases = root, aliases

    def _real(self, path: str) -> Path:
        name = next((a for a in self.aliases if path.endswith("/" + a.lstrip("/"))
                     or path == a), None)
        if name is not None:
            return self.root / self.aliases[name][0]
        return self.root / os.path.normpath(path).lstrip("/")

    def _attrs(self, path: Path, name: str, size: int | None = None) -> paramiko.SFTPAttributes:
        attrs = paramiko.SFTPAttributes.from_stat(os.lstat(path), name)
        if size is not None:
            attrs.st_size = size
        return attrs

    def list_folder(self, path: str):
        real = self._real(path)
        listed = [self._attrs(real / n, n) for n in os.listdir(real)]
        return listed + [self._attrs(self.root / target, name, size)
                         for name, (target, size) in self.aliases.items()]

    def stat(self, path: str):
        return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))

    def lstat(self, path: str):
        return self._attrs(self._real(path), os.path.basename(path))

    def open(self, path: str, flags: int, attr):
        real = self._real(path)
        handle = paramiko.SFTPHandle(flags)
        # a FIFO with no writer must not hang the server: it reads as empty
        handle.readfile = os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK), "rb")
        return handle


def _guest_files(root: Path, canary: Path) -> None:
    """What a hostile guest leaves in ROOT/results: setuid and world-writable files, a
    link to a host path, a FIFO, an oversized file; and ROOT/escaped for "../" to reach."""
    results = root / "results"
    (results / "sub").mkdir(parents=True)
    (results / "junit.xml").write_text("<testsuite/>")
    (results / "junit.xml").chmod(0o4777)
    (results / "empty").write_text("")
    (results / "sub" / "setgid").write_text("g")
    (results / "sub" / "setgid").chmod(0o2666)
    (results / "link").symlink_to(canary)
    os.mkfifo(results / "fifo")
    with open(results / "huge", "wb") as fh:
        fh.truncate(2 << 20)                 # sparse: more than the test's 1 MiB cap
    (root / "escaped").write_text("from the guest")


@pytest.fixture
def hostile_guest(keys, tmp_path, monkeypatch):
    """(an SFTP session to a hostile guest, the host folder outside the destination with
    its canary files and what they held)."""
    path, client, host = keys
    limits = dict(datafiles.toml("guest-limits.toml")["fetch"], file_bytes=1 << 20)
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: limits, raising=False)
    host_dir = tmp_path / "host-files"
    host_dir.mkdir()
    canary = host_dir / "canary"
    canary.write_text("host data")
    absolute = host_dir / "absolute"
    absolute.write_text("host data")
    root = tmp_path / "guest"
    _guest_files(root, canary)
    aliases = {"../escaped": ("escaped", None), str(absolute): ("escaped", None),
               "liar": ("results/huge", 10), "bad\x1b]52;c;name": ("escaped", None)}
    server = SSHServer(host, client, sftp=(_HostileSFTP, root, aliases))
    session = ssh.connect(ssh.Target("127.0.0.1", server.port, _public(host), path), 10)
    yield session, host_dir
    session.close()
    server.close()


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.read_bytes() if p.is_file()
                                         else b"") for p in sorted(folder.rglob("*"))}


def test_files_from_a_hostile_guest_land_only_under_the_destination(hostile_guest):
    session, host_dir = hostile_guest
    before = _tree(host_dir)
    dest = host_dir / "out" / "results"
    with pytest.raises(ssh.Refused) as refused:
        session.get("/results", dest)
    said = str(refused.value)
    # nothing outside the destination changed; inside it only the plain files, with the
    # rig's modes
    assert {k: v for k, v in _tree(host_dir).items() if not k.startswith("out")} == before
    assert sorted(_tree(dest)) == ["empty", "junit.xml", "sub", "sub/setgid"]
    assert stat.S_IMODE((dest / "junit.xml").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "sub" / "setgid").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "sub").stat().st_mode) == 0o755
    assert (dest / "junit.xml").read_text() == "<testsuite/>"
    for what in ("/results/link: a symbolic link", "/results/fifo: a FIFO",
                 "/results/huge: more than 1048576 bytes", "/results/liar: more than 1048576",
                 "the name '../escaped' has a '/'", f"the name '{host_dir}/absolute' has a '/'",
                 "the name 'bad\\x1b]52;c;name' has a control character"):
        assert what in said, said


def test_a_guest_file_is_renamed_over_the_destination_never_written_through_it(
        hostile_guest):
    """The destination name is a link (a planted one, or an earlier fetch's): it is replaced,
    and the file it points at keeps its bytes."""
    session, host_dir = hostile_guest
    dest = host_dir / "out" / "junit.xml"
    dest.parent.mkdir()
    dest.symlink_to(host_dir / "canary")
    session.get("/results/junit.xml", dest)
    assert (host_dir / "canary").read_text() == "host data"
    assert not dest.is_symlink() and dest.read_text() == "<testsuite/>"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_one_guest_hands_back_no_more_than_its_cap(hostile_guest, monkeypatch):
    session, host_dir = hostile_guest
    limits = dict(datafiles.guest_limits("fetch"), boot_bytes=20)
    monkeypatch.setattr(datafiles, "guest_limits", lambda section: limits)
    session.get("/results/junit.xml", host_dir / "one.xml")
    with pytest.raises(ssh.Refused, match=r"12 bytes, more than the 8 left of what one guest"):
        session.get("/results/junit.xml", host_dir / "two.xml")
    assert not (host_dir / "two.xml").exists()
