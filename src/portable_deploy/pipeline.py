"""The deploy, read first: what each task does on one host, in the README's order.

    build -> sign -> upload -> check -> install -> reattach -> verify  (-> roll back)

build and sign are local (``release``); the remote steps are plain functions in ``steps``; what
the host is and runs now comes from ``preflight``. Every task body below opens the same prologue,
``session``: take the app's deploy lock on the host, then read the host's state in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from . import facts, failpoints, interrupts, profiles, ui
from .command import Command
from .commands import creds, deadman, files, lock
from .commands.layout import Layout
from .config import Config
from .credentials import SET_FILE, SecretSet, changed_units, dropin_path, set_id_of, wanted_dropins
from .deadman_switch import dead_man, way_back
from .errors import DeployError, Refused
from .history import (
    ReleaseRow,
    kept_releases,
    prune,
    prune_secret_sets,
    record,
    recorded_secret_set,
    release_rows,
)
from .host import Remote, RemoteCommandError, TransportError
from .locking import Held, deploy_lock, read_lock, release_stale, why_stale
from .manifest import Manifest
from .plan import Action, Plan, overlap_twins, plan_release, unit_infos
from .preflight import (
    HostState,
    install_profile_command,
    profile_problem,
    read_manifest,
    read_state,
    wanted_profile_digest,
)
from .release import Options, Signed, Where, check_local, release_name
from .secrets import SecretValue
from .status import HostStatus, read_status
from .steps import (
    ConnectionLost,
    Interrupted,
    SwitchFailed,
    VerifyFailed,
    check_release,
    deliver_secrets,
    describe,
    install,
    read_checked,
    reattach,
    upload,
)
from .units import held_ports_line
from .verify import now as verify_clock
from .verify import verify


@dataclass(frozen=True)
class Session:
    """One host, the app's paths on it, and its state as read at the start of a task."""

    host: Remote
    cfg: Config
    layout: Layout
    state: HostState
    #: The deploy lock this task holds (None for a read-only task).
    held: Held | None = None

    @property
    def lock_token(self) -> str:
        return self.held.token if self.held is not None else ""


@contextmanager
def session(
    host: Remote, cfg: Config, event: str, release: str, break_lock: bool = False
) -> Iterator[Session]:
    """The shared prologue: hold the deploy lock for EVENT, read the host's state."""
    layout = Layout(cfg.app.name)
    with deploy_lock(host, layout, cfg, release, event, break_lock) as held:
        yield Session(host, cfg, layout, read_state(host, layout, cfg.deploy.profile), held)


def peek(host: Remote, cfg: Config) -> Session:
    """The prologue of a read-only task: the host's state, no lock."""
    layout = Layout(cfg.app.name)
    return Session(host, cfg, layout, read_state(host, layout, cfg.deploy.profile))


# -- the tasks' bodies ---------------------------------------------------------------------------


def deploy_to(
    host: Remote,
    cfg: Config,
    signed: Signed,
    opts: Options,
    steps: ui.Steps,
    secrets: Sequence[SecretValue] = (),
) -> Plan:
    """`invoke deploy` on one host: upload, check, install, send the secrets, reattach with them,
    verify (-> roll back, secrets too)."""
    check_local(signed)
    with session(host, cfg, "deploy", signed.manifest.release, opts.break_lock) as s:
        delivered = stage(s, signed, steps, secrets)
        return go_live(s, signed, opts, steps, delivered)


def stage(
    s: Session, signed: Signed, steps: ui.Steps, secrets: Sequence[SecretValue] = ()
) -> SecretSet:
    """A deploy's first half, nothing switched: upload, check, install, send the secrets.
    Returns the secret set the release will run with."""
    m = signed.manifest
    _check_profile(s)  # before the upload: a deploy that cannot attach sends nothing
    with steps.step(f"upload {m.image_name} to {s.host.name}"):
        _upload_checked(s, signed, steps, "deploy")
        return deliver_secrets(s.host, s.layout, secrets, s.state)


def go_live(
    s: Session, signed: Signed, opts: Options, steps: ui.Steps, delivered: SecretSet
) -> Plan:
    """A deploy's second half: switch to the staged release (verified, or rolled back), then
    remove the releases beyond [deploy] keep_releases."""
    plan = switch(s, signed.manifest, opts, steps, "deploy", delivered)
    tidy(s, signed.manifest, steps, delivered)
    return plan


def tidy(s: Session, live: Manifest, steps: ui.Steps, delivered: SecretSet) -> None:
    """After a deploy went live: remove the releases beyond [deploy] keep_releases and the
    secret sets no kept release ran with."""
    if s.host.dry_run:
        return
    protect = {live.release} | ({s.state.live} if s.state.live else set())
    removed = prune(s.host, s.layout, s.cfg.deploy.keep_releases, protect, s.state.audit)
    if removed:
        steps.info(f"removed old releases: {', '.join(removed)}")
    prune_secret_sets(s.host, s.layout, s.state, delivered.id)


def put_back(s: Session, opts: Options, steps: ui.Steps) -> Plan:
    """Return S's host to the release that was live when S was opened (a fleet's rollback of
    hosts that passed, after another failed): checked, with its secrets, verified."""
    previous = s.state.live
    if previous is None:
        raise DeployError(
            f"[{s.host.name}] nothing was live before this deploy: nothing to put back",
            hint=f"`invoke status --host {s.host.name}` shows what runs there",
        )
    now = Session(
        s.host, s.cfg, s.layout, read_state(s.host, s.layout, s.cfg.deploy.profile), s.held
    )
    return _rollback_to(now, previous, opts, steps)


def upload_to(host: Remote, cfg: Config, signed: Signed, steps: ui.Steps) -> None:
    """`invoke upload`: upload, check and install a release without attaching it."""
    m = signed.manifest
    check_local(signed)
    with (
        session(host, cfg, "upload", m.release) as s,
        steps.step(f"upload {m.image_name} to {host.name}"),
    ):
        _upload_checked(s, signed, steps, "upload")


def reattach_on(host: Remote, cfg: Config, signed: Signed, opts: Options, steps: ui.Steps) -> Plan:
    """`invoke reattach`: switch to an uploaded release without verifying it."""
    m = signed.manifest
    with session(host, cfg, "reattach", m.release, opts.break_lock) as s:
        if read_manifest(host, s.layout, m.release) is None:
            raise DeployError(
                f"[{host.name}] {m.release} was not uploaded", hint="run `invoke upload` first"
            )
        plan = _plan(s, m, opts, steps, {})
        with steps.step(f"check {m.release} on {host.name}"):
            check_release(host, s.layout, m, cfg.sign.principal, Where.INSTALLED)
        _reattach(s, plan, steps, {})
        if not host.dry_run:
            record(
                host,
                s.layout,
                "reattach",
                m.release,
                m.release,
                "unverified",
                secrets=s.state.live_secret_set,
            )
        return plan


def verify_live(host: Remote, cfg: Config, steps: ui.Steps) -> None:
    """`invoke verify`: check the live release as a deploy would."""
    live = peek(host, cfg).state.live_manifest
    if live is None:
        raise DeployError(
            f"[{host.name}] no release of {cfg.app.name} is attached", hint="run `invoke deploy`"
        )
    with steps.step(f"verify {live.release} on {host.name}"):
        try:
            verify(host, cfg, live, steps)
        except VerifyFailed as e:
            raise DeployError(
                f"[{host.name}] {e.message}", hint=f"see `invoke logs --host {host.name}`"
            ) from None


def rollback_on(host: Remote, cfg: Config, to: str | None, opts: Options, steps: ui.Steps) -> Plan:
    """`invoke rollback`: check and switch to the previous (or a named) release on the host."""
    with session(host, cfg, "rollback", to or "previous", opts.break_lock) as s:
        return roll_back(s, to, opts, steps, last=True)


def roll_back(
    s: Session, to: str | None, opts: Options, steps: ui.Steps, last: bool = False
) -> Plan:
    """Switch S's host to its previous release (or release TO), checked and verified."""
    name = release_name(s.cfg.app.name, to) if to else s.state.previous
    if name is None:
        raise DeployError(
            f"[{s.host.name}] no previous release in the deploy history",
            hint="name one with --to VERSION (see `invoke releases`)",
        )
    return _rollback_to(s, name, opts, steps, last)


def _rollback_to(s: Session, name: str, opts: Options, steps: ui.Steps, last: bool = False) -> Plan:
    host = s.host
    with steps.step(f"check {name} on {host.name}"):
        # Read and checked in one round trip (signature, then the image's sha256).
        target = read_checked(host, s.layout, name, s.cfg.sign.principal)
        if target is None:
            raise DeployError(
                f"[{host.name}] release {name} is not on the host",
                hint="see `invoke releases` for the ones kept there",
            )
        failpoints.reach("checked")
        # The secrets the target ran with come back with it (never today's).
        secrets = recorded_secret_set(host, s.layout, s.state, target.release)
    return switch(s, target, opts, steps, "rollback", secrets, last=last)


def live_secrets_on(host: Remote, cfg: Config) -> tuple[dict[str, str], str | None]:
    """`invoke secrets`: secret name -> digest in the set the units run with now, and the
    host's digest salt (None: no secret was ever delivered there)."""
    s = peek(host, cfg)
    live = s.state.live_secret_set
    if not live:
        return {}, s.state.secrets_salt
    text = host.run(files.cat(f"{s.layout.secret_set(live)}/{SET_FILE}")).stdout
    digests = SecretSet.from_json(text).digests() if text.strip() else {}
    return digests, s.state.secrets_salt


def releases_on(host: Remote, cfg: Config) -> list[ReleaseRow]:
    """`invoke releases`: the releases kept on the host, which is live, which rollback picks."""
    s = peek(host, cfg)
    kept = kept_releases(host, s.layout)
    return release_rows(kept, s.state.live, s.state.previous, s.state.audit)


def status_on(host: Remote, cfg: Config) -> HostStatus:
    """`invoke status`: the live release, its units, health, certificate, last deploy, disk."""
    return read_status(host, cfg)


def audit_on(host: Remote, cfg: Config) -> list[facts.AuditRecord]:
    """`invoke audit`: the host's audit log, oldest first."""
    return peek(host, cfg).state.audit


def lock_on(host: Remote, cfg: Config) -> tuple[facts.LockRecord, str | None] | None:
    """`invoke lock.status`: who holds the deploy lock and why `--break-lock` would break it
    (None: it would not); None when nobody holds it."""
    holder = read_lock(host, Layout(cfg.app.name))
    return (holder, why_stale(holder, cfg.deploy.lock_ttl)) if holder is not None else None


def release_lock_on(host: Remote, cfg: Config) -> tuple[facts.LockRecord, str] | None:
    """`invoke lock.release`: remove a stale deploy lock (the holder and why it was stale)."""
    return release_stale(host, Layout(cfg.app.name), cfg)


# -- upload and switch, shared by the tasks above ------------------------------------------------


def _upload_checked(s: Session, signed: Signed, steps: ui.Steps, event: str) -> None:
    """upload -> check -> install. A refusal (damaged arrival, signature, hash) is audited as
    "refused", any other failure (a full disk, a dropped connection) as "failed", when the host
    can still be reached; nothing was switched."""
    m = signed.manifest
    prefer = [r for r in (s.state.live, s.state.previous) if r]
    try:
        where = upload(
            s.host, s.layout, signed, s.cfg.sign.principal, steps, s.cfg.upload.delta, prefer
        )
        failpoints.reach("checked")
        install(s.host, s.layout, m, where)
    except DeployError as error:
        if not s.host.dry_run:
            result = "refused" if isinstance(error, Refused) else "failed"
            note = _audit(
                s, event, m.release, s.state.live, result, error.message, s.state.live_secret_set
            )
            if note:
                raise DeployError(error.message + note, error.hint) from None
        raise


def _dropins(s: Session, target: Manifest, secrets: SecretSet | None) -> dict[str, str | None]:
    """Unit -> secrets drop-in text (None: none) for TARGET with SECRETS; {} keeps them as is."""
    if secrets is None:
        return {}
    services = [u for u in target.unit_info if not u.endswith(".socket")]
    return wanted_dropins(
        s.layout.secret_set(secrets.id),
        secrets,
        services,
        s.state.secret_dropins,
        overlap_twins(target),
    )


def _plan(
    s: Session, target: Manifest, opts: Options, steps: ui.Steps, dropins: dict[str, str | None]
) -> Plan:
    """Which units change (a refused socket change or a missing profile stops here, before
    anything changes)."""
    _check_profile(s)
    profile = s.cfg.deploy.profile
    wanted = wanted_profile_digest(profile, s.state)
    plan = plan_release(
        s.state.live_manifest,
        target,
        restart_sockets=opts.restart_sockets,
        profile=profile,
        profile_changed=s.state.live_manifest is not None and s.state.attached_profile != wanted,
        secrets_changed=frozenset(changed_units(s.state.secret_dropins, dropins)),
    )
    describe(plan, steps)
    if s.host.dry_run:
        steps.info(held_ports_line(unit_infos(target)))
    return plan


def _check_profile(s: Session) -> None:
    problem = profile_problem(s.host.name, s.cfg.deploy.profile, s.state)
    if problem:
        raise problem


def _reattach(
    s: Session,
    plan: Plan,
    steps: ui.Steps,
    dropins: dict[str, str | None],
    arm: Command | None = None,
) -> None:
    """The reattach and its restarts run to their end even if the user interrupts. In the same
    round trip, first: ARM (the dead-man switch), the units' secrets drop-ins, and the tool's
    own profile when the host's copy differs (the reattach reloads systemd)."""
    before = [arm] if arm is not None else []
    changed = changed_units(s.state.secret_dropins, dropins)
    if changed:
        before.append(
            creds.apply_dropins({u: (dropin_path(u), dropins[u]) for u in sorted(changed)})
        )
    own = profiles.is_own(plan.profile)
    if (
        own
        and plan.action is not Action.NONE
        and s.state.host_profile != profiles.digest(profiles.text(plan.profile))
    ):
        before.append(install_profile_command(plan.profile))
    first = None
    for command in before:
        first = command if first is None else first.then(command)
    with steps.step(f"reattach {plan.release} on {s.host.name}"), interrupts.deferred():
        # A changed drop-in always makes a plan that reattaches (plan_release), so nothing in
        # FIRST is lost when there is nothing to reattach.
        reattach(s.host, s.layout, plan, first)


def switch(
    s: Session,
    target: Manifest,
    opts: Options,
    steps: ui.Steps,
    event: str,
    secrets: SecretSet | None = None,
    last: bool = False,
) -> Plan:
    """reattach -> verify; if the release does not come up, the connection drops or the user
    interrupts, put the live release back (with its secrets) and raise one message. SECRETS:
    the set the target runs with (None: the units keep theirs). LAST: nothing follows on this
    host, so the audit record releases the deploy lock too (one round trip less)."""
    dropins = _dropins(s, target, secrets)
    plan = _plan(s, target, opts, steps, dropins)
    switch_ = dead_man(s.host, s.cfg, s.layout, s.state, s.lock_token, target, plan, dropins, event)
    armed = switch_ is not None
    try:
        _reattach(s, plan, steps, dropins, switch_)
        switched = verify_clock()
        with steps.step(f"verify {target.release} on {s.host.name}"):
            alive = deadman.heartbeat(s.layout) if switch_ else None
            verify(s.host, s.cfg, target, steps, alive, since=switched)
    except SwitchFailed as failure:
        if s.host.dry_run:
            raise
        _revert(s, target, failure, steps, event, dropins, armed)
    except TransportError as lost:
        _revert(s, target, ConnectionLost(lost.message), steps, event, dropins, armed)
    except KeyboardInterrupt as signal:
        interrupts.handled()
        _revert(
            s,
            target,
            Interrupted(f"interrupted ({signal or 'SIGINT'})"),
            steps,
            event,
            dropins,
            armed,
        )
    if not s.host.dry_run:
        live_set = secrets.id if secrets is not None else s.state.live_secret_set
        disarm = deadman.disarm(s.layout) if switch_ else None
        unlock = _unlock(s) if last else None
        try:
            record(
                s.host,
                s.layout,
                event,
                target.release,
                target.release,
                "ok",
                secrets=live_set,
                first=disarm,
                then=unlock,
            )
            if unlock is not None and s.held is not None:
                s.held.released = True
        except RemoteCommandError as e:
            if e.result.exit_code != deadman.FIRED:
                raise
            previous = s.state.live_manifest.release if s.state.live_manifest else "?"
            raise DeployError(
                f"[{s.host.name}] {target.release} passed verification too late: the host's "
                f"dead-man switch heard nothing for {s.cfg.deploy.confirm_timeout}s and put "
                f"{previous} back",
                hint="see `invoke releases` and the audit log; raise [deploy] confirm_timeout "
                "if verify is slow",
            ) from None
    return plan


def _unlock(s: Session) -> Command | None:
    return lock.release(s.layout.lock, s.held.token) if s.held is not None else None


def _revert(
    s: Session,
    failed: Manifest,
    failure: SwitchFailed,
    steps: ui.Steps,
    event: str,
    dropins: dict[str, str | None],
    armed: bool = False,
) -> NoReturn:
    """Roll back to the release that was live: check its signature again, put its secrets
    drop-ins back, reattach, verify, audit; then raise one message. Interrupts wait until it is
    done (a second one does not). An armed dead-man switch stays armed until the rollback is
    audited, with the deployer's heartbeat on each of its commands: a deployer that dies during
    its own rollback leaves the rest to the host. If the switch has fired, the host is doing this
    already and the deployer leaves it be."""
    with interrupts.deferred():
        if armed:
            _hold_switch(s, failed, failure)
        _revert_now(s, failed, failure, steps, event, dropins, armed)
    raise AssertionError("unreachable")  # pragma: no cover


def _hold_switch(s: Session, failed: Manifest, failure: SwitchFailed) -> None:
    try:
        result = s.host.run(deadman.hold(s.layout), check=False)
    except DeployError:
        return  # unreachable: the revert below tries again, or says the host will revert
    if result.exit_code == deadman.FIRED:
        raise DeployError(
            f"[{s.host.name}] {failed.release} {failure.what}: {failure.message}; "
            + _switch_fired(s),
            hint=f"see `invoke releases --host {s.host.name}` and the audit log",
        )


def _switch_fired(s: Session) -> str:
    previous = s.state.live_manifest.release if s.state.live_manifest else "?"
    return f"the host's dead-man switch has already put {previous} back"


def _revert_now(
    s: Session,
    failed: Manifest,
    failure: SwitchFailed,
    steps: ui.Steps,
    event: str,
    dropins: dict[str, str | None],
    armed: bool = False,
) -> NoReturn:
    host, layout, previous = s.host, s.layout, s.state.live_manifest
    what = f"[{host.name}] {failed.release} {failure.what}"
    if previous is None:
        attached = next((set_id_of(t) or "" for t in dropins.values() if t), "")
        note = _audit(s, event, failed.release, failed.release, "failed", failure.message, attached)
        raise DeployError(
            f"{what}: {failure.message}; there is no previous release to roll back to, so "
            f"{failed.release} stays attached{note}",
            hint=f"see `invoke logs --host {host.name}`, fix, and deploy again",
        )
    back, restore = way_back(s.cfg, s.state, failed, previous, dropins)
    alive = deadman.heartbeat(layout) if armed else None
    second: DeployError | None = None
    for attempt in (1, 2):  # a connection lost in the rollback: once more, on a new one
        second = None
        try:
            with steps.step(f"roll back {host.name} to {previous.release}"):
                # A key removed from the trust root since is not honoured by a rollback either.
                check_release(host, layout, previous, s.cfg.sign.principal, Where.INSTALLED)
                if restore is not None:  # the secrets the previous release ran with come back
                    host.run(restore)
                failpoints.reach("rolling-back")
                reattach(host, layout, back, alive)
                verify(host, s.cfg, previous, steps, alive, since=verify_clock())
        except TransportError as lost:
            second = lost
            if attempt == 1:
                continue
        except DeployError as error:
            second = error
        break
    if second is not None:
        # Lost twice, the rollback is left to an armed switch: it finishes it on the host.
        note = _audit(
            s,
            event,
            failed.release,
            previous.release,
            "rollback-failed",
            second.message,
            disarm=armed and not isinstance(second, TransportError),
        )
        left = armed and isinstance(second, TransportError)
        raise DeployError(
            f"{what} ({failure.message}) and the rollback to {previous.release} failed too: "
            f"{second.message}{note}",
            hint=(
                f"the host's dead-man switch puts {previous.release} back within "
                f"{s.cfg.deploy.confirm_timeout}s of the last sign of life; then check it with "
                f"`invoke status --host {host.name}`"
                if left or (armed and note)
                else f"look at the host now: `invoke status --host {host.name}` and `invoke logs`"
            ),
        ) from None
    note = _audit(
        s,
        event,
        failed.release,
        previous.release,
        "rolled-back",
        failure.message,
        s.state.live_secret_set,
        disarm=armed,
    )
    raise DeployError(
        f"{what}: {failure.message}; rolled back, {previous.release} is live{note}",
        hint=f"see `invoke logs --host {host.name} --release {failed.release}`",
    )


def _audit(
    s: Session,
    event: str,
    release: str,
    live: str | None,
    result: str,
    message: str,
    secrets: str = "",
    disarm: bool = False,
) -> str:
    """Append the audit record (after disarming the dead-man switch, in the same command, with
    DISARM); if that fails (the host is unreachable), say so instead: the switch, if armed,
    stays armed and finishes the job on the host."""
    try:
        first = deadman.disarm(s.layout) if disarm else None
        record(s.host, s.layout, event, release, live, result, message, secrets, first=first)
    except RemoteCommandError as e:
        if disarm and e.result.exit_code == deadman.FIRED:
            return f" ({_switch_fired(s)} and audited it)"
        return f" (not audited: {e.message})"
    except DeployError as e:
        return f" (not audited: {e.message})"
    return ""
