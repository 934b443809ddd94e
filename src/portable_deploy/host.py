"""The only module that talks SSH. A ``Host`` runs ``Command`` values over one Fabric connection,
uploads files with SFTP and reaches the host's loopback ports, all on the same SSH transport.

Host keys are always checked: against ~/.ssh/known_hosts for real hosts and against the sandbox's
own known_hosts file for the sandbox VM. There is no accept-any-host-key path.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from invoke.exceptions import CommandTimedOut

from . import interrupts, tls
from .command import Command, mask_text
from .errors import DeployError

#: Called with (host name, rendered command, dry_run) when echo is on.
Echo = Callable[[str, str, bool], None]
#: Called with (bytes sent, total bytes) during an upload.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteCommandError(DeployError):
    """A remote command exited non-zero."""

    def __init__(self, host: str, command: Command, result: Result) -> None:
        # The program may print what it was given: a secret argument is masked in its output too.
        output = mask_text(result.stderr.strip() or result.stdout.strip(), command.secrets())
        detail = output.splitlines()[-5:]
        super().__init__(
            f"[{host}] command failed (exit {result.exit_code}): {_shown(command, quoted=False)}"
            + (": " + " / ".join(detail) if detail else ""),
            hint="run it by hand on the host to see more (invoke sandbox.ssh for the sandbox)",
        )
        self.result = result


class TransportError(DeployError):
    """The SSH connection failed under an operation: dropped, timed out, or SFTP refused.

    The connection is closed; the next operation opens a new one (a rollback needs it).
    """

    #: The host refused the bytes (SFTP's generic failure, a short file): most likely a full disk.
    disk_full = False


class RemoteTimeout(TransportError):
    """A remote command ran longer than its limit (it may still be running on the host)."""


class _Handed(Exception):
    """An exception of the caller's callback (``lines``' EACH: its stdout closed, say), carried
    past the handling of the connection's own errors: it is not the connection's."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _transport_exceptions() -> tuple[type[BaseException], ...]:
    import paramiko

    return (paramiko.SSHException, OSError, EOFError)


def whole_lines(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """The lines that PENDING + CHUNK complete (decoded whole, so a character split between two
    reads is never garbled), and what is left of a line still to come."""
    *done, rest = (pending + chunk).split(b"\n")
    return [line.removesuffix(b"\r").decode("utf-8", "replace") for line in done], rest


class _AllAtOnce(io.StringIO):
    """Text for a command's stdin, given whole to any read: Invoke reads a stream that is not a
    terminal one byte at a time, 10 ms apart (3 KB took 30 s)."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


#: What Invoke reports for a command whose SSH session closed without an exit status (its sshd
#: was killed, the connection cut): the connection failed, not the command.
_NO_EXIT_STATUS = -1

#: Bytes an upload writes at a time (SFTP's usual packet payload).
_BLOCK = 32768
#: Bytes read from a streamed command's channel at a time, at most.
_READ = 1 << 20

#: A command longer than this is named by its builder in a one-line error, not shown whole.
_SHOWN_MAX = 160


def _shown(command: Command, quoted: bool = True) -> str:
    """COMMAND for an error message: whole when short, else its builders and its start."""
    text = command.render()
    if len(text) <= _SHOWN_MAX:
        return f"`{text}`" if quoted else text
    names = " + ".join(command.sources) or "a command"
    return f"{names} (`{text[:80]}...`)"


def _detail(error: BaseException) -> str:
    """An exception as one line of text."""
    return " ".join(str(error).split()) or type(error).__name__


def check_host_keys(conn: Any, known_hosts: Path) -> None:
    """Make every hop of CONN refuse unknown host keys: the target and each ProxyJump gateway,
    which Fabric would otherwise build with AutoAddPolicy (accept any key)."""
    import paramiko
    from fabric import Connection

    hop = conn
    while isinstance(hop, Connection):
        hop.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if known_hosts.exists():
            hop.client.load_host_keys(str(known_hosts))
        hop = hop.gateway


class Readable(Protocol):
    """What an upload reads from: a file opened for reading, or a stream made on the fly."""

    def read(self, size: int, /) -> bytes: ...

    def seek(self, offset: int, /) -> int: ...


class Remote(Protocol):
    """What the pipeline needs from a host; ``Host`` is the real one, tests use a recording fake."""

    name: str
    dry_run: bool

    def run(
        self, command: Command, *, check: bool = True, timeout: float | None = None
    ) -> Result: ...

    def close(self) -> None: ...

    def put(self, local: Path, remote: str, progress: Progress | None = None) -> None: ...

    def put_stream(
        self,
        stream: Readable,
        size: int,
        remote: str,
        start: int = 0,
        progress: Progress | None = None,
    ) -> None: ...

    def get(self, remote: str) -> bytes: ...

    def http_get(self, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]: ...

    def https_get(
        self, port: int, path: str, name: str, ca_file: Path | None = None, timeout: float = 5.0
    ) -> tls.Answer: ...


@dataclass(frozen=True)
class Target:
    """How to reach one host: what deploy.toml or the sandbox says."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    #: None: the user's ~/.ssh/known_hosts; else this file only.
    known_hosts: Path | None = None


class Host:
    """One host, one SSH connection, opened on first use and kept for the whole task."""

    def __init__(self, target: Target, *, echo: Echo | None = None, dry_run: bool = False) -> None:
        self.target = target
        self.name = target.name
        self.echo = echo
        self.dry_run = dry_run
        #: How many SSH connections this host opened (one per deploy is the goal).
        self.connections_opened = 0
        #: Round trips made: each command, file transfer and HTTP(S) request (bench/deploy.py).
        self.round_trips = 0
        self._conn: Any = None
        #: One client context per CA file (None: the system's store), loaded once per task.
        self._tls_contexts: dict[Path | None, ssl.SSLContext] = {}

    # -- connection -------------------------------------------------------------------------
    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> Any:
        import paramiko
        from fabric import Connection

        t = self.target
        kwargs: dict[str, Any] = {}
        if t.identity_file:
            kwargs["key_filename"] = [str(t.identity_file)]
        if t.known_hosts is not None:
            kwargs["look_for_keys"] = False
            kwargs["allow_agent"] = False
        try:
            conn = Connection(
                host=t.address, user=t.user, port=t.port, connect_kwargs=kwargs, connect_timeout=15
            )
        except ValueError as e:  # e.g. "root@h:2222" together with user = / port =
            raise DeployError(
                f"[{self.name}] address {t.address!r}: {e}",
                hint="give the user and port either in address or as user = / port =, not both",
            ) from None
        # Every hop checks its host key: the target and each ProxyJump gateway, which Fabric
        # would otherwise build with AutoAddPolicy (accept any key).
        check_host_keys(conn, t.known_hosts or Path("~/.ssh/known_hosts").expanduser())
        try:
            conn.open()
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise DeployError(
                    f"[{self.name}] host key of {t.address} is not known: {e}",
                    hint=f"connect once with `ssh {t.address}`, check the fingerprint, and accept it",
                ) from None
            raise DeployError(
                f"[{self.name}] SSH to {t.address} failed: {e}",
                hint="check user, identity_file and that the key is authorized on the host",
            ) from None
        except OSError as e:
            raise DeployError(
                f"[{self.name}] cannot reach {t.address}:{conn.port}: {e.strerror or e}",
                hint="is the host up and the address right? (for the sandbox: invoke sandbox.up)",
            ) from None
        self.connections_opened += 1
        return conn

    def _lost(
        self,
        doing: str,
        error: BaseException,
        hint: str = "check the network and retry; `invoke status` shows what runs on the host",
    ) -> TransportError:
        """The one-line error for a connection that failed while DOING; the connection is dropped."""
        self._drop()
        return TransportError(
            f"[{self.name}] SSH connection failed while {doing}: {_detail(error)}", hint
        )

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail any way
                conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations -------------------------------------------------------------------------
    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        """Run a command; in a dry run, mutating commands are only shown."""
        skipped = self.dry_run and command.mutates
        if self.echo is not None:
            self.echo(self.name, command.render(), skipped)
        if skipped:
            return Result("", "", 0)
        self.round_trips += 1
        try:
            result = self._execute(command, timeout)
        except CommandTimedOut:
            self._drop()
            raise RemoteTimeout(
                f"[{self.name}] no answer within {timeout:g}s from: {command.render()}",
                hint=f"it may still be running: see `invoke status --host {self.name}`",
            ) from None
        except _transport_exceptions() as e:
            raise self._lost(f"running {_shown(command)}", e) from None
        interrupts.raise_pending()
        if result.exit_code == _NO_EXIT_STATUS:
            raise self._lost(
                f"running {_shown(command)}",
                ConnectionError("the command's session ended without an exit status"),
            )
        if check and not result.ok:
            raise RemoteCommandError(self.name, command, result)
        return result

    def lines(
        self, command: Command, each: Callable[[list[str]], None], *, follow: bool = False
    ) -> Result:
        """Run a read-only command and hand its output to EACH as it arrives, the whole lines of
        each read at a time (logs). Read from the SSH channel itself: nothing is kept, however
        long it runs. Ends when the command does, or when the connection is closed (``close``,
        from another thread). FOLLOW: the command runs on a terminal of its own, so a closed
        channel (Ctrl-C here, a lost connection) hangs it up and no ``journalctl -f`` is left on
        the host; its stderr then comes with its stdout. The Result has no stdout (EACH had it);
        exit code -1: the session ended without one (closed, or the connection lost)."""
        if self.echo is not None:
            self.echo(self.name, command.render(), False)

        def hand(lines: list[str]) -> None:
            try:
                each(lines)
            except Exception as e:
                raise _Handed(e) from e

        try:
            return self._lines(command, hand, follow)
        except _Handed as e:
            raise e.error from None
        except _transport_exceptions() as e:
            raise self._lost(f"running {_shown(command)}", e) from None

    def put(self, local: Path, remote: str, progress: Progress | None = None) -> None:
        if self.echo is not None:
            self.echo(self.name, f"sftp put {local} {remote}", self.dry_run)
        if self.dry_run:
            return
        self.round_trips += 1
        try:
            self._put(local, remote, progress)
        except _transport_exceptions() as e:
            raise self._upload_lost(f"uploading {local.name} to {remote}", e) from None

    def put_stream(
        self,
        stream: Readable,
        size: int,
        remote: str,
        start: int = 0,
        progress: Progress | None = None,
    ) -> None:
        """Write the SIZE bytes of STREAM to REMOTE, from START on: a resumed upload keeps the
        first START bytes the host has and sends the rest (REMOTE is cut to START first)."""
        if self.echo is not None:
            self.echo(self.name, f"sftp write {remote} (bytes {start}-{size})", self.dry_run)
        if self.dry_run:
            return
        self.round_trips += 1
        try:
            self._put_stream(stream, size, remote, start, progress)
        except _transport_exceptions() as e:
            raise self._upload_lost(f"uploading {remote.rsplit('/', 1)[-1]}", e) from None

    def get(self, remote: str) -> bytes:
        """The bytes of a (small) file on the host, over SFTP."""
        if self.echo is not None:
            self.echo(self.name, f"sftp get {remote}", False)
        self.round_trips += 1
        try:
            return self._get(remote)
        except _transport_exceptions() as e:
            raise self._lost(f"reading {remote}", e) from None

    def _upload_lost(self, doing: str, e: BaseException) -> TransportError:
        # SFTP's generic status, or a file that did not get all its bytes: a full disk.
        detail = _detail(e)
        if detail.endswith("Failure") or "size mismatch" in detail:
            hint = "is the host's disk full? check `df -h /var/lib/portables` there, then retry"
            lost = self._lost(doing, e, hint)
            lost.disk_full = True
            return lost
        return self._lost(doing, e)

    def http_get(self, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET http://127.0.0.1:PORT/PATH on the host, through this SSH connection.

        Each request is its own SSH port-forwarding channel (``direct-tcpip``, what
        ``ssh -L`` and Fabric's ``forward_local`` open per connection), so a refused
        connection is an answer ("no answer: refused") rather than a dead tunnel thread,
        and no local port is opened. Returns (status, body); status 0 means no HTTP answer.
        """
        if self.echo is not None:
            self.echo(self.name, f"GET http://127.0.0.1:{port}{path}  (through SSH)", False)
        self.round_trips += 1
        try:
            return self._http_get(port, path, timeout)
        except _transport_exceptions() as e:
            raise self._lost(f"GET {path} through SSH", e) from None

    def https_get(
        self, port: int, path: str, name: str, ca_file: Path | None = None, timeout: float = 5.0
    ) -> tls.Answer:
        """GET https://NAME:PORT/PATH from the host's 127.0.0.1:PORT, through this SSH connection.

        One ``direct-tcpip`` channel per request as for ``http_get``, with TLS on top of it here
        (SNI and Host are NAME): the certificate is checked by Python's ssl against CA_FILE, or
        the system's trust store, as a browser would check the host's public name.
        """
        if self.echo is not None:
            self.echo(self.name, f"GET https://{name}:{port}{path}  (through SSH)", False)
        self.round_trips += 1
        try:
            return self._https_get(port, path, name, ca_file, timeout)
        except _transport_exceptions() as e:
            raise self._lost(f"GET https://{name}:{port}{path} through SSH", e) from None

    # -- transport: what a test double replaces; everything above stays the real logic --------
    def _execute(self, command: Command, timeout: float | None) -> Result:
        # A secret input is streamed to the command's stdin (then EOF); nothing else reads stdin.
        stream = _AllAtOnce(command.stdin.value) if command.stdin is not None else False
        raw = self.connection().run(
            command.render(reveal=True), hide=True, warn=True, in_stream=stream, timeout=timeout
        )
        return Result(raw.stdout, raw.stderr, raw.exited)

    def _lines(self, command: Command, each: Callable[[list[str]], None], follow: bool) -> Result:
        channel = self.connection().client.get_transport().open_session()
        try:
            if follow:
                channel.get_pty(term="dumb", width=500)
            channel.exec_command(command.render(reveal=True))
            channel.shutdown_write()
            pending = b""
            while chunk := channel.recv(_READ):
                done, pending = whole_lines(pending, chunk)
                if done:
                    each(done)
            if pending:
                each([pending.decode("utf-8", "replace")])
            code = int(channel.recv_exit_status())
            stderr = b""
            while part := channel.recv_stderr(_READ):
                stderr += part
            return Result("", stderr.decode("utf-8", "replace"), code)
        finally:
            channel.close()

    def _put(self, local: Path, remote: str, progress: Progress | None) -> None:
        sftp = self.connection().sftp()
        sftp.put(str(local), remote, callback=progress, confirm=True)

    def _put_stream(
        self, stream: Readable, size: int, remote: str, start: int, progress: Progress | None
    ) -> None:
        sftp = self.connection().sftp()
        with sftp.open(remote, "r+b" if start else "wb") as f:
            if start:
                f.truncate(start)
                f.seek(start)
            f.set_pipelined(True)
            stream.seek(start)
            done = start
            while done < size:
                block = stream.read(min(_BLOCK, size - done))
                if not block:
                    raise EOFError(f"the local stream ended at byte {done} of {size}")
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, size)
        got = sftp.stat(remote).st_size
        if got != size:
            raise OSError(f"size mismatch in put: {got} != {size}")

    def _get(self, remote: str) -> bytes:
        with self.connection().sftp().open(remote, "rb") as f:
            return bytes(f.read())

    def _http_get(self, port: int, path: str, timeout: float) -> tuple[int, str]:
        try:
            channel = self._channel(port, timeout)
        except tls.Unreachable as e:
            return 0, str(e)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.sock = channel
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return int(response.status), response.read(4096).decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            return 0, f"{type(e).__name__}: {e}"
        finally:
            conn.close()
            channel.close()

    def _https_get(
        self, port: int, path: str, name: str, ca_file: Path | None, timeout: float
    ) -> tls.Answer:
        context = self._tls_contexts.get(ca_file)
        if context is None:
            context = self._tls_contexts[ca_file] = tls.client_context(ca_file)
        return tls.https_get(lambda: self._channel(port, timeout), name, path, context, timeout)

    def _channel(self, port: int, timeout: float) -> Any:
        """A new ``direct-tcpip`` channel to 127.0.0.1:PORT on the host (``tls.Unreachable`` when
        the port refuses; a transport exception when the connection itself is gone)."""
        import paramiko

        transport = self.connection().transport
        try:
            channel = transport.open_channel(
                "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout
            )
        except (paramiko.ChannelException, paramiko.SSHException, OSError) as e:
            if not transport.is_active():  # not a refused port: the connection itself is gone
                raise
            raise tls.Unreachable(f"cannot connect to 127.0.0.1:{port} on the host ({e})") from None
        channel.settimeout(timeout)
        return channel
