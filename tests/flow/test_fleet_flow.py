"""A fleet deploy over three fake hosts: the order of locks, uploads and batches, what a failing
batch does to the others, rollback-all, a held lock, an unreachable host (fake hosts)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path

import paramiko
import pytest

from portable_deploy import fleet, history
from portable_deploy.board import Board
from portable_deploy.commands import lock
from portable_deploy.config import Config, FleetConfig, HostConfig
from portable_deploy.errors import LockHeld
from portable_deploy.fleet import FleetFailed, HostRun
from portable_deploy.host import Result
from portable_deploy.release import Options

from .conftest import HOST_INFO, FakeHost, active_units, arrived, config, manifest, signed

V1, V2 = manifest("1"), manifest("2", app="e")
SWAP = "portablectl reattach --profile pd-hardened --copy=copy --enable /var/lib/portables"
#: Every command of every host, in the order they reached the hosts: (host, line).
Log = list[tuple[str, str]]


@dataclasses.dataclass(eq=False)
class SeqHost(FakeHost):
    shared: Log = dataclasses.field(default_factory=list)
    guard: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def _logged(self, command: object) -> str:
        line = super()._logged(command)  # type: ignore[arg-type]
        with self.guard:
            self.shared.append((self.name, line))
        return line

    def _put_stream(self, stream, size, remote, start, progress):  # type: ignore[no-untyped-def]
        with self.guard:
            self.shared.append((self.name, f"put {remote}"))
        super()._put_stream(stream, size, remote, start, progress)


def host(name: str, shared: Log) -> SeqHost:
    """Like conftest's live_v1: scoreboard_1 live, scoreboard_2 arriving."""
    h = SeqHost(name=name, info=HOST_INFO.stdout, live="scoreboard_1", shared=shared)
    h.manifests = {"scoreboard_1": V1}
    h.audit = (
        '{"at":"t1","event":"deploy","live":"scoreboard_1","release":"scoreboard_1",'
        '"result":"ok","user":"u","origin":"o"}\n'
    )
    h.version = "2"
    h.on(r"systemctl show", active_units)
    h.on(r"releases/scoreboard_1\.manifest\.json$", Result(V1.to_json(), "", 0))
    h.on(r"incoming/scoreboard_2\.raw$", arrived(V2))
    h.on(r"for f in", Result("scoreboard_1.raw\nscoreboard_2.raw\n", "", 0))
    return h


def fleet_config(tmp_path: Path, names: list[str], **fleet_keys: object) -> Config:
    cfg = config(tmp_path)
    return dataclasses.replace(
        cfg,
        hosts={n: HostConfig(n, address=n) for n in names},
        fleet=dataclasses.replace(FleetConfig(), **fleet_keys),  # type: ignore[arg-type]
    )


def fails_health_until_put_back(h: SeqHost) -> None:
    h.health = 500
    h.version = "1"

    def back(line: str) -> Result:
        h.health = 200
        return Result("", "", 0)

    h.on(r"portablectl reattach .*scoreboard_1\.raw", back)


def follows_swaps(h: SeqHost) -> None:
    """H's state read says what was swapped in last (the rollback-all reads it again)."""
    h.manifests["scoreboard_2"] = V2

    def to(release: str, version: str) -> Result:
        h.live, h.version = release, version
        return Result("", "", 0)

    h.on(r"portablectl reattach .*scoreboard_2\.raw", lambda line: to("scoreboard_2", "2"))
    h.on(r"portablectl reattach .*scoreboard_1\.raw", lambda line: to("scoreboard_1", "1"))


def swaps(shared: Log, name: str) -> list[int]:
    return [i for i, (h, line) in enumerate(shared) if h == name and SWAP in line]


def run(hosts: list[SeqHost], cfg: Config, rollback_all: bool = False) -> list[HostRun]:
    with Board([h.name for h in hosts]) as board:
        return fleet.deploy(hosts, cfg, signed(V2), Options(), board, rollback_all=rollback_all)


@pytest.fixture(autouse=True)
def no_operation() -> None:
    yield
    history.set_operation("")


def test_locks_in_name_order_uploads_before_any_switch_canary_first(tmp_path: Path) -> None:
    shared: Log = []
    c, a, b = host("c", shared), host("a", shared), host("b", shared)
    runs = run([c, a, b], fleet_config(tmp_path, ["c", "a", "b"]))
    assert [(r.name, r.result, r.now) for r in runs] == [
        ("c", "deployed", "scoreboard_2"),
        ("a", "deployed", "scoreboard_2"),
        ("b", "deployed", "scoreboard_2"),
    ]
    locks = [h for h, line in shared if "lock.acquire" in line or re.search(r'ln "\$tmp"', line)]
    assert locks[:3] == ["a", "b", "c"]
    first_swap = min(i for n in "abc" for i in swaps(shared, n))
    uploads = [
        i for i, (_, line) in enumerate(shared) if line.startswith("put ") and ".delta" in line
    ]
    assert len(uploads) == 3 and max(uploads) < first_swap
    # Batches [1, "100%"] over the hosts in the order given: c is the canary, verified (its
    # audit record written) before a and b are swapped.
    c_ok = max(i for i, (h, line) in enumerate(shared) if h == "c" and "audit.jsonl" in line)
    assert c_ok < min(swaps(shared, "a") + swaps(shared, "b"))
    ops = {h.name: h.audited()[-1].operation for h in (a, b, c)}
    assert len(set(ops.values())) == 1
    assert re.fullmatch(r"fleet deploy [0-9a-f]{12} \(3 hosts\)", ops["a"])
    for h in (a, b, c):
        assert h.verbs()[-1] == "lock.release"


def test_a_failing_batch_is_rolled_back_later_ones_untouched(tmp_path: Path) -> None:
    shared: Log = []
    a, b, c = (host(n, shared) for n in "abc")
    fails_health_until_put_back(b)
    with pytest.raises(FleetFailed) as failed:
        run([a, b, c], fleet_config(tmp_path, ["a", "b", "c"], batches=(1, 1, 1)))
    rows = {r.name: (r.result, r.now) for r in failed.value.runs}
    assert rows == {
        "a": ("deployed", "scoreboard_2"),
        "b": ("failed, rolled back", "scoreboard_1"),
        "c": ("skipped (an earlier batch failed)", "scoreboard_1"),
    }
    assert failed.value.message.startswith("deploy failed on b; a kept scoreboard_2")
    assert swaps(shared, "c") == []  # uploaded to, never switched
    assert [r.result for r in b.audited()] == ["rolled-back"]
    for h in (a, b, c):
        assert h.verbs()[-1] == "lock.release"


def test_rollback_all_puts_back_the_hosts_that_passed(tmp_path: Path) -> None:
    shared: Log = []
    a, b, c = (host(n, shared) for n in "abc")
    follows_swaps(a)
    fails_health_until_put_back(b)
    with pytest.raises(FleetFailed) as failed:
        run([a, b, c], fleet_config(tmp_path, ["a", "b", "c"], batches=(1, 1, 1)), True)
    rows = {r.name: (r.result, r.now) for r in failed.value.runs}
    assert rows["a"] == ("put back (rollback-all)", "scoreboard_1")
    a_swaps = [shared[i][1] for i in swaps(shared, "a")]
    assert [s.split("/")[-1].split(" ")[0] for s in a_swaps] == [
        "scoreboard_2.raw",
        "scoreboard_1.raw",
    ]
    assert [(r.event, r.result) for r in a.audited()] == [("deploy", "ok"), ("rollback", "ok")]


def test_a_held_lock_refuses_the_fleet_and_releases_what_it_took(tmp_path: Path) -> None:
    shared: Log = []
    a, b, c = (host(n, shared) for n in "abc")
    holder = json.dumps(
        {"at": 1.0e9, "command": "deploy (fleet deploy x (2 hosts))", "origin": "elsewhere"}
        | {"pid": 7, "release": "scoreboard_9", "token": "t", "user": "bob", "machine": "m"}
    )
    b.on(r'ln "\$tmp"', Result(holder + "\n", "", lock.HELD))
    with pytest.raises(LockHeld, match=r"\[b\] deploy lock held by bob@elsewhere"):
        run([a, b, c], fleet_config(tmp_path, ["a", "b", "c"]))
    assert a.verbs() == ["lock.acquire", "state", "lock.release"]
    assert c.log == []


def test_unreachable_hosts_up_to_max_failures_are_left_out(tmp_path: Path) -> None:
    shared: Log = []
    a, b, c = (host(n, shared) for n in "abc")
    c.fail(lock.acquire, paramiko.SSHException("Connection refused"))
    with pytest.raises(FleetFailed, match="more than \\[fleet\\] max_failures = 0"):
        run([a, b, c], fleet_config(tmp_path, ["a", "b", "c"]))
    assert swaps(shared, "a") == swaps(shared, "b") == []
    assert a.verbs()[-1] == b.verbs()[-1] == "lock.release"

    shared.clear()
    a, b, c = (host(n, shared) for n in "abc")
    c.fail(lock.acquire, paramiko.SSHException("Connection refused"))
    with pytest.raises(FleetFailed) as left:  # the others deploy; exit code 1 all the same
        run([a, b, c], fleet_config(tmp_path, ["a", "b", "c"], max_failures=1))
    assert [(r.name, r.result) for r in left.value.runs] == [
        ("a", "deployed"),
        ("b", "deployed"),
        ("c", "unreachable"),
    ]
    assert left.value.message == (
        "left out c (unreachable), within [fleet] max_failures; a, b now run scoreboard_2"
    )


def test_a_fleet_dry_run_changes_nothing_anywhere(tmp_path: Path) -> None:
    shared: Log = []
    hosts = [host(n, shared) for n in "ab"]
    for h in hosts:
        h.dry_run = True
    with Board(["a", "b"]) as board:
        runs = fleet.deploy(
            hosts, fleet_config(tmp_path, ["a", "b"]), signed(V2), Options(dry_run=True), board
        )
    assert [r.result for r in runs] == ["not touched", "not touched"]
    for h in hosts:
        executed = [line for line in h.log if not line.startswith("(dry-run)")]
        assert all(v in ("state", "inventory") for v in FakeHost(log=executed).verbs()), executed
        assert any(line.startswith(f"(dry-run) {SWAP}") for line in h.log)
