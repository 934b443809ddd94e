"""Fleets on three sandbox VMs: a deploy switches a canary first and the rest batch by batch; a
batch that fails is rolled back by itself, later batches are never touched, earlier ones keep
the new release (or go back too with --rollback-all); --role narrows the fleet; two fleet
deploys at once never deadlock; an unreachable host is tolerated up to [fleet] max_failures;
`logs` of three hosts comes out in time order.

The three hosts are a (sandbox-1, roles web and canary), b (sandbox-2, web) and c (sandbox-3,
worker), switched one per batch so that the second batch's host can fail on its own: its
/etc/default/scoreboard sets SCOREBOARD_FAIL_HEALTH=VERSION (only that version's /healthz
fails there).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from portable_deploy.sandbox import VM
from tests.conftest import ssh_run
from tests.project import STATE, Project, make_project, ok, stopped

pytestmark = pytest.mark.e2e

HOSTS = """
[hosts.a]
sandbox = 1
roles = ["web", "canary"]

[hosts.b]
sandbox = 2
roles = ["web"]

[hosts.c]
sandbox = 3
roles = ["worker"]

[fleet]
batches = [1, 1, "100%"]
"""
#: A fourth host that nothing answers for (nothing listens on 127.0.0.1:9).
GONE = '\n[hosts.d]\naddress = "127.0.0.1"\nport = 9\nuser = "root"\n'
NAMES = {"a": 0, "b": 1, "c": 2}


@dataclass
class Fleet:
    project: Project
    vms: list[VM]

    def live(self) -> dict[str, str | None]:
        """Host name -> live version, as the tool reads it."""
        out = {}
        for name, i in NAMES.items():
            self.project.vm = self.vms[i]
            out[name] = self.project.state().live
        self.project.vm = self.vms[0]
        return out

    def ssh(self, host: str, script: str) -> str:
        return ssh_run(self.vms[NAMES[host]], script).stdout

    def audit(self, host: str) -> list[dict[str, str]]:
        text = self.ssh(host, f"cat {STATE}/audit.jsonl 2>/dev/null || true")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def fail_health(self, host: str, version: str) -> None:
        self.ssh(host, f"printf 'SCOREBOARD_FAIL_HEALTH={version}\\n' > /etc/default/scoreboard")

    def deploy_failing_on(
        self, host: str, version: str, *args: str
    ) -> subprocess.CompletedProcess[str]:
        """Deploy VERSION (with ARGS) while its /healthz fails on HOST only."""
        self.fail_health(host, version)
        try:
            return self.project.deploy(version, *args)
        finally:
            self.heal()

    def heal(self) -> None:
        for host in NAMES:
            self.ssh(host, "rm -f /etc/default/scoreboard")


@pytest.fixture(scope="module")
def fleet(sandbox_fleet: list[VM], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    p = make_project(sandbox_fleet[0], tmp_path_factory.mktemp("fleet"))
    toml = p.root / "deploy.toml"
    text = toml.read_text().replace("[hosts.sandbox]\nsandbox = true\n", HOSTS)
    assert "[hosts.c]" in text
    # A release whose health fails is judged in 10 s, not 60.
    toml.write_text(text.replace("timeout = 60", "timeout = 10"))
    p.env["COLUMNS"] = "250"  # the final table on one line per host (not a terminal: 80)
    f = Fleet(p, sandbox_fleet)
    for vm in sandbox_fleet:
        Project(p.root, vm, p.env).reset()
    yield f
    f.heal()
    for vm in sandbox_fleet:
        Project(p.root, vm, p.env).reset()


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [" ".join(line.split()) for line in result.stdout.splitlines()]


def _row(result: subprocess.CompletedProcess[str], host: str) -> str:
    """The final table's row of HOST."""
    rows = [line for line in _lines(result) if re.match(rf"^│? ?{host} ", line)]
    assert rows, result.stdout
    return rows[-1]


def test_a_fleet_deploy_switches_a_canary_first_then_the_rest(fleet: Fleet) -> None:
    result = fleet.project.deploy("fl1")
    ok(result)
    assert fleet.live() == {"a": "fl1", "b": "fl1", "c": "fl1"}
    lines = _lines(result)
    batch = [i for i, line in enumerate(lines) if line.startswith("▸ batch ")]
    assert [lines[i] for i in batch] == [
        "▸ batch 1 of 3: a",
        "▸ batch 2 of 3: b",
        "▸ batch 3 of 3: c",
    ]
    # The canary was switched (and verified) before the second batch began.
    canary = next(i for i, line in enumerate(lines) if line == "· [a] deployed scoreboard_fl1")
    assert batch[0] < canary < batch[1]
    # Every upload ended before the first switch.
    uploaded = [i for i, line in enumerate(lines) if re.fullmatch(r"· \[[abc]\] uploaded", line)]
    assert len(uploaded) == 3 and max(uploaded) < batch[0]
    # One operation, named in the audit record of every host.
    ops = {host: fleet.audit(host)[-1].get("operation", "") for host in NAMES}
    assert len(set(ops.values())) == 1 and re.fullmatch(
        r"fleet deploy [0-9a-f]{12} \(3 hosts\)", ops["a"]
    ), ops
    assert "scoreboard_fl1 is live on a, b, c" in result.stdout


def test_logs_of_three_hosts_come_out_in_time_order(fleet: Fleet) -> None:
    result = fleet.project.invoke("logs", "--lines", "30")
    ok(result)
    stamps, hosts = [], set()
    for line in result.stdout.splitlines():
        m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) \[([abc])\] ", line)
        assert m, line
        stamps.append(m.group(1))
        hosts.add(m.group(2))
    assert hosts == {"a", "b", "c"}
    assert len(stamps) <= 90 and stamps == sorted(stamps)


def test_logs_follow_every_host_until_ctrl_c(fleet: Fleet) -> None:
    """`logs --follow` shows a new line of each of the three hosts, tagged; Ctrl-C ends it with
    no traceback and no journalctl left on any host. (journalctl -u expands its unit pattern
    when it starts: the test unit has logged once before.)"""
    ping = "systemd-run --quiet --wait --unit=scoreboard-logtest sh -c 'echo hello-{}-$0' {}"
    for host in NAMES:
        fleet.ssh(host, ping.format(host, "before"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "logs", "--follow", "--lines", "1"],
        cwd=fleet.project.root,
        env=fleet.project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        _wait_for(lambda: len(seen) >= 3, "the three hosts' last lines")
        for host in NAMES:
            fleet.ssh(host, ping.format(host, "after"))
        _wait_for(
            lambda: all(
                any(f"[{h}]" in s and f"hello-{h}-after" in s for s in seen) for h in NAMES
            ),
            "a new line from every host",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        reader.join(timeout=10)
    assert "Traceback" not in err, err
    left = {h: fleet.ssh(h, "pgrep -f '[j]ournalctl --no-pager -o json' || true") for h in NAMES}
    _wait_for(
        lambda: (
            not any(
                fleet.ssh(h, "pgrep -f '[j]ournalctl --no-pager -o json' || true") for h in NAMES
            )
        ),
        f"the remote journalctl processes to end ({left})",
        timeout=20,
    )


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_failing_batch_rolls_back_and_later_ones_are_never_touched(fleet: Fleet) -> None:
    result = fleet.deploy_failing_on("b", "fl2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert fleet.live() == {"a": "fl2", "b": "fl1", "c": "fl1"}
    assert "failed, rolled back" in _row(result, "b")
    assert "skipped (an earlier batch failed)" in _row(result, "c")
    assert "deployed" in _row(result, "a")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "deploy failed on b; a kept scoreboard_fl2" in errors[0], errors
    assert [r["result"] for r in fleet.audit("b")[-1:]] == ["rolled-back"]
    assert not [r for r in fleet.audit("c") if r["release"] == "scoreboard_fl2"]


def test_rollback_all_puts_every_switched_host_back(fleet: Fleet) -> None:
    """a runs fl2, b and c fl1: with --rollback-all, fl3 failing on b leaves each host on what
    it ran before."""
    result = fleet.deploy_failing_on("b", "fl3", "--rollback-all")
    assert result.returncode == 1, result.stdout + result.stderr
    assert fleet.live() == {"a": "fl2", "b": "fl1", "c": "fl1"}
    assert "put back (rollback-all)" in _row(result, "a")
    assert "failed, rolled back" in _row(result, "b")
    assert fleet.audit("a")[-1]["event"] == "rollback"


def test_a_role_limits_the_deploy(fleet: Fleet) -> None:
    result = fleet.project.deploy("fl4", "--role", "web")
    ok(result)
    assert fleet.live() == {"a": "fl4", "b": "fl4", "c": "fl1"}


def test_two_fleet_deploys_at_once_do_not_deadlock(fleet: Fleet) -> None:
    """The first holds every lock (stopped after its uploads were checked); the second is
    refused at once with the holder's name; the first then ends well and no lock is left."""
    first = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "--no-build"],
        cwd=fleet.project.root,
        env=dict(fleet.project.env, DEPLOY_VERSION="fl4", PORTABLE_DEPLOY_FAILPOINT="checked"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_stopped(first)
        second = fleet.project.invoke("deploy", "--no-build", version="fl4")
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    assert second.returncode == 1
    assert "deploy lock held by" in second.stderr and "fleet deploy" in second.stderr
    # Refused at the first host in name order: nothing of the second is in any audit log.
    for host in NAMES:
        assert fleet.ssh(host, f"test -e {STATE}/deploy.lock && echo held || echo free") == "free\n"
    assert fleet.live() == {"a": "fl4", "b": "fl4", "c": "fl4"}


def _wait_stopped(proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not stopped(proc.pid):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first deploy never reached its failpoint"
        time.sleep(0.1)


def test_an_unreachable_host_is_tolerated_up_to_max_failures(fleet: Fleet) -> None:
    toml = fleet.project.root / "deploy.toml"
    base = toml.read_text()
    try:
        toml.write_text(base + GONE)
        refused = fleet.project.deploy("fl5")
        assert refused.returncode == 1
        assert "more than [fleet] max_failures = 0: nothing was switched" in refused.stderr
        assert fleet.live() == {"a": "fl4", "b": "fl4", "c": "fl4"}
        toml.write_text(base.replace("[fleet]\n", "[fleet]\nmax_failures = 1\n") + GONE)
        result = fleet.project.deploy("fl5", "--no-build")
    finally:
        toml.write_text(base)
    # The others deploy; the exit code still says one host did not.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unreachable" in _row(result, "d")
    assert (
        "left out d (unreachable), within [fleet] max_failures; a, b, c now run scoreboard_fl5"
        in result.stderr
    )
    assert fleet.live() == {"a": "fl5", "b": "fl5", "c": "fl5"}


def test_rollback_and_status_act_on_the_selected_fleet(fleet: Fleet) -> None:
    """Every host on fl5 after fl4: a fleet rollback returns each to its own previous release,
    side by side; status and releases read the hosts --role selects."""
    result = fleet.project.invoke("rollback")
    ok(result)
    assert fleet.live() == {"a": "fl4", "b": "fl4", "c": "fl4"}
    assert "rolled back: a, b, c" in result.stdout
    ops = {fleet.audit(host)[-1].get("operation", "") for host in NAMES}
    assert len(ops) == 1 and re.fullmatch(r"fleet rollback [0-9a-f]{12} \(3 hosts\)", ops.pop())
    status = fleet.project.invoke("status", "--role", "web")
    ok(status)
    titles = [
        line
        for line in _lines(status)
        if line.endswith("scoreboard_fl4 live, rollback target scoreboard_fl5")
    ]
    assert [t.split(":")[0] for t in titles] == ["a", "b"], status.stdout
