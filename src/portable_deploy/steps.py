"""The remote steps of a deploy, in the order the README's step table gives them:
upload -> check -> install -> reattach -> verify (and ``describe``, which says what reattach will do).

Each step is a plain function of a ``Remote`` (``host.Host`` for real, a recording fake in flow
tests) and typed values; it runs ``Command`` builders and never takes the lock or reads state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from . import facts, image, tls, ui
from .command import Command
from .commands import files, portablectl, systemctl, trust
from .commands.layout import Layout
from .config import Config, TlsConfig, VerifyConfig
from .errors import DeployError
from .host import Remote, RemoteCommandError, RemoteTimeout, TransportError
from .manifest import Manifest
from .plan import Action, Plan, unit_infos
from .release import Signed, Where
from .units import Kind

#: Seconds a reattach with its restarts may take (a unit's own start timeout is usually 90 s).
REATTACH_TIMEOUT = 180


class SwitchFailed(DeployError):
    """The release did not come up after the switch: the pipeline rolls back."""

    #: How the release failed, for the one-line message ("scoreboard_2 failed verification: ...").
    what = "failed"


class VerifyFailed(SwitchFailed):
    """The new release did not pass verification."""

    what = "failed verification"


class ReattachFailed(SwitchFailed):
    """The reattach command or a restart in it failed (a unit that does not start)."""

    what = "failed to start"


class ConnectionLost(SwitchFailed):
    """The SSH connection failed after the switch began."""

    what = "lost its connection"


class Interrupted(SwitchFailed):
    """The user (Ctrl-C) or the system (SIGTERM) interrupted the deploy after the switch began."""

    what = "was interrupted"


class Refused(DeployError):
    """The release was refused before anything changed (damaged, unsigned, or not the signed
    image); its staged files are deleted. The pipeline audits it as refused."""


def upload(host: Remote, layout: Layout, signed: Signed, steps: ui.Steps) -> Where:
    """Send the image (unless the host has it already), manifest and signature to the staging dir.

    Returns where the release now is: ``STAGED``, or ``STAGED_MANIFEST`` when the host already
    had the same image in place.
    """
    m = signed.manifest
    on_host = facts.sha256sum(host.run(files.sha256(layout.image(m.release))).stdout)
    if on_host is not None and on_host != m.image_sha256:
        raise Refused(
            f"[{host.name}] already has a different {m.image_name} (sha256 {on_host[:12]}...)",
            hint='releases are immutable: change [app] version (or commit, with version = "git")',
        )
    host.run(files.mkdir(layout.incoming_dir, layout.releases_dir))
    target = layout.incoming_image(m.release)
    staged = f"{layout.incoming_dir}/{m.manifest_name}"
    try:
        host.put(signed.artifact.manifest_path, staged)
        host.put(signed.signature, staged + ".sig")
        if on_host is not None:
            steps.info(f"{m.image_name} already on {host.name} (same sha256): not sent again")
            return Where.STAGED_MANIFEST
        with ui.transfer(f"{m.image_name} -> {host.name}", m.image_size) as progress:
            host.put(signed.artifact.image, target, progress)
    except TransportError:
        # A full disk: delete what was staged now, so that the host has room again (for the
        # audit line, first of all). If the connection is gone, the next lock empties staging.
        with contextlib.suppress(DeployError):
            host.run(files.remove(staged, staged + ".sig", target))
        raise
    if host.dry_run:
        return Where.STAGED
    # Transfer integrity: what arrived is what was sent. Whether that matches the signed
    # manifest is the host's own check, next.
    local = image.file_sha256(signed.artifact.image)[0]
    sent = facts.sha256sum(host.run(files.sha256(target)).stdout)
    if sent != local:
        host.run(files.remove(staged, staged + ".sig", target))
        raise Refused(
            f"[{host.name}] upload of {m.image_name} arrived damaged (sha256 {sent})",
            hint="retry the deploy",
        )
    return Where.STAGED


def check_release(
    host: Remote, layout: Layout, manifest: Manifest, principal: str, where: Where
) -> None:
    """On the host, before anything changes: the signature against the host's own trust root,
    then the image's sha256 against the signed manifest. A refused upload is deleted from staging.
    """
    base = layout.releases_dir if where is Where.INSTALLED else layout.incoming_dir
    manifest_path = f"{base}/{manifest.manifest_name}"
    image_path = (
        layout.incoming_image(manifest.release)
        if where is Where.STAGED
        else layout.image(manifest.release)
    )
    checks = (
        trust.verify_signature(
            manifest_path, manifest_path + ".sig", principal, layout.allowed_signers
        ),
        trust.image_matches_manifest(image_path, manifest_path, manifest.release),
    )
    for index, check in enumerate(checks):
        # These read files that a dry run never uploaded: show them, do not run them.
        result = host.run(dataclasses.replace(check, mutates=host.dry_run), check=False)
        if result.ok:
            continue
        if where is not Where.INSTALLED:
            doomed = [manifest_path, manifest_path + ".sig"]
            host.run(files.remove(*doomed, *([image_path] if where is Where.STAGED else [])))
        if index == 0:
            reason = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise Refused(
                f"[{host.name}] refused {manifest.release}: signature check failed"
                + (f" ({reason[-1]})" if reason else ""),
                hint=f"sign with a key listed in the host's {layout.allowed_signers} "
                "(invoke host.setup installs it)",
            )
        if result.exit_code == trust.OTHER_RELEASE:
            raise Refused(
                f"[{host.name}] refused {manifest.release}: its signed manifest is another "
                "release's (staged under this name)",
                hint="rebuild and sign again: `invoke build sign`",
            )
        raise Refused(
            f"[{host.name}] refused {manifest.release}: image sha256 {result.stdout.strip()[:16]}... "
            "does not match the signed manifest",
            hint="rebuild and sign again: `invoke build sign`",
        )


def install(host: Remote, layout: Layout, manifest: Manifest, where: Where) -> None:
    """Move the checked release into place (a rename: the image is complete or absent)."""
    if where is Where.STAGED:
        host.run(
            files.move(layout.incoming_image(manifest.release), layout.image(manifest.release))
        )
    incoming = f"{layout.incoming_dir}/{manifest.manifest_name}"
    host.run(files.move(incoming + ".sig", layout.signature(manifest.release)))
    host.run(files.move(incoming, layout.manifest(manifest.release)))


def reattach(host: Remote, layout: Layout, plan: Plan) -> Command | None:
    """Switch the attached image, then stop, restart and start exactly the units the plan names."""
    image_path = layout.image(plan.release)
    if plan.action is Action.NONE:
        return None
    if plan.action is Action.ATTACH:
        command = portablectl.attach(image_path, plan.profile, now=True, enable=True)
    else:
        # One round trip: the swap and the restarts it needs, stopping at the first failure.
        command = portablectl.reattach(image_path, plan.profile, now=False, enable=True)
        for units, builder in (
            (plan.stop, systemctl.stop),
            (plan.restart, systemctl.restart),
            (plan.start, systemctl.start),
        ):
            if units:
                command = command.then(builder(units))
    try:
        host.run(command, timeout=REATTACH_TIMEOUT)
    except (RemoteCommandError, RemoteTimeout) as e:
        raise ReattachFailed(e.message) from None
    return command


def unit_states(host: Remote, units: Sequence[str]) -> dict[str, facts.UnitState]:
    return facts.unit_states(host.run(systemctl.show(units)).stdout)


def watched_units(manifest: Manifest) -> list[str]:
    """The units that must be active after a deploy: sockets and long-running services."""
    return sorted(
        name
        for name, unit in unit_infos(manifest).items()
        if unit.kind in (Kind.SOCKET, Kind.SERVICE)
    )


def verify(host: Remote, cfg: Config, manifest: Manifest, steps: ui.Steps) -> None:
    """Units active, the health check through the SSH connection (over HTTPS with the certificate
    checked, with [verify.tls]), then no restarts for a while."""
    v = cfg.verify
    if host.dry_run:
        steps.info(
            f"would check {', '.join(watched_units(manifest))} and GET {_url(v, v.path)}"
            + (f" ({_tls_plan(v.tls)})" if v.tls else "")
        )
        return
    units = watched_units(manifest)
    deadline = time.monotonic() + v.timeout
    states = _wait_active(host, units, deadline)
    health = _wait_http(host, cfg, manifest, deadline)
    if v.settle > 0:
        time.sleep(v.settle)
        after = facts.unit_states(host.run(systemctl.show(units)).stdout)
        for name in units:
            before, now = states[name], after.get(name)
            if now is None or not now.active or now.n_restarts != before.n_restarts:
                raise VerifyFailed(
                    f"{name} restarted or stopped within {v.settle:g}s after the health check "
                    f"(restarts {before.n_restarts} -> {now.n_restarts if now else '?'})"
                )
            if before.main_pid and now.main_pid != before.main_pid:
                raise VerifyFailed(
                    f"{name} changed its main PID within {v.settle:g}s (restart loop?)"
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


def _wait_active(host: Remote, units: Sequence[str], deadline: float) -> dict[str, facts.UnitState]:
    while True:
        states = facts.unit_states(host.run(systemctl.show(units)).stdout)
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


def _wait_http(host: Remote, cfg: Config, manifest: Manifest, deadline: float) -> _Got:
    """GET the health path (and the version path) on the host until they answer as expected.

    Every failure is retried until the deadline, a refused certificate too: an app that gets its
    first certificate from an ACME CA fails handshakes for a few seconds. The last one is reported.
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


def describe(plan: Plan, steps: ui.Steps) -> None:
    if plan.action is Action.NONE:
        steps.info(f"{plan.release} is already live: nothing to reattach")
    elif plan.action is Action.ATTACH:
        steps.info(f"first deploy: attach {plan.release} and start its units")
    else:
        if plan.profile_changed:
            steps.info(
                f"the portable profile changes to {plan.profile}: every service restarts once "
                "(sockets stay open and queue connections)"
            )
        for verb, units in (("stop", plan.stop), ("restart", plan.restart), ("start", plan.start)):
            for unit in units:
                steps.info(f"{verb} {unit}: {plan.reasons.get(unit, '')}")
        if not (plan.stop or plan.restart or plan.start):
            steps.info("no unit needs a restart")
