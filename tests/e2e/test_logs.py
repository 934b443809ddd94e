"""`invoke logs` on the sandbox VM: the journal's JSON lines, the --grep/--unit/--until filters,
a follow ended by Ctrl-C with nothing left on the host, and a host that cannot be reached next
to one that streams.

The reference app is deployed once (release lg1); marker lines are logged by a transient unit
named after the app (``scoreboard-logtest``), which `logs` shows with the app's units.
(journalctl -u expands its unit pattern when it starts: the test unit logs once in the fixture,
so a follow started later still sees it.)
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from portable_deploy.sandbox import VM
from tests.project import Project, make_project, ok

pytestmark = pytest.mark.e2e

#: Prints each argument as a line of its own, in a unit of the app's name, and waits for it.
LOG = (
    "systemd-run --quiet --wait --unit=scoreboard-logtest --description=logtest "
    "sh -c 'for m; do echo \"$m\"; done' sh"
)


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app, live on the sandbox as lg1; the VM is reset before and after."""
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("logs"))
    p.reset()
    p.bring_to("lg1")
    p.ssh(f"{LOG} logtest-ready")
    yield p
    p.reset()


def log(project: Project, *lines: str) -> None:
    project.ssh(f"{LOG} {' '.join(lines)}")


def marker() -> str:
    return uuid.uuid4().hex[:8]


def test_json_gives_exactly_the_journals_lines(project: Project) -> None:
    """`logs --json -n 5` prints exactly 5 lines, each one of journalctl's JSON entries of the
    app, oldest first, with every field journalctl gives."""
    result = project.invoke("logs", "--json", "-n", "5")
    ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    entries = [json.loads(line) for line in lines]
    stamps = [int(e["__REALTIME_TIMESTAMP"]) for e in entries]
    assert stamps == sorted(stamps)
    for e in entries:
        assert "host" not in e  # one host: the line as journalctl wrote it
        assert {"MESSAGE", "__CURSOR", "_BOOT_ID", "_HOSTNAME"} <= set(e)
        assert (e.get("UNIT") or e.get("_SYSTEMD_UNIT", "")).startswith("scoreboard")
    # The same entries as journalctl's own on the host, every field (journalctl orders the
    # fields of a line differently in each run).
    cursors = " ".join(f"'{e['__CURSOR']}'" for e in entries)
    on_host = project.ssh(
        f'for c in {cursors}; do journalctl --no-pager -o json --cursor "$c" | head -n 1; done'
    )
    assert [json.loads(line) for line in on_host.splitlines()] == entries


def test_grep_shows_only_matching_lines_oldest_first(project: Project) -> None:
    """`logs --grep PATTERN -n 2` shows the last 2 lines whose message matches, oldest first
    (journalctl 252 gives them newest first), and no other line."""
    m = marker()
    log(project, f"{m}-alpha-1", f"{m}-beta-1", f"{m}-alpha-2", f"{m}-alpha-3", f"{m}-beta-2")
    result = project.invoke("logs", "--grep", f"{m}-alpha", "-n", "2")
    ok(result)
    messages = [line.split(": ", 1)[1] for line in result.stdout.splitlines()]
    assert messages == [f"{m}-alpha-2", f"{m}-alpha-3"]


def test_unit_shows_only_that_units_lines(project: Project) -> None:
    """`logs --unit scoreboard-litestream` shows Litestream's lines only; a unit the app does not
    have is one error line that lists the app's units, exit code 1."""
    result = project.invoke("logs", "--unit", "scoreboard-litestream", "--json", "-n", "20")
    ok(result)
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert entries
    for e in entries:
        assert "scoreboard-litestream.service" in (e.get("_SYSTEMD_UNIT"), e.get("UNIT")), e
    app = project.invoke("logs", "-u", "scoreboard", "-n", "200")
    ok(app)
    assert "version lg1 starting" in app.stdout
    assert not [line for line in app.stdout.splitlines() if " litestream[" in line]
    bad = project.invoke("logs", "--unit", "ssh")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: --unit ssh: not a unit of the app; its units are scoreboard-http.socket, "
        "scoreboard-https.socket, scoreboard-litestream.service, scoreboard-restore.service, "
        "scoreboard.service (hint: name one of them (a .service may be named without its "
        "suffix))"
    ]


def test_until_shows_the_last_lines_before_that_time(project: Project) -> None:
    """`logs --until TIME -n 3` shows the 3 last lines logged before TIME (journalctl 252 alone
    shows none) and none after it."""
    m = marker()
    log(project, f"{m}-early-1", f"{m}-early-2")
    time.sleep(1.2)
    until = project.ssh("date -u '+%Y-%m-%d %H:%M:%S UTC'").strip()
    time.sleep(1.2)
    log(project, f"{m}-late")
    result = project.invoke("logs", "--until", until, "-n", "3", "--json")
    ok(result)
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(entries) == 3, result.stdout
    limit = datetime.strptime(until, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC).timestamp()
    assert all(int(e["__REALTIME_TIMESTAMP"]) <= limit * 1e6 for e in entries)
    grep = project.invoke("logs", "--until", until, "--grep", m)
    ok(grep)
    assert f"{m}-early-2" in grep.stdout and f"{m}-late" not in grep.stdout


def test_a_bad_time_is_one_error_line(project: Project) -> None:
    """A --since journalctl cannot read is one error line quoting journalctl, exit code 1."""
    result = project.invoke("logs", "--since", "not a time")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "Failed to parse timestamp" in line and line.startswith("error: [sandbox] journalctl")


def test_follow_ends_on_ctrl_c_with_no_journalctl_left(project: Project) -> None:
    """`logs -f` shows new lines as they come; SIGINT ends it with exit code 0, no traceback,
    and no journalctl left running on the host."""
    m = marker()
    follow = Following(project, "logs", "-f", "-n", "1")
    try:
        follow.wait_for(lambda seen: len(seen) >= 1, "the last line")
        log(project, f"{m}-new")
        follow.wait_for(lambda seen: any(f"{m}-new" in s for s in seen), "the new line")
    finally:
        code, err = follow.interrupt()
    assert "Traceback" not in err, err
    assert code == 0, err
    wait_for(lambda: not project.ssh("pgrep -a '[j]ournalctl' || true").strip(), "no journalctl")


def test_an_unreachable_host_is_reported_while_the_other_streams(project: Project) -> None:
    """With a host that cannot be reached next to the sandbox, `logs -f` reports it on stderr at
    once and keeps streaming the sandbox's lines; Ctrl-C ends it with exit code 1 (a host
    failed), no traceback, and no journalctl left on the sandbox."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    toml = project.root / "logs-two-hosts.toml"  # next to deploy.toml: the same relative paths
    toml.write_text(
        (project.root / "deploy.toml").read_text()
        + f'\n[hosts.down]\naddress = "127.0.0.1"\nport = {port}\nuser = "root"\n'
    )
    m = marker()
    follow = Following(project, "logs", "-f", "-n", "1", DEPLOY_TOML=str(toml))
    try:
        follow.wait_for(lambda seen: any("[sandbox]" in s for s in seen), "the sandbox's line")
        log(project, f"{m}-while-down")
        follow.wait_for(
            lambda seen: any("[sandbox]" in s and f"{m}-while-down" in s for s in seen),
            "a new line of the sandbox",
        )
        assert f"[down] cannot reach 127.0.0.1:{port}" in follow.err_so_far()
    finally:
        code, err = follow.interrupt()
    assert "Traceback" not in err, err
    assert code == 1
    assert "logs failed on down of 2 hosts" in err
    wait_for(lambda: not project.ssh("pgrep -a '[j]ournalctl' || true").strip(), "no journalctl")


class Following:
    """`invoke ARGS` running in the background; its stdout lines collected as they come."""

    def __init__(self, project: Project, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=project.root,
            env=dict(project.env, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.readers = [
            threading.Thread(target=lambda: self.seen.extend(iter(self.proc.stdout.readline, ""))),  # type: ignore[union-attr]
            threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, ""))),  # type: ignore[union-attr]
        ]
        for r in self.readers:
            r.start()

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> None:
        wait_for(lambda: condition(list(self.seen)) or self.proc.poll() is not None, what)
        assert self.proc.poll() is None, f"it ended: {''.join(self.err)}"

    def err_so_far(self) -> str:
        return "".join(self.err)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        for r in self.readers:
            r.join(timeout=10)
        return code, "".join(self.err)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
