"""`invoke status` on one host: what it reads (one round trip, and one GET of the health path),
whether the host is healthy, and how that is shown (a table's rows, one JSON object).

The judgement (``problems``) and the views are pure functions of a ``HostStatus``: exit code 1
comes from ``problems``, never from how a view looks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import facts, tls, ui
from .commands import status as status_commands
from .commands.layout import Layout
from .commands.state import SECTION
from .config import Config
from .facts import AuditRecord, DiskUse, LockRecord, UnitState
from .host import Remote
from .plan import overlap_twins
from .preflight import HostState, state_command, state_from
from .units import listen_port
from .verify import probe, watched_units

#: The audit events that switch the live release (an upload switches nothing).
SWITCH_EVENTS = ("deploy", "rollback", "reattach")


@dataclass(frozen=True)
class UnitStatus:
    name: str
    #: It must be active while its release is live: a socket or a long-running service (a
    #: oneshot such as a restore unit is inactive once it ran).
    must_run: bool
    #: None: systemd did not report it (its unit file is not attached).
    state: UnitState | None
    #: An overlap twin: it runs only during a switch, and a start of it that failed was a
    #: release's that was rolled back (not a problem of the live one).
    twin: bool = False

    @property
    def ports(self) -> list[int]:
        """The TCP/UDP ports of a socket's addresses ("[::]:80 (Stream)" -> 80)."""
        addresses = self.state.listen if self.state else ()
        ports = (listen_port(address.split(" (", 1)[0]) for address in addresses)
        return [port for port in ports if port is not None]


@dataclass(frozen=True)
class TlsStatus:
    """What the HTTPS health check found out about the certificate ([verify.tls])."""

    name: str
    port: int
    warn_days: int
    #: Why TLS refused the connection (None: it did not).
    problem: str | None
    certificate: tls.Certificate | None


@dataclass(frozen=True)
class HostStatus:
    host: str
    app: str
    live: str | None
    rollback_target: str | None
    units: tuple[UnitStatus, ...]
    #: The host's clock (seconds since the epoch) when it was read; None if it did not say.
    now: int | None
    #: The health check: path, the status it answered (0: no answer), the status expected.
    #: None when no release is live (nothing to ask).
    health: tuple[str, int, int] | None
    tls: TlsStatus | None
    last_deploy: AuditRecord | None
    disk: DiskUse
    lock: LockRecord | None


# -- reading ---------------------------------------------------------------------------------


def read_status(host: Remote, cfg: Config) -> HostStatus:
    """The host's state and its units, images, disk and lock in one round trip; then, when a
    release is live, one GET of the health path as verify makes it (over HTTPS with the
    certificate checked, with [verify.tls])."""
    layout = Layout(cfg.app.name)
    command = state_command(layout, cfg.deploy.profile).then(status_commands.report(layout))
    sections = facts.state_sections(host.run(command).stdout, SECTION)
    state = state_from(host, layout, sections)
    health: tuple[str, int, int] | None = None
    tls_status = None
    if state.live is not None:
        code, problem, cert = probe(host, cfg.verify)
        health = (cfg.verify.path, code, cfg.verify.status)
        t = cfg.verify.tls
        if t is not None:
            tls_status = TlsStatus(t.name, t.port, t.warn_days, problem, cert)
    return from_sections(host.name, cfg.app.name, state, sections, health, tls_status)


def from_sections(
    host: str,
    app: str,
    state: HostState,
    sections: Mapping[str, str],
    health: tuple[str, int, int] | None = None,
    tls_status: TlsStatus | None = None,
) -> HostStatus:
    """The HostStatus in the output of ``commands.status.report`` (after ``state.host_state``)."""
    states = facts.unit_states(sections.get("units", ""))
    if state.live_manifest is not None:
        names = sorted(state.live_manifest.unit_info)
        must_run = set(watched_units(state.live_manifest))
        twins = set(overlap_twins(state.live_manifest))
    else:  # units attached with no readable manifest: show what systemd has
        names, must_run, twins = sorted(states), set(), set()
    now = sections.get("now", "").strip()
    return HostStatus(
        host=host,
        app=app,
        live=state.live,
        rollback_target=state.previous,
        units=tuple(UnitStatus(n, n in must_run, states.get(n), n in twins) for n in names),
        now=int(now) if now.isdigit() else None,
        health=health,
        tls=tls_status,
        last_deploy=last_deploy(state.audit),
        disk=facts.disk_use(
            sections.get("images", ""), sections.get("releases-dir", ""), sections.get("disk", "")
        ),
        lock=facts.lock_record(sections.get("lock", "")),
    )


def last_deploy(audit: Sequence[AuditRecord]) -> AuditRecord | None:
    """The newest audit record of a deploy, rollback or reattach (whatever its result)."""
    return next((r for r in reversed(audit) if r.event in SWITCH_EVENTS), None)


# -- the judgement ---------------------------------------------------------------------------


def problems(s: HostStatus, now: datetime) -> list[str]:
    """Why the host is unhealthy (empty: healthy): no live release, a unit failed, not loaded,
    restarting, or inactive when it must run, the health check not answering as expected, or
    the certificate refused or expiring within [verify.tls] warn_days (at NOW)."""
    if s.live is None:
        return [f"no release of {s.app} is attached"]
    found = []
    for u in s.units:
        st = u.state
        if st is None or st.load_state not in ("loaded", ""):
            found.append(
                f"{u.name} is not loaded ({st.load_state if st else 'unknown to systemd'})"
            )
        elif u.twin:
            continue
        elif st.active_state == "failed":
            found.append(f"{u.name} failed ({st.result or st.sub_state})")
        elif st.sub_state == "auto-restart":
            found.append(f"{u.name} exited and waits to be restarted ({st.result})")
        elif u.must_run and not st.active:
            found.append(f"{u.name} is {st.active_state}/{st.sub_state}, should be active")
    t = s.tls
    if t is not None and t.problem is not None:
        found.append(t.problem)
    elif s.health is not None and s.health[1] != s.health[2]:
        path, got, expected = s.health
        found.append(f"health check GET {path} -> {got or 'no answer'}, expected {expected}")
    if t is not None and t.certificate is not None:
        days = t.certificate.days_left(now)
        if days < t.warn_days:
            found.append(
                f"certificate for {t.name} expires in {days} days, on "
                f"{t.certificate.not_after:%Y-%m-%d} (warn_days = {t.warn_days}): renew it"
            )
    return found


def warnings(s: HostStatus) -> list[str]:
    """What is worth a look but not unhealthy: units systemd restarted by themselves."""
    return [
        f"{u.name} was restarted {u.state.n_restarts} times by systemd (Restart=) since it was "
        "started: it crashed"
        for u in s.units
        if u.state is not None and u.state.n_restarts > 0
    ]


# -- the views -------------------------------------------------------------------------------

#: Five columns, so that unit names stay whole on an 80-column terminal; the sockets'
#: addresses get a line of their own under the table.
UNIT_COLUMNS = ("unit", "state", "since", "restarts", "memory")


def unit_rows(s: HostStatus) -> list[list[str]]:
    rows = []
    for u in s.units:
        st = u.state
        if st is None:
            rows.append([u.name, "?", "", "", ""])
            continue
        started = facts.unix_time(st.active_enter)
        rows.append(
            [
                u.name,
                f"{st.active_state}/{st.sub_state}",
                age(s.now - started) if started and s.now and st.active else "",
                str(st.n_restarts),
                # A socket's cgroup holds no process: its few KB say nothing.
                ui.size(st.memory) if st.memory is not None and not st.listen else "",
            ]
        )
    return rows


def unit_listen(u: UnitStatus) -> list[str]:
    """A socket's addresses as systemd shows them, without the type: "[::]:80"."""
    return [a.split(" (", 1)[0] for a in u.state.listen] if u.state else []


def title(s: HostStatus) -> str:
    """The table's title (the fleet tests read it): "HOST: RELEASE live, rollback target R"."""
    return f"{s.host}: {s.live} live" + (
        f", rollback target {s.rollback_target}" if s.rollback_target else ""
    )


def summary(s: HostStatus, now: datetime) -> list[str]:
    """The lines under the table: sockets, health, certificate, last deploy, disk, lock."""
    lines = [f"{u.name} listens on {', '.join(unit_listen(u))}" for u in s.units if unit_listen(u)]
    if s.health is not None:
        path, got, _ = s.health
        scheme = f"https://{s.tls.name}:{s.tls.port}" if s.tls else ""
        lines.append(f"health: GET {scheme}{path} -> {got or 'no answer'}")
    if s.tls is not None and s.tls.certificate is not None:
        cert = s.tls.certificate
        lines.append(
            f"certificate: {s.tls.name}, valid until {cert.not_after:%Y-%m-%d} "
            f"({cert.days_left(now)} days left)"
        )
    d = s.last_deploy
    at = d.at.replace("T", " ").replace("+00:00", " UTC") if d else ""
    lines.append(
        f"last deploy: {d.event} of {d.release} {d.result}, {at}, by {d.user}@{d.origin}"
        if d
        else "last deploy: none in the audit log"
    )
    free = f", {ui.size(s.disk.free)} free" if s.disk.free is not None else ""
    lines.append(f"releases: {s.disk.images} kept, {ui.size(s.disk.bytes)} on disk{free}")
    if s.lock is not None:
        lines.append(f"deploy lock: held by {holder(s.lock)}")
    return lines


def holder(lock: LockRecord) -> str:
    """Who holds a deploy lock, since when and for what, in one phrase."""
    since = datetime.fromtimestamp(lock.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"{lock.user}@{lock.origin} (pid {lock.pid}) since {since}, running `{lock.command}` "
        f"for {lock.release}"
    )


def age(seconds: int) -> str:
    """A duration for people, two units at most: 45s, 12m, 3h12m, 2d3h."""
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"


def to_json(s: HostStatus, now: datetime) -> dict[str, Any]:
    """One host as `invoke status --json` prints it (times in UTC, sizes in bytes)."""
    found = problems(s, now)
    return {
        "host": s.host,
        "reachable": True,
        "healthy": not found,
        "problems": found,
        "warnings": warnings(s),
        "app": s.app,
        "live": s.live,
        "rollback_target": s.rollback_target,
        "units": [_unit_json(u) for u in s.units],
        "health": (
            {"path": s.health[0], "status": s.health[1], "expected": s.health[2]}
            if s.health
            else None
        ),
        "tls": _tls_json(s.tls, now) if s.tls else None,
        "last_deploy": s.last_deploy.shown() if s.last_deploy else None,
        "releases": {"images": s.disk.images, "bytes": s.disk.bytes, "disk_free": s.disk.free},
        "lock": _lock_json(s.lock) if s.lock else None,
    }


def failed_json(host: str, message: str, reachable: bool) -> dict[str, Any]:
    """A host whose status could not be read (unreachable, not set up): unhealthy, with why."""
    return {"host": host, "reachable": reachable, "healthy": False, "problems": [message]}


def _unit_json(u: UnitStatus) -> dict[str, Any]:
    st = u.state
    if st is None:
        return {"name": u.name, "must_run": u.must_run, "load_state": None}
    started = facts.unix_time(st.active_enter)
    return {
        "name": u.name,
        "must_run": u.must_run,
        "load_state": st.load_state,
        "active_state": st.active_state,
        "sub_state": st.sub_state,
        "result": st.result,
        "since": _iso(started) if started else None,
        "restarts": st.n_restarts,
        "main_pid": st.main_pid or None,
        "memory": st.memory,
        "listen": unit_listen(u),
        "ports": u.ports,
        "overlap_twin": u.twin,
    }


def _tls_json(t: TlsStatus, now: datetime) -> dict[str, Any]:
    cert = t.certificate
    return {
        "name": t.name,
        "port": t.port,
        "problem": t.problem,
        "names": list(cert.names) if cert else None,
        "not_after": cert.not_after.isoformat() if cert else None,
        "days_left": cert.days_left(now) if cert else None,
    }


def _lock_json(lock: LockRecord) -> dict[str, Any]:
    return {
        "user": lock.user,
        "origin": lock.origin,
        "pid": lock.pid,
        "since": _iso(int(lock.at)),
        "command": lock.command,
        "release": lock.release,
    }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
