"""`invoke status`, `audit` and `lock`: the facts they parse (recorded on the VM), the health
judgement, and the views (the table at 80 columns, the JSON document)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from rich.console import Console

from portable_deploy import facts, status, ui
from portable_deploy.commands.layout import Layout
from portable_deploy.commands.state import SECTION
from portable_deploy.facts import AuditRecord, DiskUse, LockRecord, UnitState
from portable_deploy.host import Remote
from portable_deploy.locking import boot_id, machine_id, why_stale
from portable_deploy.preflight import HostState, state_from
from portable_deploy.status import HostStatus, TlsStatus, UnitStatus
from portable_deploy.tasks.audit import COLUMNS as AUDIT_COLUMNS
from portable_deploy.tasks.audit import record_json
from portable_deploy.tasks.audit import rows as audit_rows
from portable_deploy.tls import Certificate

RECORDED = Path(__file__).parent / "recorded"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())


def sections(name: str) -> dict[str, str]:
    return facts.state_sections((RECORDED / name).read_text(), SECTION)


def unit(name: str, active: str = "active", sub: str = "running", **kw: object) -> UnitState:
    values: dict[str, object] = {
        "id": name,
        "load_state": "loaded",
        "active_state": active,
        "sub_state": sub,
        "result": "success",
        "n_restarts": 0,
        "main_pid": 42,
        "active_enter_monotonic": 1,
        "active_enter": f"@{EPOCH - 3720}",
    }
    values.update(kw)
    return UnitState(**values)  # type: ignore[arg-type]


def healthy(**kw: object) -> HostStatus:
    values: dict[str, object] = {
        "host": "web1",
        "app": "scoreboard",
        "live": "scoreboard_2",
        "rollback_target": "scoreboard_1",
        "units": (
            UnitStatus(
                "scoreboard-http.socket",
                True,
                unit("scoreboard-http.socket", sub="listening", listen=("[::]:80 (Stream)",)),
            ),
            UnitStatus("scoreboard-restore.service", False, unit("x", "inactive", "dead")),
            UnitStatus("scoreboard.service", True, unit("scoreboard.service", memory=9_400_000)),
        ),
        "now": EPOCH,
        "health": ("/healthz", 200, 200),
        "tls": None,
        "last_deploy": AuditRecord("t", "deploy", "scoreboard_2", "scoreboard_2", "ok", "u", "o"),
        "disk": DiskUse(2, 20_000_000, 1_000_000_000),
        "lock": None,
    }
    values.update(kw)
    return HostStatus(**values)  # type: ignore[arg-type]


def with_unit(name: str, state: UnitState | None, must_run: bool = True) -> HostStatus:
    s = healthy()
    units = (*(u for u in s.units if u.name != name), UnitStatus(name, must_run, state))
    return dataclasses.replace(s, units=units)


def cert(days: int) -> Certificate:
    return Certificate(("scoreboard.test",), NOW - timedelta(days=30), NOW + timedelta(days=days))


def tls_status(problem: str | None = None, days: int = 60) -> TlsStatus:
    return TlsStatus("scoreboard.test", 443, 14, problem, cert(days))


# -- facts, on output recorded on the VM ----------------------------------------------------


def test_recorded_units_carry_memory_and_socket_addresses() -> None:
    """A service reports the bytes its cgroup uses; each socket its listening address."""
    states = facts.unit_states(sections("status_report.txt")["units"])
    assert states["scoreboard-http.socket"].listen == ("[::]:80 (Stream)",)
    assert states["scoreboard-https.socket"].listen == ("[::]:443 (Stream)",)
    memory = states["scoreboard-litestream.service"].memory
    assert memory is not None and memory > 1_000_000
    assert (
        states["scoreboard-http.socket"].memory is None
        or states["scoreboard-http.socket"].memory >= 0
    )


def test_recorded_times_are_epoch_seconds_on_the_hosts_clock() -> None:
    """ActiveEnterTimestamp comes as @EPOCH, before the host's own `date +%s`."""
    s = sections("status_report.txt")
    states = facts.unit_states(s["units"])
    started = facts.unix_time(states["scoreboard.service"].active_enter)
    assert started is not None and 0 < int(s["now"]) - started < 3600


def test_recorded_disk_use_counts_the_kept_images() -> None:
    """Two releases kept: two images, their bytes and more, and the free space of the disk."""
    s = sections("status_report.txt")
    use = facts.disk_use(s["images"], s["releases-dir"], s["disk"])
    assert use.images == 2
    assert use.bytes > 2_000_000 and use.free is not None and use.free > 100_000_000


def test_a_recorded_healthy_host_has_no_problem() -> None:
    """The recording of a healthy host, read as status reads it, is judged healthy."""
    s = sections("status_report.txt")
    state = _state(s)
    report = status.from_sections("sandbox", "scoreboard", state, s, ("/healthz", 200, 200))
    assert report.live == "scoreboard_e2e2" and report.rollback_target == "scoreboard_e2e1"
    assert status.problems(report, NOW) == []
    assert [u.name for u in report.units if not u.must_run] == ["scoreboard-restore.service"]
    assert report.last_deploy is not None and report.last_deploy.release == "scoreboard_e2e2"


def test_a_recorded_failed_unit_is_a_problem() -> None:
    """The recording with Litestream killed (no restart) names it as failed by a signal."""
    s = sections("status_report_failed.txt")
    report = status.from_sections("sandbox", "scoreboard", _state(s), s, ("/healthz", 200, 200))
    assert status.problems(report, NOW) == ["scoreboard-litestream.service failed (signal)"]


class _Named:
    """What reading the state needs of a host: its name, for messages."""

    name = "sandbox"


def _state(s: dict[str, str]) -> HostState:
    return state_from(cast(Remote, _Named()), Layout("scoreboard"), s)


def test_memory_not_counted_is_none() -> None:
    """MemoryCurrent=[not set] (no accounting) and UINT64_MAX mean no value, not a size."""
    for value in ("[not set]", str(2**64 - 1)):
        out = f"Id=a.service\nMemoryCurrent={value}\n"
        assert facts.unit_states(out)["a.service"].memory is None


def test_a_unit_never_active_has_no_start_time() -> None:
    """An empty or zero timestamp is no time at all."""
    assert facts.unix_time("") is None and facts.unix_time("@0") is None
    assert facts.unix_time("@1790000000") == 1790000000


# -- the judgement --------------------------------------------------------------------------


def test_a_healthy_host_has_no_problem() -> None:
    """Every unit that must run is active, the oneshot is done, the health check answers 200."""
    assert status.problems(healthy(), NOW) == []


def test_no_live_release_is_a_problem() -> None:
    """A host with nothing attached is unhealthy."""
    assert status.problems(healthy(live=None), NOW) == ["no release of scoreboard is attached"]


def test_a_stopped_unit_that_must_run_is_a_problem() -> None:
    """A long-running service found inactive is unhealthy."""
    s = with_unit("scoreboard.service", unit("scoreboard.service", "inactive", "dead"))
    assert status.problems(s, NOW) == ["scoreboard.service is inactive/dead, should be active"]


def test_a_finished_oneshot_is_not_a_problem() -> None:
    """The restore unit, inactive after it ran, is fine."""
    s = with_unit("r.service", unit("r.service", "inactive", "dead"), must_run=False)
    assert status.problems(s, NOW) == []


def test_a_failed_oneshot_is_a_problem() -> None:
    """Any failed unit is unhealthy, a oneshot too."""
    s = with_unit("r.service", unit("r.service", "failed", "failed", result="exit-code"), False)
    assert status.problems(s, NOW) == ["r.service failed (exit-code)"]


def test_a_unit_waiting_to_restart_is_a_problem() -> None:
    """activating/auto-restart: it crashed and systemd will try again."""
    s = with_unit("a.service", unit("a.service", "activating", "auto-restart", result="signal"))
    assert status.problems(s, NOW) == ["a.service exited and waits to be restarted (signal)"]


def test_a_unit_systemd_does_not_know_is_a_problem() -> None:
    """A unit of the manifest that systemd does not report is unhealthy."""
    s = with_unit("gone.service", None)
    assert status.problems(s, NOW) == ["gone.service is not loaded (unknown to systemd)"]


def test_a_health_check_with_the_wrong_status_is_a_problem() -> None:
    """GET /healthz -> 500 where 200 is expected."""
    assert status.problems(healthy(health=("/healthz", 500, 200)), NOW) == [
        "health check GET /healthz -> 500, expected 200"
    ]


def test_no_answer_to_the_health_check_is_a_problem() -> None:
    """Nothing listening: status 0 is shown as no answer."""
    assert status.problems(healthy(health=("/healthz", 0, 200)), NOW) == [
        "health check GET /healthz -> no answer, expected 200"
    ]


def test_a_refused_certificate_is_the_problem_reported() -> None:
    """TLS refused: its reason is the problem (there is no HTTP status to compare)."""
    s = healthy(health=("/healthz", 0, 200), tls=tls_status("certificate expired"))
    assert status.problems(s, NOW) == ["certificate expired"]


def test_a_certificate_expiring_within_warn_days_is_a_problem() -> None:
    """10 days left with warn_days 14: renew it (cron gets exit code 1)."""
    found = status.problems(healthy(tls=tls_status(days=10)), NOW)
    assert found == [
        "certificate for scoreboard.test expires in 10 days, on 2026-12-07 (warn_days = 14): "
        "renew it"
    ]


def test_a_certificate_with_time_left_is_fine() -> None:
    """60 days left: healthy."""
    assert status.problems(healthy(tls=tls_status(days=60)), NOW) == []


def test_restarts_are_a_warning_not_a_problem() -> None:
    """A service systemd restarted by itself is shown, but the host stays healthy."""
    s = with_unit("a.service", unit("a.service", n_restarts=3))
    assert status.problems(s, NOW) == []
    assert status.warnings(s) == [
        "a.service was restarted 3 times by systemd (Restart=) since it was started: it crashed"
    ]


def test_the_last_deploy_skips_uploads() -> None:
    """An upload after the deploy is not the last deploy."""
    deploy = AuditRecord("t1", "rollback", "a_1", "a_1", "ok", "u", "o")
    upload = AuditRecord("t2", "upload", "a_2", "a_1", "ok", "u", "o")
    assert status.last_deploy([deploy, upload]) == deploy
    assert status.last_deploy([upload]) is None


# -- the views ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(45, "45s"), (720, "12m"), (3 * 3600, "3h"), (3 * 3600 + 720, "3h12m"), (2 * 86400, "2d"),
     (2 * 86400 + 3 * 3600 + 60, "2d3h"), (-5, "0s")],
)  # fmt: skip
def test_ages_use_two_units_at_most(seconds: int, shown: str) -> None:
    """Durations read at a glance."""
    assert status.age(seconds) == shown


def test_unit_rows_show_state_age_restarts_and_memory() -> None:
    """One row per unit; a unit that is not running has no age."""
    assert status.unit_rows(healthy()) == [
        ["scoreboard-http.socket", "active/listening", "1h2m", "0", ""],
        ["scoreboard-restore.service", "inactive/dead", "", "0", ""],
        ["scoreboard.service", "active/running", "1h2m", "0", "9.4 MB"],
    ]


def test_the_summary_names_sockets_health_last_deploy_and_disk() -> None:
    """The lines under the table."""
    assert status.summary(healthy(), NOW) == [
        "scoreboard-http.socket listens on [::]:80",
        "health: GET /healthz -> 200",
        "last deploy: deploy of scoreboard_2 ok, t, by u@o",
        "releases: 2 kept, 20.0 MB on disk, 1000.0 MB free",
    ]


def test_the_summary_names_a_held_lock_and_the_certificate() -> None:
    """A held lock and the certificate's end date are shown."""
    lock = LockRecord("tok", "alice", "laptop", 7, 1790000000.0, "scoreboard_3", "deploy")
    lines = status.summary(healthy(lock=lock, tls=tls_status(days=60)), NOW)
    assert "certificate: scoreboard.test, valid until 2027-01-26 (60 days left)" in lines
    assert lines[-1] == (
        "deploy lock: held by alice@laptop (pid 7) since 2026-09-21 14:13:20 UTC, running "
        "`deploy` for scoreboard_3"
    )


def test_the_json_document_holds_units_with_ports_and_is_serializable() -> None:
    """--json: healthy flag, problems, each unit with its ports, sizes in bytes."""
    doc = json.loads(json.dumps(status.to_json(healthy(), NOW)))
    assert doc["healthy"] is True and doc["problems"] == [] and doc["reachable"] is True
    units = {u["name"]: u for u in doc["units"]}
    assert units["scoreboard-http.socket"]["ports"] == [80]
    assert units["scoreboard-http.socket"]["listen"] == ["[::]:80"]
    assert units["scoreboard.service"]["memory"] == 9_400_000
    assert units["scoreboard.service"]["since"] == "2026-11-27T10:58:00+00:00"
    assert doc["releases"] == {"images": 2, "bytes": 20_000_000, "disk_free": 1_000_000_000}


def test_an_unreadable_host_is_unhealthy_in_json() -> None:
    """A host that could not be read is a JSON object too, with why."""
    assert status.failed_json("web2", "[web2] cannot connect", reachable=False) == {
        "host": "web2",
        "reachable": False,
        "healthy": False,
        "problems": ["[web2] cannot connect"],
    }


@pytest.mark.parametrize(
    ("address", "ports"),
    [("[::]:80 (Stream)", [80]), ("0.0.0.0:8443 (Stream)", [8443]), ("443 (Datagram)", [443]),
     ("/run/app.sock (Stream)", [])],
)  # fmt: skip
def test_ports_are_read_from_socket_addresses(address: str, ports: list[int]) -> None:
    """IPv6, IPv4 and bare ports; a Unix socket has none."""
    u = UnitStatus("a.socket", True, unit("a.socket", listen=(address,)))
    assert u.ports == ports


def test_unit_names_stay_whole_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status table on an 80-column terminal: every unit name whole, no line wider."""
    long = "scoreboard-litestream-replica-to-sftp.service"
    s = with_unit(long, unit(long, memory=123_456_789))
    console = Console(width=80, record=True)
    monkeypatch.setattr(ui, "console", console)
    ui.table(status.title(s), status.UNIT_COLUMNS, status.unit_rows(s), compact=True)
    text = console.export_text()
    for name in ("scoreboard-http.socket", "scoreboard-restore.service", long):
        assert name in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_the_first_column_of_any_table_is_never_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a framed table with wide columns keeps its first column whole; the others fold."""
    console = Console(width=60, record=True)
    monkeypatch.setattr(ui, "console", console)
    ui.table("t", ["unit", "a", "b"], [["scoreboard-http.socket", "x" * 40, "y" * 40]])
    assert "scoreboard-http.socket" in console.export_text()


# -- audit and lock -------------------------------------------------------------------------


def test_audit_rows_and_json() -> None:
    """A row per record, the fleet operation after the message; JSON names the host."""
    r = AuditRecord(
        "2026-11-27T03:12:47+00:00", "deploy", "a_2", "a_1", "rolled-back", "u", "o", "boom",
        operation="fleet deploy 3f2a",
    )  # fmt: skip
    assert audit_rows([r]) == [
        [
            "2026-11-27 03:12:47",
            "deploy",
            "a_2",
            "rolled-back",
            "u@o",
            "boom (fleet deploy 3f2a)",
        ]
    ]
    assert record_json("web1", r)["host"] == "web1"
    assert record_json("web1", r)["operation"] == "fleet deploy 3f2a"
    assert "secrets" not in record_json("web1", r)


def _holder(pid: int, age: float = 5, machine: str = "", boot: str = "") -> LockRecord:
    return LockRecord("t", "alice", "elsewhere", pid, time.time() - age, "a_2", "deploy",
                      machine or machine_id(), boot or boot_id())  # fmt: skip


def test_lock_status_says_why_a_lock_is_stale() -> None:
    """Gone process on this machine, or older than lock_ttl: each says so; a live one is not."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert why_stale(_holder(child.pid), 900) == (
        "the process that took it, on this machine, is gone"
    )
    assert why_stale(_holder(os.getpid(), age=1000, machine="f" * 32), 900) == (
        "it is older than [deploy] lock_ttl (900s)"
    )
    assert why_stale(_holder(os.getpid()), 900) is None


def test_audit_table_keeps_release_names_whole_at_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The audit table at 80 columns: times and release names whole; long messages fold."""
    r = AuditRecord("2026-11-27T03:12:47+00:00", "rollback", "scoreboard_e2e2", None, "failed",
                    "root", "ci-runner-7", "health check failed: " + "x" * 80)  # fmt: skip
    console = Console(width=80, record=True)
    monkeypatch.setattr(ui, "console", console)
    ui.table("t", AUDIT_COLUMNS, audit_rows([r]), compact=True, whole=("release",))
    text = console.export_text()
    assert "2026-11-27 03:12:47" in text and "scoreboard_e2e2" in text
    assert max(len(line) for line in text.splitlines()) <= 80
