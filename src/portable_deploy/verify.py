"""The verify step: units active, the health (and version) check through the SSH connection,
over HTTPS with the certificate checked when [verify.tls] is set, then no restarts for a while.

A failure raises ``steps.VerifyFailed`` with one line; the pipeline rolls back on it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from . import facts, failpoints, tls, ui
from .command import Command
from .commands import systemctl
from .config import Config, TlsConfig, VerifyConfig
from .host import Remote
from .manifest import Manifest
from .plan import unit_infos
from .steps import VerifyFailed
from .units import Kind


def now() -> float:
    """The clock verify's settle window is measured on (give its ``since`` from here)."""
    return time.monotonic()


def unit_states(host: Remote, units: Sequence[str]) -> dict[str, facts.UnitState]:
    return facts.unit_states(host.run(systemctl.show(units)).stdout)


def watched_units(manifest: Manifest) -> list[str]:
    """The units that must be active after a deploy: sockets and long-running services."""
    return sorted(
        name
        for name, unit in unit_infos(manifest).items()
        if unit.kind in (Kind.SOCKET, Kind.SERVICE)
    )


class _Pulse:
    """The deployer's sign of life for an armed dead-man switch (``alive``), riding on the
    verify step's own ``systemctl show`` calls and sent alone at most every few seconds while
    only HTTP checks run. Without a switch it adds nothing."""

    EVERY = 5.0

    def __init__(self, host: Remote, alive: Command | None) -> None:
        self.host, self.alive, self.last = host, alive, time.monotonic()

    def show(self, units: Sequence[str]) -> dict[str, facts.UnitState]:
        command = systemctl.show(units)
        if self.alive is not None:
            command, self.last = self.alive.then(command), time.monotonic()
        return facts.unit_states(self.host.run(command).stdout)

    def wait(self, seconds: float) -> None:
        """Sleep SECONDS, still beating (a settle longer than the confirm timeout must not look
        like a dead deployer)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.EVERY) if self.alive is not None else left)
            self.beat()

    def beat(self) -> None:
        if self.alive is not None and time.monotonic() - self.last >= self.EVERY:
            self.host.run(self.alive)
            self.last = time.monotonic()


#: Seconds the units are still watched after the health check passed, at least (or the whole
#: settle window, if shorter), when the window counts from the switch.
AFTER_HEALTHY = 1.5


def verify(
    host: Remote,
    cfg: Config,
    manifest: Manifest,
    steps: ui.Steps,
    alive: Command | None = None,
    since: float | None = None,
) -> None:
    """Units active, the health check through the SSH connection (over HTTPS with the certificate
    checked, with [verify.tls]), then no restarts for a while. ALIVE (the dead-man switch's
    heartbeat) is sent along while it runs.

    The settle window is [verify] settle seconds from SINCE (``time.monotonic()`` when the
    switch's restarts ended), so the health checks run inside it rather than before it; the
    units are read once more at its end, and at least once after the health check passed.
    Without SINCE (a verify of its own) the window starts when the health check passes."""
    v = cfg.verify
    if host.dry_run:
        steps.info(
            f"would check {', '.join(watched_units(manifest))} and GET {_url(v, v.path)}"
            + (f" ({_tls_plan(v.tls)})" if v.tls else "")
        )
        return
    units = watched_units(manifest)
    deadline = time.monotonic() + v.timeout
    pulse = _Pulse(host, alive)
    states = _wait_active(pulse, units, deadline)
    health = _wait_http(host, cfg, manifest, deadline, pulse, states)
    healthy = time.monotonic()
    failpoints.reach("verifying")
    if v.settle > 0:
        start = since if since is not None else healthy
        window = "of the switch" if since is not None else "after the health check"
        # However late the health check passed (a slow start, a loaded host), the units stay
        # watched a while after it: a release that crashes soon after its first answer fails.
        end = max(start + v.settle, healthy + min(v.settle, AFTER_HEALTHY))
        pulse.wait(max(0.0, end - time.monotonic()))
        after = pulse.show(units)
        for name in units:
            before, now = states[name], after.get(name)
            if now is None or not now.active or now.n_restarts != before.n_restarts:
                raise VerifyFailed(
                    f"{name} restarted or stopped within {v.settle:g}s {window} "
                    f"(restarts {before.n_restarts} -> {now.n_restarts if now else '?'})"
                )
            if before.main_pid and now.main_pid != before.main_pid:
                raise VerifyFailed(
                    f"{name} changed its main PID within {v.settle:g}s {window} (restart loop?)"
                )
    passed = f"{', '.join(units)} active; GET {_url(v, v.path)} -> {health.status}"
    cert = health.certificate
    if v.tls is None or cert is None:
        steps.info(passed)
        return
    days = cert.days_left(datetime.now(UTC))
    steps.info(f"{passed}; certificate valid {_days(days)}")
    if days < v.tls.warn_days:
        steps.warn(
            f"certificate for {v.tls.name} on 127.0.0.1:{v.tls.port} expires in {_days(days)}, "
            f"on {cert.not_after:%Y-%m-%d} ([verify.tls] warn_days = {v.tls.warn_days}): renew it"
        )


def _days(days: int) -> str:
    return f"{days} day" if days == 1 else f"{days} days"


def _url(v: VerifyConfig, path: str) -> str:
    """How a check is named in messages: the path for plain HTTP, the URL for HTTPS."""
    if v.tls is None:
        return path
    port = "" if v.tls.port == 443 else f":{v.tls.port}"
    return f"https://{v.tls.name}{port}{path}"


def _tls_plan(t: TlsConfig) -> str:
    trusted = f"the CAs in {t.ca_file}" if t.ca_file else "the system's CAs"
    return (
        f"through 127.0.0.1:{t.port}; certificate valid for {t.name}, trusted by {trusted}, "
        f"a warning under {_days(t.warn_days)} left"
    )


def _wait_active(
    pulse: _Pulse, units: Sequence[str], deadline: float
) -> dict[str, facts.UnitState]:
    while True:
        states = pulse.show(units)
        crash = _crashed({}, states)
        if crash:
            raise VerifyFailed(crash)
        inactive = [u for u in units if u not in states or not states[u].active]
        if not inactive:
            return states
        if time.monotonic() > deadline:
            detail = ", ".join(
                f"{u}: {states[u].active_state}/{states[u].sub_state}" if u in states else f"{u}: ?"
                for u in inactive
            )
            raise VerifyFailed(f"units not active in time: {detail}")
        time.sleep(0.5)


def version_matches(body: str, version: str) -> bool:
    """The version page names exactly VERSION: as its whole text, or as the "version" field of a
    JSON object (never a substring: "2.10" is not "2.1")."""
    text = body.strip()
    if text == version:
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("version") == version


@dataclasses.dataclass(frozen=True)
class _Got:
    """One GET of the checks: status and body, or why TLS refused the connection."""

    status: int
    body: str
    #: One line saying what is wrong with the certificate or the handshake (HTTPS only).
    tls_problem: str | None = None
    #: The verified certificate (HTTPS only).
    certificate: tls.Certificate | None = None


def _get(host: Remote, v: VerifyConfig, path: str) -> _Got:
    if v.tls is None:
        return _Got(*host.http_get(v.port, path))
    t = v.tls
    answer = host.https_get(t.port, path, t.name, t.ca_file)
    if answer.failure is not None:
        return _Got(0, "", tls_problem(t, answer, datetime.now(UTC)))
    return _Got(
        answer.status, answer.body if answer.status else answer.detail, None, answer.certificate
    )


def probe(host: Remote, v: VerifyConfig) -> tuple[int, str | None, tls.Certificate | None]:
    """One GET of the health path as verify makes it (`invoke status`): the HTTP status (0:
    no answer), why TLS refused the connection (None: it did not), the verified certificate."""
    got = _get(host, v, v.path)
    return got.status, got.tls_problem, got.certificate


def _crashed(
    before: Mapping[str, facts.UnitState], now: Mapping[str, facts.UnitState]
) -> str | None:
    """Why a unit in NOW has crashed since BEFORE (it failed, waits to be restarted, or was
    restarted), else None: no point waiting for the timeout, the release does not stay up."""
    for name, state in sorted(now.items()):
        if state.active_state == "failed" or state.sub_state == "auto-restart":
            return f"{name} exited ({state.active_state}/{state.sub_state}, {state.result})"
        if name in before and state.n_restarts > before[name].n_restarts:
            return (
                f"{name} exited and was restarted (restarts {before[name].n_restarts} -> "
                f"{state.n_restarts})"
            )
    return None


def _wait_http(
    host: Remote,
    cfg: Config,
    manifest: Manifest,
    deadline: float,
    pulse: _Pulse,
    states: Mapping[str, facts.UnitState],
) -> _Got:
    """GET the health path (and the version path) on the host until they answer as expected.

    Every failure is retried until the deadline, a refused certificate too: an app that gets its
    first certificate from an ACME CA fails handshakes for a few seconds. The last one is
    reported; but a unit that crashes meanwhile (compared with STATES) fails at once.
    """
    v = cfg.verify
    last = "health check failed: no answer"
    while True:
        health = _get(host, v, v.path)
        if health.tls_problem:
            last = health.tls_problem
        elif health.status != v.status:
            last = (
                f"health check failed: GET {_url(v, v.path)} -> {health.status or 'no answer'} "
                f"{health.body.strip()[:80]!r}, expected {v.status}"
            )
        elif not v.version_path:
            return health
        else:
            version = _get(host, v, v.version_path)
            if version.tls_problem:
                last = version.tls_problem
            elif version.status == 200 and version_matches(version.body, manifest.version):
                return health
            else:
                last = (
                    f"health check failed: GET {_url(v, v.version_path)} -> {version.status} "
                    f"{version.body.strip()[:80]!r}, expected {manifest.version!r}"
                )
        if time.monotonic() > deadline:
            raise VerifyFailed(last)
        crash = _crashed(states, pulse.show(list(states)))
        if crash:
            raise VerifyFailed(f"{crash}; {last}")
        time.sleep(0.5)


def tls_problem(t: TlsConfig, answer: tls.Answer, now: datetime) -> str:
    """One line for a refused HTTPS connection: host:port, the name, and what was wrong."""
    cert, where, detail = answer.certificate, f"127.0.0.1:{t.port}", answer.detail
    of = f"certificate for {t.name} on {where}"
    if answer.failure is tls.Failure.EXPIRED and cert is not None and cert.not_after <= now:
        return f"{of} expired on {cert.not_after:%Y-%m-%d}"
    if answer.failure is tls.Failure.NOT_YET_VALID and cert is not None:
        return (
            f"{of} is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC "
            "(is this machine's clock right?)"
        )
    if answer.failure is tls.Failure.WRONG_NAME:
        names = ", ".join(cert.names) if cert is not None and cert.names else "?"
        return f"certificate on {where} is not valid for {t.name} (it is for: {names})"
    if answer.failure is tls.Failure.UNTRUSTED:
        if t.ca_file is None:
            return f"{of} is not trusted (unknown CA: {detail}; set [verify.tls] ca_file for a test CA)"
        return f"{of} is not trusted (not issued by the CA in ca_file {t.ca_file}: {detail})"
    if answer.failure is tls.Failure.HANDSHAKE:
        return f"TLS handshake for {t.name} with {where} failed: {detail}"
    return f"{of} failed verification: {detail}"  # invalid, or an expired CA in the chain
