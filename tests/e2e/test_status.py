"""status, audit and the deploy lock's tasks on the real sandbox VM, through `invoke`.

Each test brings the VM to the release it needs (``Project.bring_to``) and leaves it healthy,
with no lock and no drop-in of its own, as the other e2e modules expect.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from portable_deploy.locking import boot_id, machine_id
from portable_deploy.sandbox import VM
from tests.project import LAYOUT, Project, make_project, ok

pytestmark = pytest.mark.e2e

LITESTREAM = "scoreboard-litestream.service"
#: A runtime drop-in that keeps systemd from restarting Litestream: killed, it stays failed.
NO_RESTART = f"/run/systemd/system/{LITESTREAM}.d/50-e2e-no-restart.conf"


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app copied to a temp dir with its own signing key, aimed at the sandbox."""
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("scoreboard"))
    p.reset()
    yield p
    p.reset()


def status_json(project: Project) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    result = project.invoke("status", "--json")
    hosts = json.loads(result.stdout)
    assert [h["host"] for h in hosts] == ["sandbox"], result.stdout
    return result, hosts[0]


def test_status_of_a_healthy_host_exits_0_with_its_units_and_ports(project: Project) -> None:
    """status --json on a healthy host: exit 0, one JSON document with the live release, every
    unit active (the restore oneshot done), the sockets' ports, the health check and last deploy."""
    project.bring_to("e2e1")
    result, host = status_json(project)
    ok(result)
    assert host["healthy"] is True and host["problems"] == []
    assert host["live"] == "scoreboard_e2e1"
    units = {u["name"]: u for u in host["units"]}  # type: ignore[attr-defined]
    assert units["scoreboard-http.socket"]["ports"] == [80]
    assert units["scoreboard-https.socket"]["ports"] == [443]
    assert units["scoreboard.service"]["active_state"] == "active"
    assert units[LITESTREAM]["sub_state"] == "running"
    assert units[LITESTREAM]["memory"] > 0
    assert units["scoreboard-restore.service"]["must_run"] is False
    assert host["health"] == {"path": "/healthz", "status": 200, "expected": 200}
    assert host["last_deploy"]["release"] == "scoreboard_e2e1"  # type: ignore[index]
    assert host["releases"]["images"] >= 1  # type: ignore[index]


def test_a_failed_unit_makes_status_exit_1(project: Project) -> None:
    """With Litestream killed and left failed, status exits 1 naming it; restarted, exit 0 again."""
    project.bring_to("e2e1")
    project.ssh(
        f"mkdir -p {os.path.dirname(NO_RESTART)} && printf '[Service]\\nRestart=no\\n' > "
        f"{NO_RESTART} && systemctl daemon-reload && systemctl kill -s KILL {LITESTREAM}"
    )
    try:
        deadline = time.monotonic() + 30
        while project.unit(LITESTREAM, "ActiveState") != "failed":
            assert time.monotonic() < deadline, project.unit(LITESTREAM, "ActiveState")
            time.sleep(0.5)
        result, host = status_json(project)
        table = project.invoke("status")
    finally:
        project.ssh(
            f"rm -f {NO_RESTART} && systemctl daemon-reload && systemctl reset-failed "
            f"{LITESTREAM} && systemctl start {LITESTREAM}"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert host["healthy"] is False
    assert any(LITESTREAM in p and "failed" in p for p in host["problems"]), host  # type: ignore[attr-defined]
    assert "error: unhealthy: sandbox" in result.stderr and "Traceback" not in result.stderr
    assert table.returncode == 1 and f"✗ {LITESTREAM} failed" in table.stdout
    ok(project.invoke("status"))


def test_status_keeps_unit_names_whole_at_80_columns(project: Project) -> None:
    """On an 80-column terminal the table shows every unit name whole and no line is wider."""
    project.bring_to("e2e1")
    result = project.invoke("status", COLUMNS="80")
    ok(result)
    for unit in ("scoreboard-http.socket", "scoreboard-https.socket", LITESTREAM):
        assert unit in result.stdout
    assert "active/running" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout


def test_audit_json_lists_the_deploys(project: Project) -> None:
    """audit --json: one JSON list holding the deploys of both releases, each naming the host."""
    project.bring_to("e2e2", previous="e2e1")
    result = project.invoke("audit", "--json")
    ok(result)
    records = json.loads(result.stdout)
    deploys = [r for r in records if r["event"] in ("deploy", "rollback") and r["result"] == "ok"]
    assert {r["live"] for r in deploys} >= {"scoreboard_e2e1", "scoreboard_e2e2"}
    assert {r["host"] for r in records} == {"sandbox"}
    table = project.invoke("audit", "--lines", "1")
    ok(table)
    assert "scoreboard_e2e2" in table.stdout and "the last 1 of" in table.stdout


def _write_lock(project: Project, record: dict[str, object]) -> None:
    text = json.dumps(record, sort_keys=True)
    project.ssh(f"printf '%s\\n' {shlex.quote(text)} > {LAYOUT.lock}")


def _lock_record(pid: int, machine: str, boot: str, origin: str) -> dict[str, object]:
    return {
        "token": f"e2e-{pid}-{machine[:6]}",
        "user": "e2e",
        "origin": origin,
        "pid": pid,
        "at": time.time(),
        "release": "scoreboard_e2e9",
        "command": "deploy",
        "machine": machine,
        "boot": boot,
    }


def test_lock_status_says_free(project: Project) -> None:
    """With no deploy running, lock.status reports the lock free."""
    project.bring_to_any()
    result = project.invoke("lock.status")
    ok(result)
    assert "sandbox: deploy lock free" in result.stdout


def test_lock_release_removes_a_lock_whose_process_is_gone(project: Project) -> None:
    """A young lock taken on this machine by a process that has exited is released."""
    project.bring_to_any()
    gone = subprocess.Popen(["true"])
    gone.wait()
    _write_lock(project, _lock_record(gone.pid, machine_id(), boot_id(), socket.gethostname()))
    status = project.invoke("lock.status")
    ok(status)
    assert "stale" in status.stdout and "lock.release" in status.stdout
    result = project.invoke("lock.release")
    ok(result)
    assert "released the deploy lock of e2e@" in result.stdout
    assert project.ssh(f"test -e {LAYOUT.lock} && echo held || echo free").strip() == "free"


def test_lock_release_refuses_a_live_lock_of_another_machine(project: Project) -> None:
    """A young lock of another machine is refused with its holder and a hint, and stays."""
    project.bring_to_any()
    _write_lock(project, _lock_record(4242, "0" * 32, "1" * 32, "ci-runner-7"))
    try:
        result = project.invoke("lock.release")
        held = project.ssh(f"cat {LAYOUT.lock}")
    finally:
        project.ssh(f"rm -f {LAYOUT.lock}")
    assert result.returncode == 1
    assert "deploy lock held by e2e@ci-runner-7 (pid 4242)" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert '"ci-runner-7"' in held
