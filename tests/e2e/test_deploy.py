"""deploy / rollback of the scoreboard reference app on the real sandbox VM, through `invoke`.

The tests share one VM and one copy of the reference app; each states one behaviour of a deploy
and checks it on the host. Each test first brings the VM to the state it needs
(``Project.bring_to``: "e2e1 live", "e2e2 live after e2e1" ...), deploying or rolling back only
when the VM is elsewhere, so any test runs alone or in any order. In file order each test leaves
what the next one needs, and the setup costs one SSH round trip.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portable_deploy import facts
from portable_deploy.sandbox import VM
from tests.project import LAYOUT, STATE, HostState, Project, make_project, ok

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(sandbox_vm: VM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The reference app copied to a temp dir with its own signing key, aimed at the sandbox."""
    p = make_project(sandbox_vm, tmp_path_factory.mktemp("scoreboard"))
    # A fresh VM for this module: no app, no trust root yet (host.setup runs on first use);
    # and the same afterwards, so other tests get port 80 back.
    p.reset()
    yield p
    p.reset()


def test_first_deploy_serves_v1(project: Project) -> None:
    """The first deploy sets the host up, attaches v1 and ends with /version answering v1."""
    if project.state() != HostState(None, None, False):
        project.reset()
    result = project.deploy_built("e2e1")
    ok(result)
    assert "scoreboard_e2e1 is live on sandbox" in result.stdout
    assert project.get("/version") == (200, "e2e1\n")
    assert project.ssh("cat /etc/portable-deploy/scoreboard/allowed_signers").startswith("deploy ")
    project.add_points("alice", 5)


def test_host_setup_is_idempotent(project: Project) -> None:
    """host.setup on a host that is set up reports that nothing changed."""
    if not project.state().set_up:
        ok(project.invoke("host.setup"))
    result = project.invoke("host.setup")
    ok(result)
    assert "sandbox: already set up" in result.stdout


def test_host_without_portablectl_is_named_with_the_package(project: Project) -> None:
    """A host lacking portablectl gets one error naming systemd-container, and nothing changes."""
    project.ssh("mv /usr/bin/portablectl /usr/bin/portablectl.hidden")
    try:
        result = project.invoke("host.setup")
        deploy = project.deploy("e2e1")
    finally:
        project.ssh("mv /usr/bin/portablectl.hidden /usr/bin/portablectl")
    for r in (result, deploy):
        assert r.returncode == 1
        assert "apt-get install systemd-container" in r.stderr
        assert "Traceback" not in r.stderr


def test_app_only_deploy_keeps_socket_and_litestream(project: Project) -> None:
    """v2 restarts only the app: the socket's ActiveEnterTimestamp and Litestream's PID stay."""
    project.bring_to("e2e1")
    project.add_points("alice", 1)
    scores = project.scores()
    socket_since = project.unit("scoreboard-http.socket", "ActiveEnterTimestampMonotonic")
    litestream_pid = project.unit("scoreboard-litestream.service", "MainPID")
    app_pid = project.unit("scoreboard.service", "MainPID")
    result = project.deploy_built("e2e2")
    ok(result)
    assert (
        "overlap scoreboard.service: app service: image changed; overlapped by "
        "scoreboard-overlap.service" in " ".join(result.stdout.split())
    )
    assert project.get("/version") == (200, "e2e2\n")
    assert project.unit("scoreboard-http.socket", "ActiveEnterTimestampMonotonic") == socket_since
    assert project.unit("scoreboard-litestream.service", "MainPID") == litestream_pid
    assert project.unit("scoreboard.service", "MainPID") != app_pid
    assert project.scores() == scores


def test_redeploying_the_live_release_changes_nothing(project: Project) -> None:
    """The same release again is not uploaded again and restarts nothing."""
    project.bring_to("e2e2")
    if not project.built("e2e2"):
        ok(project.invoke("build", version="e2e2"))
        ok(project.invoke("sign", version="e2e2"))
    app_pid = project.unit("scoreboard.service", "MainPID")
    result = project.invoke("deploy", "--no-build", version="e2e2")
    ok(result)
    assert "already on sandbox (same sha256): not sent again" in result.stdout
    assert "already live" in result.stdout
    assert project.unit("scoreboard.service", "MainPID") == app_pid


def test_rollback_returns_to_v1(project: Project) -> None:
    """rollback picks the previous release in history, verifies it, and keeps the data."""
    project.bring_to("e2e2", previous="e2e1")
    project.add_points("alice", 1)
    scores = project.scores()
    result = project.invoke("rollback")
    ok(result)
    assert "scoreboard_e2e1 is live on sandbox" in result.stdout
    assert project.get("/version") == (200, "e2e1\n")
    assert project.scores() == scores


def test_rollback_to_a_named_release(project: Project) -> None:
    """rollback --to VERSION goes to that release."""
    project.bring_to("e2e1", previous="e2e2")
    ok(project.invoke("rollback", "--to", "e2e2"))
    assert project.get("/version") == (200, "e2e2\n")


def test_verify_of_a_port_nothing_listens_on_fails_cleanly(project: Project) -> None:
    """A refused health-check connection is a failed check with one line, not a crash."""
    project.bring_to_any()
    toml = project.root / "deploy-port81.toml"
    text = (project.root / "deploy.toml").read_text()
    toml.write_text(text.replace("port = 80", "port = 81").replace("timeout = 60", "timeout = 3"))
    result = project.invoke("verify", toml=toml)
    assert result.returncode == 1
    assert "health check failed" in result.stderr and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_releases_lists_live_and_rollback_target(project: Project) -> None:
    """releases shows each kept release, the live one and the one rollback would pick."""
    project.bring_to("e2e2", previous="e2e1")
    result = project.invoke("releases")
    ok(result)
    lines = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if "scoreboard_e2e" in line
    }
    assert "live" in lines["scoreboard_e2e2"]
    assert "rollback target" in lines["scoreboard_e2e1"]


def test_failed_health_check_is_rolled_back(project: Project) -> None:
    """A release whose /healthz fails is rolled back by itself; the command exits 1 with one message.
    (The reference app is Type=notify and checks its own health before it serves: such a release
    exits at start, and its overlapped start fails before it takes a connection.)"""
    project.bring_to("e2e2")
    project.add_points("alice", 1)
    scores = project.scores()
    quick = _variant(project, "quick-verify", {"deploy.toml": ("timeout = 60", "timeout = 10")})
    result = project.invoke("deploy", version="e2e3", toml=quick, SCOREBOARD_BROKEN="1")
    assert result.returncode == 1
    assert "scoreboard_e2e3 failed to start" in result.stderr
    assert "rolled back, scoreboard_e2e2 is live" in result.stderr
    assert "Traceback" not in result.stderr
    assert project.get("/version") == (200, "e2e2\n")
    assert project.scores() == scores
    last = json.loads(project.ssh(f"tail -n1 {STATE}/audit.jsonl"))
    assert (last["release"], last["result"], last["live"]) == (
        "scoreboard_e2e3",
        "rolled-back",
        "scoreboard_e2e2",
    )


def test_tampered_image_is_refused_before_any_host_is_touched(project: Project) -> None:
    """An image changed after signing is refused here, before the lock: one line, nothing on the
    host changes (not even its audit log). The host's own check of what arrives is the delta
    tests' damaged kept image and the flow tests' refusals."""
    live = project.bring_to_any().live
    ok(project.invoke("build", version="e2e4"))
    ok(project.invoke("sign", version="e2e4"))
    image = project.root / "dist/scoreboard_e2e4.raw"
    data = bytearray(image.read_bytes())
    data[-100] ^= 0xFF
    image.write_bytes(bytes(data))
    before = project.snapshot()
    audit = project.ssh(f"cat {STATE}/audit.jsonl")
    result = project.invoke("deploy", "--no-build", "--echo", version="e2e4")
    assert result.returncode == 1
    line = " ".join(result.stderr.split())
    assert "scoreboard_e2e4.raw is not the image its manifest names" in line
    assert "build and sign again" in line
    assert "$ " not in result.stdout  # not one command ran on the host
    assert project.snapshot() == before
    assert project.ssh(f"cat {STATE}/audit.jsonl") == audit
    assert project.get("/version") == (200, f"{live}\n")


def test_foreign_signature_is_refused_before_portablectl(project: Project) -> None:
    """A release signed by a key the host does not trust is refused; nothing changes."""
    project.bring_to_any()
    other = project.root / ".deploy/other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    toml = project.root / "deploy-other.toml"
    toml.write_text(
        (project.root / "deploy.toml")
        .read_text()
        .replace('key = ".deploy/signing_key"', 'key = ".deploy/other_key"')
    )
    before = project.snapshot()
    result = project.invoke("deploy", "--echo", version="e2e5", toml=toml)
    assert result.returncode == 1
    assert "signature check failed" in result.stderr
    assert "$ portablectl" not in result.stdout
    assert project.snapshot() == before
    last = json.loads(project.ssh(f"tail -n1 {STATE}/audit.jsonl"))
    assert (last["release"], last["result"]) == ("scoreboard_e2e5", "refused")


def test_concurrent_deploy_is_refused_with_the_holder(project: Project) -> None:
    """While one deploy holds the lock, a second command fails at once naming the holder."""
    project.bring_to_any(other_than="e2e6", with_previous=True)
    first = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy"],
        cwd=project.root,
        env=dict(project.env, DEPLOY_VERSION="e2e6"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "held" not in project.ssh(f"test -e {STATE}/deploy.lock && echo held || true"):
            assert first.poll() is None, (
                "the first deploy ended before it was seen holding the lock"
            )
            assert time.monotonic() < deadline
            time.sleep(0.2)
        second = project.invoke("rollback")
        assert second.returncode == 1
        # The holder is the first deploy: this user, this machine, the invoke process itself.
        holder = f"deploy lock held by {getpass.getuser()}@{socket.gethostname()} (pid {first.pid})"
        assert holder in second.stderr, second.stderr
        assert "running `deploy` for scoreboard_e2e6" in second.stderr
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert project.get("/version") == (200, "e2e6\n")


def test_stale_lock_is_broken_only_with_the_flag(project: Project) -> None:
    """A lock older than lock_ttl blocks deploys until --break-lock removes it."""
    project.bring_to_any(with_previous=True)
    stale = json.dumps(
        {
            "token": "old",
            "user": "ghost",
            "origin": "gone",
            "pid": 1,
            "at": 1,
            "release": "scoreboard_x",
            "command": "deploy",
        }
    )
    project.ssh(f"echo '{stale}' > {STATE}/deploy.lock")
    refused = project.invoke("rollback")
    assert refused.returncode == 1 and "ghost@gone" in refused.stderr
    ok(project.invoke("rollback", "--break-lock"))
    assert project.ssh(f"test -e {STATE}/deploy.lock && echo held || echo free").strip() == "free"


def test_dry_run_changes_nothing(project: Project) -> None:
    """--dry-run shows the remote commands and the units that would restart, and changes nothing."""
    project.bring_to_any(other_than="e2e7")
    before = project.snapshot()
    audit = project.ssh(f"cat {STATE}/audit.jsonl")
    result = project.deploy("e2e7", "--dry-run")
    ok(result)
    assert project.ssh(f"cat {STATE}/audit.jsonl") == audit
    assert (
        "(dry-run) $ portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables/scoreboard_e2e7.raw"
        in result.stdout
    )
    assert "restart scoreboard.service" in result.stdout
    assert project.snapshot() == before


def test_deleted_database_is_restored_from_the_replica(project: Project) -> None:
    """With the database deleted on the host, the next deploy's restore unit brings it back."""
    project.bring_to_any(other_than="e2e8")
    project.add_points("bob", 7)
    expected = project.scores()
    # Litestream syncs every second; give it a few to ship the last write.
    time.sleep(5)
    project.ssh("rm -f /var/lib/private/scoreboard/app.db /var/lib/private/scoreboard/app.db-*")
    ok(project.deploy("e2e8"))
    assert project.get("/version") == (200, "e2e8\n")
    assert project.scores() == expected
    log = project.ssh("journalctl -u scoreboard-restore.service --no-pager -n 50")
    assert "restor" in log.lower()


def test_logs_and_status(project: Project) -> None:
    """logs shows the app's journal lines; status shows the live release and active units."""
    project.bring_to("e2e8", previous="e2e2")
    logs = project.invoke("logs", "--lines", "200")
    ok(logs)
    assert "version e2e8 starting" in logs.stdout
    only = project.invoke("logs", "--release", "e2e8", "--lines", "200")
    ok(only)
    assert "version e2e8 starting" in only.stdout and "version e2e2 starting" not in only.stdout
    status = project.invoke("status")
    ok(status)
    assert "scoreboard_e2e8 live" in status.stdout
    assert "active/running" in status.stdout


def test_old_releases_are_pruned(project: Project) -> None:
    """A deploy leaves keep_releases images: the oldest go, the live one and the rollback target stay."""
    state = project.bring_to_any(with_previous=True)
    live = f"scoreboard_{state.live}"
    # Five releases older than any in the audit log, copied on the host (no build, no upload).
    old = [f"scoreboard_e2e0old{i}" for i in range(5)]
    project.ssh(" && ".join(f"cp {LAYOUT.image(live)} {LAYOUT.image(r)}" for r in old))
    ok(project.deploy_built(state.live or ""))
    ours = [i for i in project.ssh("ls /var/lib/portables").split() if i.startswith("scoreboard_")]
    assert len(ours) == 5, ours
    assert f"{live}.raw" in ours and f"scoreboard_{state.previous}.raw" in ours
    assert any(f"{r}.raw" not in ours for r in old)


def test_step_by_step_tasks_make_a_release_live(project: Project) -> None:
    """build, sign, upload, reattach and verify run one by one do what deploy does."""
    project.bring_to_any(other_than="e2e9")
    for task in ("build", "sign", "upload", "reattach", "verify"):
        result = project.invoke(task, version="e2e9")
        ok(result)
    assert project.get("/version") == (200, "e2e9\n")
    last = json.loads(project.ssh(f"tail -n1 {STATE}/audit.jsonl"))
    assert (last["event"], last["release"], last["result"]) == (
        "reattach",
        "scoreboard_e2e9",
        "unverified",
    )


# -- failure paths: each ends rolled back (or explained in one line), audited, lock released ----


def _last_audit(project: Project) -> dict[str, str]:
    return dict(json.loads(project.ssh(f"tail -n1 {STATE}/audit.jsonl")))


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    return line


def _variant(project: Project, name: str, edit: dict[str, tuple[str, str]]) -> Path:
    """A copy of the project's deploy.toml (and of files, edited: path -> (old, new)) in a
    sibling directory; deploy with toml=THE_RESULT."""
    root = project.root.parent / f"{project.root.name}-{name}"
    if not root.exists():
        shutil.copytree(project.root, root, ignore=shutil.ignore_patterns("dist", "build"))
        for path, (old, new) in edit.items():
            text = (root / path).read_text()
            assert old in text
            (root / path).write_text(text.replace(old, new))
    return root / "deploy.toml"


def test_a_socket_that_cannot_start_is_rolled_back(project: Project) -> None:
    """The reattach command itself fails (the new socket's port is taken, here by sshd): the
    previous release comes back, its socket listens on 80 again, and the audit says rolled-back."""
    state = project.bring_to_any(other_than="e2esock")
    toml = _variant(
        project,
        "port-taken",
        {"units/scoreboard-http.socket": ("ListenStream=80", "ListenStream=22")},
    )
    result = project.invoke("deploy", "--restart-sockets", version="e2esock", toml=toml)
    line = _one_line_error(result)
    assert "scoreboard_e2esock failed to start" in line
    assert f"rolled back, scoreboard_{state.live} is live" in line
    assert project.state().live == state.live
    assert project.unit("scoreboard-http.socket", "Listen") == "[::]:80 (Stream)"
    assert project.get("/healthz") == (200, "ok\n")
    audit = _last_audit(project)
    assert (audit["release"], audit["live"], audit["result"]) == (
        "scoreboard_e2esock",
        f"scoreboard_{state.live}",
        "rolled-back",
    )


def _deploy_and_then(
    project: Project, version: str, act: Callable[[subprocess.Popen[str]], None]
) -> subprocess.CompletedProcess[str]:
    """Deploy VERSION with a long settle; once verify has begun (the switch is made), ACT."""
    toml = _variant(
        project, "slow-settle", {"deploy.toml": ("timeout = 60", "timeout = 60\nsettle = 20")}
    )
    args = ["deploy", *(["--no-build"] if project.built(version) else [])]
    env = dict(project.env, DEPLOY_VERSION=version, DEPLOY_TOML=str(toml), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"▸ verify scoreboard_{version}"):
            act(proc)
            break
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


def test_sigterm_after_the_switch_rolls_back_and_releases_the_lock(project: Project) -> None:
    """A cancelled CI job (SIGTERM) during verify: the previous release is put back, the audit
    says why, the lock is released, and the error is one line."""
    state = project.bring_to_any(other_than="e2eterm")
    line = _one_line_error(
        _deploy_and_then(project, "e2eterm", lambda proc: proc.send_signal(signal.SIGTERM))
    )
    assert "scoreboard_e2eterm was interrupted: interrupted (SIGTERM)" in line
    assert f"rolled back, scoreboard_{state.live} is live" in line
    assert project.state().live == state.live
    audit = _last_audit(project)
    assert (audit["release"], audit["result"]) == ("scoreboard_e2eterm", "rolled-back")
    assert project.ssh(f"test -e {LAYOUT.lock} && echo held || echo free").strip() == "free"


#: `systemd-analyze security` targets for the attached units under the pd-hardened profile.
EXPOSURE_TARGETS = {
    "scoreboard.service": 1.0,
    "scoreboard-litestream.service": 2.0,
    "scoreboard-restore.service": 2.0,
}


def _exposure(project: Project, unit: str) -> float:
    out = project.ssh(f"systemd-analyze security --no-pager {unit} | tail -n1")
    score = facts.exposure(out)
    assert score is not None, out
    return score


def test_units_meet_their_exposure_targets(project: Project) -> None:
    """Under pd-hardened every unit scores within its target, with no capabilities, no privilege
    gain, its own user namespace, a read-only system and a system-call filter."""
    project.bring_to_any()
    scores = {unit: _exposure(project, unit) for unit in EXPOSURE_TARGETS}
    assert all(scores[u] <= target for u, target in EXPOSURE_TARGETS.items()), scores
    props = project.ssh(
        "systemctl show scoreboard.service -p CapabilityBoundingSet -p NoNewPrivileges "
        "-p PrivateUsers -p ProtectSystem -p SystemCallFilter -p RestrictAddressFamilies"
    )
    shown = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert shown["CapabilityBoundingSet"] == ""
    assert (shown["NoNewPrivileges"], shown["PrivateUsers"], shown["ProtectSystem"]) == (
        "yes",
        "yes",
        "strict",
    )
    assert shown["SystemCallFilter"].strip() != ""
    assert set(shown["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_a_profile_change_is_an_announced_restart_that_keeps_the_sockets(
    project: Project,
) -> None:
    """Switching [deploy] profile (pd-hardened -> default -> pd-hardened) restarts every service
    once, says so in the plan, never restarts a socket, and the scores follow the profile."""
    project.bring_to("e2eprof")
    sockets = {
        s: project.unit(s, "ActiveEnterTimestampMonotonic")
        for s in ("scoreboard-http.socket", "scoreboard-https.socket")
    }
    stock = _variant(
        project, "stock-profile", {"deploy.toml": ("[deploy]\n", '[deploy]\nprofile = "default"\n')}
    )
    result = project.invoke("deploy", version="e2eprof", toml=stock)
    ok(result)
    shown = " ".join(result.stdout.split())  # rich wraps lines at the terminal's width
    assert "the portable profile changes to default" in shown
    assert "restart scoreboard-litestream.service: portable profile changed to default" in shown
    assert _exposure(project, "scoreboard.service") > EXPOSURE_TARGETS["scoreboard.service"]

    result = project.invoke("deploy", "--no-build", version="e2eprof")
    ok(result)
    assert "the portable profile changes to pd-hardened" in " ".join(result.stdout.split())
    assert _exposure(project, "scoreboard.service") <= EXPOSURE_TARGETS["scoreboard.service"]
    assert project.get("/healthz") == (200, "ok\n")
    for unit, since in sockets.items():
        assert project.unit(unit, "ActiveEnterTimestampMonotonic") == since
