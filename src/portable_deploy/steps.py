"""The remote steps of a deploy, in the order the README's step table gives them:
upload -> check -> install -> reattach (and ``describe``, which says what reattach will do); the
verify step has its own module, ``verify``.

Each step is a plain function of a ``Remote`` (``host.Host`` for real, a recording fake in flow
tests) and typed values; it runs ``Command`` builders and never takes the lock or reads state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from secrets import token_hex
from typing import NoReturn

from . import facts, failpoints, transfer, ui
from .chunks import Index
from .command import Command, Secret
from .commands import creds, files, portablectl, systemctl, trust
from .commands import delta as deltacmd
from .commands.layout import Layout
from .credentials import Entry, SecretSet, env_file, env_line
from .errors import DeployError, Refused
from .host import Remote, RemoteCommandError, RemoteTimeout, Result, TransportError
from .manifest import Manifest
from .plan import Action, Plan
from .preflight import HostState
from .release import Signed, Where
from .secrets import SecretValue
from .secrets import digest as secret_digest

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


def upload(
    host: Remote,
    layout: Layout,
    signed: Signed,
    principal: str,
    steps: ui.Steps,
    delta: bool = True,
    prefer: Sequence[str] = (),
) -> Where:
    """Send the image (unless the host has it already), its index, manifest and signature to the
    staging dir, by delta against the releases the host keeps (PREFER first) or whole; then
    the host-side check (``check_release``), in the same command as the delta's assembly.

    Returns where the checked release now is: ``STAGED``, or ``STAGED_MANIFEST`` when the host
    already had the same image in place. A refusal deletes what was staged.
    """
    m = signed.manifest
    inventory = facts.inventory(
        host.run(
            deltacmd.inventory(layout.image(m.release), layout.releases_dir, layout.partial_dir)
        ).stdout
    )
    if inventory.image is not None and inventory.image != m.image_sha256:
        raise Refused(
            f"[{host.name}] already has a different {m.image_name} "
            f"(sha256 {inventory.image[:12]}...)",
            hint='releases are immutable: change [app] version (or commit, with version = "git")',
        )
    where = Where.STAGED if inventory.image is None else Where.STAGED_MANIFEST
    check = _check_command(layout, m.release, principal, where)
    staged = f"{layout.incoming_dir}/{m.manifest_name}"
    planned = None
    if where is Where.STAGED and delta:
        planned = transfer.plan_delta(host, layout, signed, inventory, prefer)
        host.run(transfer.prepare(layout, planned))
    else:
        host.run(files.mkdir(layout.incoming_dir, layout.releases_dir))
    try:
        host.put(signed.artifact.manifest_path, staged)
        host.put(signed.signature, staged + ".sig")
        if where is Where.STAGED_MANIFEST:
            steps.info(f"{m.image_name} already on {host.name} (same sha256): not sent again")
        elif planned is not None:
            result = transfer.send_delta(host, layout, signed, planned, steps, check)
        else:
            transfer.send_whole(host, layout, signed, Index.of_file(signed.artifact.image), steps)
    except TransportError as lost:
        # A full disk: delete what was staged now, so that the host has room again (for the
        # audit line, first of all), the delta stream too. If the connection is gone, the next
        # lock empties staging; the delta stream stays for the next upload to resume.
        doomed = doomed_staging(layout, m)
        with contextlib.suppress(DeployError):
            host.run(
                files.remove(*doomed)
                if not lost.disk_full
                else files.remove(*doomed).then(deltacmd.forget(layout.partial_dir))
            )
        raise
    if planned is None:
        failpoints.reach("uploaded")
        # It reads files that a dry run never uploaded: show it, do not run it.
        result = host.run(dataclasses.replace(check, mutates=host.dry_run), check=False)
    if not result.ok:
        _refuse(host, layout, m, where, result)
    return where


def doomed_staging(layout: Layout, m: Manifest) -> list[str]:
    """What an upload of M puts in staging: manifest, signature, image, index."""
    staged = f"{layout.incoming_dir}/{m.manifest_name}"
    return [
        staged,
        staged + ".sig",
        layout.incoming_image(m.release),
        layout.incoming_index(m.release),
    ]


def check_release(
    host: Remote, layout: Layout, manifest: Manifest, principal: str, where: Where
) -> None:
    """On the host, before anything changes, in one round trip: the signature against the
    host's own trust root, then the image's sha256 against the signed manifest. A refused upload
    is deleted from staging."""
    check = _check_command(layout, manifest.release, principal, where)
    # It reads files that a dry run never uploaded: show it, do not run it.
    result = host.run(dataclasses.replace(check, mutates=host.dry_run), check=False)
    if not result.ok:
        _refuse(host, layout, manifest, where, result)


def read_checked(host: Remote, layout: Layout, release: str, principal: str) -> Manifest | None:
    """An installed RELEASE's manifest, read and checked (as ``check_release``) in one round
    trip; None if the host does not have it."""
    check = _check_command(layout, release, principal, Where.INSTALLED, show=True)
    result = host.run(check, check=False)
    if result.exit_code == trust.NO_MANIFEST:
        return None
    text, _, checked = result.stdout.partition(trust.CHECKED)
    if not checked and not result.ok:
        raise RemoteCommandError(host.name, check, result)
    manifest = Manifest.from_json(text, f"{host.name}:{layout.manifest(release)}")
    if not result.ok:
        _refuse(
            host, layout, manifest, Where.INSTALLED, dataclasses.replace(result, stdout=checked)
        )
    return manifest


def _check_command(
    layout: Layout, release: str, principal: str, where: Where, show: bool = False
) -> Command:
    base = layout.releases_dir if where is Where.INSTALLED else layout.incoming_dir
    manifest_path = f"{base}/{release}.manifest.json"
    image_path = layout.incoming_image(release) if where is Where.STAGED else layout.image(release)
    return trust.check_release(
        manifest_path,
        manifest_path + ".sig",
        principal,
        layout.allowed_signers,
        image_path,
        release,
        show=show,
    )


def _refuse(
    host: Remote, layout: Layout, manifest: Manifest, where: Where, result: Result
) -> NoReturn:
    """Delete what was staged for MANIFEST and raise the one-line refusal RESULT means."""
    if where is Where.STAGED:
        host.run(files.remove(*doomed_staging(layout, manifest)))
    elif where is Where.STAGED_MANIFEST:
        staged = f"{layout.incoming_dir}/{manifest.manifest_name}"
        host.run(files.remove(staged, staged + ".sig"))
    if result.exit_code == trust.BAD_SIGNATURE:
        reason = result.stderr.strip().splitlines()
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
    got = (result.stdout.strip().splitlines() or [""])[-1]
    if where is Where.STAGED:
        # This machine checked its image against the manifest before sending it.
        raise Refused(
            f"[{host.name}] upload of {manifest.image_name} arrived damaged (sha256 {got})",
            hint="retry the deploy",
        )
    raise Refused(
        f"[{host.name}] refused {manifest.release}: image sha256 {got[:16]}... "
        "does not match the signed manifest",
        hint="rebuild and sign again: `invoke build sign`",
    )


def install(host: Remote, layout: Layout, manifest: Manifest, where: Where) -> None:
    """Move the checked release into place, in one command: the signed manifest first and the
    image last (renames, so each is complete or absent; synced, so a power cut keeps them so)."""
    incoming = f"{layout.incoming_dir}/{manifest.manifest_name}"
    moves = [
        (incoming + ".sig", layout.signature(manifest.release)),
        (incoming, layout.manifest(manifest.release)),
    ]
    if where is Where.STAGED:
        moves.append((layout.incoming_index(manifest.release), layout.index(manifest.release)))
        moves.append((layout.incoming_image(manifest.release), layout.image(manifest.release)))
    host.run(files.install(moves))


def reattach_command(
    layout: Layout, plan: Plan, pause: Command | None = None, overlapping: Command | None = None
) -> Command | None:
    """The swap and the restarts it needs, as one command that stops at the first failure: the
    units gone from the release stopped, the swap, the restarts and starts (PAUSE, a failpoint,
    runs between the swap and the restarts; OVERLAPPING, another, while an overlapped app and
    its twin both serve). An overlapped app restarts last, beside its twin."""
    image_path = layout.image(plan.release)
    if plan.action is Action.NONE:
        return None
    if plan.action is Action.ATTACH:
        command = portablectl.attach(image_path, plan.profile, now=True, enable=True)
        # attach --now starts every unit it attached, overlap twins too: they run only in a switch.
        return command.then(systemctl.stop(plan.twins)) if plan.twins else command
    command = portablectl.reattach(image_path, plan.profile, now=False, enable=True)
    if plan.stop:
        # Before the swap, while their unit files are attached: after it, an inactive unit the
        # release no longer has (an overlap twin) is unknown to systemd and cannot be stopped.
        command = systemctl.stop(plan.stop).then(command)
    if pause is not None:
        command = command.then(pause)
    for units, builder in (
        (plan.restarted_alone(), systemctl.restart),
        (plan.start, systemctl.start),
    ):
        if units:
            command = command.then(builder(units))
    for i, (app, twin) in enumerate(plan.overlap):
        pause_here = overlapping if i == 0 else None  # the failpoint stops once
        command = command.then(systemctl.restart_overlapped(app, twin, pause_here))
    return command


def reattach(
    host: Remote, layout: Layout, plan: Plan, before: Command | None = None
) -> Command | None:
    """Switch the attached image, then stop, restart and start exactly the units the plan names
    (BEFORE, such as arming the dead-man switch, runs first in the same round trip)."""
    command = reattach_command(
        layout,
        plan,
        failpoints.host_pause("reattached"),
        failpoints.host_pause("overlapping") if plan.overlap else None,
    )
    if command is None:
        return None
    if before is not None:
        command = before.then(command)
    try:
        host.run(command, timeout=REATTACH_TIMEOUT)
    except (RemoteCommandError, RemoteTimeout) as e:
        raise ReattachFailed(e.message) from None
    return command


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
        for verb, units in (
            ("stop", plan.stop),
            ("restart", plan.restarted_alone()),
            ("start", plan.start),
        ):
            for unit in units:
                steps.info(f"{verb} {unit}: {plan.reasons.get(unit, '')}")
        for app, twin in plan.overlap:
            steps.info(
                f"overlap {app}: {plan.reasons.get(app, '')}: start {twin} from {plan.release} "
                f"beside the old process (ready before it takes connections), restart {app} "
                f"while {twin} serves, then stop {twin} (it drains)"
            )
        if not (plan.stop or plan.restart or plan.start):
            steps.info("no unit needs a restart")


def deliver_secrets(
    host: Remote, layout: Layout, values: Sequence[SecretValue], state: HostState
) -> SecretSet:
    """Encrypt each secret on the host with its own key (``systemd-creds``) into the set's
    directory; an environment secret goes to a root-only file per unit. Digests are keyed with
    the host's salt (made on the first delivery). A set the host already has (the same values
    for the same units) is not sent again. Values travel on stdin only."""
    salt = state.secrets_salt
    if salt is None:
        salt = token_hex(32)
        if values:
            host.run(
                files.mkdir(layout.secrets_dir, mode="0700").then(
                    creds.new_salt(layout.secrets_salt, salt)
                )
            )
    keyed = [
        dataclasses.replace(v, digest=secret_digest(v.name, v.value.value, salt.encode()))
        for v in values
    ]
    secrets = SecretSet(
        tuple(
            sorted(
                (Entry(v.name, v.digest, v.units, v.environment) for v in keyed),
                key=lambda e: e.name,
            )
        )
    )
    if not keyed or secrets.id in state.secret_sets:
        return secrets
    incoming = layout.incoming_secret_set(secrets.id)
    host.run(files.mkdir(layout.secrets_dir, mode="0700").then(creds.remove_sets(incoming)))
    env: dict[str, list[str]] = {}
    for v in sorted(keyed, key=lambda v: v.name):
        if v.environment is None:
            host.run(creds.encrypt(incoming, v.name, v.value))
        else:
            for unit in v.units:
                env.setdefault(unit, []).append(env_line(v.environment, v.value.value))
    for unit, lines in sorted(env.items()):
        host.run(creds.write_private(env_file(incoming, unit), Secret("".join(lines))))
    host.run(creds.seal_set(incoming, layout.secret_set(secrets.id), secrets.to_json()))
    return secrets
