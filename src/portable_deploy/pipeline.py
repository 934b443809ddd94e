"""The deploy, as plain steps: build -> sign -> upload -> check -> reattach -> verify (-> roll back).

Each step is a function with typed inputs and outputs. Remote work goes through a ``Remote``
(``host.Host`` for real, a recording fake in flow tests) and ``Command`` builders.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import facts, image, sign, ui
from .command import Command
from .commands import files, portablectl, systemctl, trust
from .commands.layout import ALLOWED_SIGNERS, PORTABLES_DIR, STATE_ROOT, TRUST_DIR, Layout
from .commands.state import SECTION, host_state
from .config import Config, check_sources, resolve_version
from .errors import DeployError
from .facts import AuditRecord
from .history import ReleaseRow, kept_releases, prune, record, release_rows
from .host import Remote
from .image import Artifact
from .locking import deploy_lock
from .manifest import Manifest
from .plan import Action, Plan, plan_release, unit_infos
from .units import Kind

MIN_SYSTEMD = 252


class VerifyFailed(DeployError):
    """The new release did not pass verification."""


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    restart_sockets: bool = False
    break_lock: bool = False


@dataclass(frozen=True)
class Signed:
    artifact: Artifact
    signature: Path

    @property
    def manifest(self) -> Manifest:
        return self.artifact.manifest


@dataclass(frozen=True)
class HostState:
    live: str | None
    live_manifest: Manifest | None
    audit: list[AuditRecord]

    @property
    def previous(self) -> str | None:
        return facts.previous_release(self.audit, self.live)


# -- local steps ---------------------------------------------------------------------------------


def build(cfg: Config, output: Callable[[str], None] | None = None) -> Artifact:
    """Run the build commands, then pack the image and write its manifest."""
    version = resolve_version(cfg)
    image.run_build_commands(cfg, version, output=output)
    check_sources(cfg)
    return image.build(cfg, version, run_commands=False)


def sign_release(cfg: Config, artifact: Artifact) -> Signed:
    return Signed(artifact, sign.sign(cfg, artifact))


def local_release_unsigned(cfg: Config) -> Artifact:
    """The release built in dist/ by `invoke build`."""
    version = resolve_version(cfg)
    release = f"{cfg.app.name}_{version}"
    manifest_path = cfg.image.dist / f"{release}.manifest.json"
    image_path = cfg.image.dist / f"{release}.raw"
    for path in (image_path, manifest_path):
        if not path.exists():
            raise DeployError(f"{path} not found", hint="run `invoke build` first")
    manifest = Manifest.from_json(manifest_path.read_text(), str(manifest_path))
    return Artifact(image_path, manifest_path, manifest)


def local_release(cfg: Config) -> Signed:
    """The release already built and signed in dist/ (for `upload` and friends run on their own)."""
    artifact = local_release_unsigned(cfg)
    sig = artifact.manifest_path.with_name(artifact.manifest_path.name + ".sig")
    if not sig.exists():
        raise DeployError(f"{sig} not found", hint="run `invoke sign` first")
    return Signed(artifact, sig)


# -- host state ----------------------------------------------------------------------------------


def check_host(host: Remote, info: facts.HostInfo | None = None) -> facts.HostInfo:
    """Refuse hosts that cannot run portable services."""
    info = info or facts.host_info(host.run(trust.host_info()).stdout)
    if not info.has_portablectl:
        raise DeployError(
            f"[{host.name}] has no portablectl",
            hint="install it on the host: apt-get install systemd-container",
        )
    if info.systemd_version < MIN_SYSTEMD:
        raise DeployError(
            f"[{host.name}] runs systemd {info.systemd_version}; portable-deploy needs {MIN_SYSTEMD}+",
            hint="use Debian 12 (bookworm) or newer",
        )
    return info


def read_state(host: Remote, layout: Layout) -> HostState:
    """The host's facts in one round trip; refuses hosts that were never set up."""
    out = host.run(host_state(layout, ALLOWED_SIGNERS, STATE_ROOT)).stdout
    sections = facts.state_sections(out, SECTION)
    info = check_host(host, facts.host_info(sections.get("info", "")))
    if not (info.set_up and info.trusted):
        raise DeployError(
            f"[{host.name}] is not set up for portable-deploy (no {ALLOWED_SIGNERS})",
            hint=f"run `invoke host.setup --host {host.name}` once",
        )
    live = facts.live_release(sections.get("attached", ""), layout.app)
    manifest = None
    if live:
        text = sections.get("live-manifest", "")
        if text.strip():
            manifest = Manifest.from_json(text, f"{host.name}:{layout.manifest(live)}")
        if manifest is None or manifest.release != live:  # units disagreed: read the right one
            manifest = read_manifest(host, layout, live)
    audit = facts.audit_log(sections.get("audit", ""))
    return HostState(live, manifest, audit)


def read_manifest(host: Remote, layout: Layout, release: str) -> Manifest | None:
    text = host.run(files.cat(layout.manifest(release))).stdout
    if not text.strip():
        return None
    return Manifest.from_json(text, f"{host.name}:{layout.manifest(release)}")


def setup_host(host: Remote, cfg: Config) -> list[str]:
    """Idempotent: make the directories and install the trust root. Returns what changed."""
    check_host(host)
    layout = Layout(cfg.app.name)
    changed: list[str] = []
    dirs = [TRUST_DIR, PORTABLES_DIR, layout.state_dir, layout.releases_dir, layout.incoming_dir]
    present = set(host.run(files.exists(dirs)).stdout.split())
    missing = [d for d in dirs if d not in present]
    if missing:
        host.run(files.mkdir(*missing, mode="0755"))
        changed += [f"created {d}" for d in missing]
    wanted = sign.allowed_signers_text(cfg)
    if host.run(files.cat(ALLOWED_SIGNERS)).stdout != wanted:
        host.run(trust.install_allowed_signers(wanted))
        changed.append(f"installed {ALLOWED_SIGNERS}")
    return changed


# -- remote steps --------------------------------------------------------------------------------


def upload(host: Remote, layout: Layout, signed: Signed, steps: ui.Steps) -> bool:
    """Send the image (unless the host has it already), manifest and signature to the staging dir.

    Returns whether the image was staged (False: the host already had it in place).
    """
    m = signed.manifest
    on_host = facts.sha256sum(host.run(files.sha256(layout.image(m.release))).stdout)
    if on_host is not None and on_host != m.image_sha256:
        raise DeployError(
            f"[{host.name}] already has a different {m.image_name} (sha256 {on_host[:12]}...)",
            hint='releases are immutable: change [app] version (or commit, with version = "git")',
        )
    host.run(files.mkdir(layout.incoming_dir, layout.releases_dir))
    host.put(signed.artifact.manifest_path, f"{layout.incoming_dir}/{m.manifest_name}")
    host.put(signed.signature, f"{layout.incoming_dir}/{m.manifest_name}.sig")
    if on_host is not None:
        steps.info(f"{m.image_name} already on {host.name} (same sha256): not sent again")
        return False
    target = layout.incoming_image(m.release)
    with ui.transfer(f"{m.image_name} -> {host.name}", m.image_size) as progress:
        host.put(signed.artifact.image, target, progress)
    if host.dry_run:
        return True
    # Transfer integrity: what arrived is what was sent. Whether that matches the signed
    # manifest is the host's own check, next.
    local = image.file_sha256(signed.artifact.image)[0]
    sent = facts.sha256sum(host.run(files.sha256(target)).stdout)
    if sent != local:
        host.run(files.remove(target))
        raise DeployError(
            f"[{host.name}] upload of {m.image_name} arrived damaged (sha256 {sent})",
            hint="retry the deploy",
        )
    return True


def check_release(
    host: Remote, layout: Layout, manifest: Manifest, principal: str, *, staged: bool | None
) -> None:
    """On the host, before anything changes: the signature against the host's own trust root,
    then the image's sha256 against the signed manifest.

    ``staged``: None checks a release already installed; True/False check the uploaded manifest,
    with the image staged (True) or already in place (False).
    """
    base = layout.releases_dir if staged is None else layout.incoming_dir
    manifest_path = f"{base}/{manifest.manifest_name}"
    image_path = (
        layout.incoming_image(manifest.release) if staged else layout.image(manifest.release)
    )
    checks = (
        trust.verify_signature(manifest_path, manifest_path + ".sig", principal),
        trust.image_matches_manifest(image_path, manifest_path),
    )
    for index, check in enumerate(checks):
        # These read files that a dry run never uploaded: show them, do not run them.
        result = host.run(dataclasses.replace(check, mutates=host.dry_run), check=False)
        if result.ok:
            continue
        if staged is not None:
            doomed = [manifest_path, manifest_path + ".sig"]
            host.run(files.remove(*doomed, *([image_path] if staged else [])))
        if index == 0:
            reason = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise DeployError(
                f"[{host.name}] refused {manifest.release}: signature check failed"
                + (f" ({reason[-1]})" if reason else ""),
                hint=f"sign with a key listed in the host's {ALLOWED_SIGNERS} (invoke host.setup installs it)",
            )
        raise DeployError(
            f"[{host.name}] refused {manifest.release}: image sha256 {result.stdout.strip()[:16]}... "
            "does not match the signed manifest",
            hint="rebuild and sign again: `invoke build sign`",
        )


def install(host: Remote, layout: Layout, manifest: Manifest, *, staged: bool) -> None:
    """Move the checked release into place (a rename: the image is complete or absent)."""
    if staged:
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
        command = portablectl.attach(image_path, now=True, enable=True)
    else:
        # One round trip: the swap and the restarts it needs, stopping at the first failure.
        command = portablectl.reattach(image_path, now=False, enable=True)
        for units, builder in (
            (plan.stop, systemctl.stop),
            (plan.restart, systemctl.restart),
            (plan.start, systemctl.start),
        ):
            if units:
                command = command.then(builder(units))
    host.run(command, timeout=180)
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
    """Units active, an HTTP health check through the SSH connection, then no restarts for a while."""
    if host.dry_run:
        steps.info(f"would check {', '.join(watched_units(manifest))} and GET {cfg.verify.path}")
        return
    v = cfg.verify
    units = watched_units(manifest)
    deadline = time.monotonic() + v.timeout
    states = _wait_active(host, units, deadline)
    _wait_http(host, cfg, manifest, deadline)
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
    steps.info(f"{', '.join(units)} active; GET {v.path} -> {v.status}")


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


def _wait_http(host: Remote, cfg: Config, manifest: Manifest, deadline: float) -> None:
    """GET the health path (and the version path) on the host until they answer as expected."""
    v = cfg.verify
    last = "no answer"
    while True:
        status, body = host.http_get(v.port, v.path)
        if status == v.status:
            if not v.version_path:
                return
            vstatus, vbody = host.http_get(v.port, v.version_path)
            if vstatus == 200 and manifest.version in vbody:
                return
            last = f"GET {v.version_path} -> {vstatus} {vbody.strip()[:80]!r}, expected {manifest.version!r}"
        else:
            last = f"GET {v.path} -> {status or 'no answer'} {body.strip()[:80]!r}, expected {v.status}"
        if time.monotonic() > deadline:
            raise VerifyFailed(f"health check failed: {last}")
        time.sleep(0.5)


# -- switching releases, with automatic rollback -------------------------------------------------


def switch(
    host: Remote,
    cfg: Config,
    state: HostState,
    target: Manifest,
    opts: Options,
    steps: ui.Steps,
    event: str,
) -> Plan:
    """Reattach ``target`` and verify it; on failure put the live release back and raise."""
    layout = Layout(cfg.app.name)
    plan = plan_release(state.live_manifest, target, restart_sockets=opts.restart_sockets)
    describe(plan, steps)
    with steps.step(f"reattach {target.release} on {host.name}"):
        reattach(host, layout, plan)
    try:
        with steps.step(f"verify {target.release} on {host.name}"):
            verify(host, cfg, target, steps)
    except VerifyFailed as failure:
        if host.dry_run:
            raise
        _revert(host, cfg, state, target, failure, steps, event)
    if not host.dry_run:
        record(host, layout, event, target.release, target.release, "ok")
    return plan


def _revert(
    host: Remote,
    cfg: Config,
    state: HostState,
    failed: Manifest,
    failure: VerifyFailed,
    steps: ui.Steps,
    event: str,
) -> None:
    layout = Layout(cfg.app.name)
    previous = state.live_manifest
    if previous is None:
        record(host, layout, event, failed.release, failed.release, "failed", failure.message)
        raise DeployError(
            f"[{host.name}] {failed.release} failed verification: {failure.message}; there is no "
            f"previous release to roll back to, so {failed.release} stays attached",
            hint=f"see `invoke logs --host {host.name}`, fix, and deploy again",
        )
    back = plan_release(failed, previous, restart_sockets=True)
    try:
        with steps.step(f"roll back {host.name} to {previous.release}"):
            reattach(host, layout, back)
            verify(host, cfg, previous, steps)
    except DeployError as second:
        record(
            host, layout, event, failed.release, previous.release, "rollback-failed", second.message
        )
        raise DeployError(
            f"[{host.name}] {failed.release} failed verification ({failure.message}) and the "
            f"rollback to {previous.release} failed too: {second.message}",
            hint=f"look at the host now: `invoke status --host {host.name}` and `invoke logs`",
        ) from None
    record(host, layout, event, failed.release, previous.release, "rolled-back", failure.message)
    raise DeployError(
        f"[{host.name}] {failed.release} failed verification: {failure.message}; rolled back, "
        f"{previous.release} is live",
        hint=f"see `invoke logs --host {host.name} --release {failed.release}`",
    )


def describe(plan: Plan, steps: ui.Steps) -> None:
    if plan.action is Action.NONE:
        steps.info(f"{plan.release} is already live: nothing to reattach")
    elif plan.action is Action.ATTACH:
        steps.info(f"first deploy: attach {plan.release} and start its units")
    else:
        for verb, units in (("stop", plan.stop), ("restart", plan.restart), ("start", plan.start)):
            for unit in units:
                steps.info(f"{verb} {unit}: {plan.reasons.get(unit, '')}")
        if not (plan.stop or plan.restart or plan.start):
            steps.info("no unit needs a restart")


# -- the tasks' bodies ---------------------------------------------------------------------------


def deploy_to(host: Remote, cfg: Config, signed: Signed, opts: Options, steps: ui.Steps) -> Plan:
    """Upload, check, reattach and verify one release on one host, under the deploy lock."""
    layout = Layout(cfg.app.name)
    m = signed.manifest
    with deploy_lock(host, layout, cfg, m.release, "deploy", opts.break_lock):
        state = read_state(host, layout)
        with steps.step(f"upload {m.image_name} to {host.name}"):
            _upload_checked(host, layout, cfg, signed, state, steps)
        plan = switch(host, cfg, state, m, opts, steps, "deploy")
        if not host.dry_run:
            protect = {m.release} | ({state.live} if state.live else set())
            removed = prune(host, layout, cfg.deploy.keep_releases, protect, state.audit)
            if removed:
                steps.info(f"removed old releases: {', '.join(removed)}")
        return plan


def upload_to(host: Remote, cfg: Config, signed: Signed, steps: ui.Steps) -> None:
    """`invoke upload`: send and check a release without attaching it."""
    layout = Layout(cfg.app.name)
    m = signed.manifest
    with deploy_lock(host, layout, cfg, m.release, "upload", False):
        state = read_state(host, layout)
        with steps.step(f"upload {m.image_name} to {host.name}"):
            _upload_checked(host, layout, cfg, signed, state, steps)


def _upload_checked(
    host: Remote, layout: Layout, cfg: Config, signed: Signed, state: HostState, steps: ui.Steps
) -> None:
    """Upload, check on the host (a refusal is audited), and move into place."""
    m = signed.manifest
    staged = upload(host, layout, signed, steps)
    try:
        check_release(host, layout, m, cfg.sign.principal, staged=staged)
    except DeployError as refused:
        if not host.dry_run:
            record(host, layout, "deploy", m.release, state.live, "refused", refused.message)
        raise
    install(host, layout, m, staged=staged)


def reattach_on(host: Remote, cfg: Config, signed: Signed, opts: Options, steps: ui.Steps) -> Plan:
    """`invoke reattach`: switch to an uploaded release without verifying it."""
    layout = Layout(cfg.app.name)
    m = signed.manifest
    with deploy_lock(host, layout, cfg, m.release, "reattach", opts.break_lock):
        state = read_state(host, layout)
        if read_manifest(host, layout, m.release) is None:
            raise DeployError(
                f"[{host.name}] {m.release} was not uploaded", hint="run `invoke upload` first"
            )
        plan = plan_release(state.live_manifest, m, restart_sockets=opts.restart_sockets)
        describe(plan, steps)
        with steps.step(f"reattach {m.release} on {host.name}"):
            reattach(host, layout, plan)
        if not host.dry_run:
            record(host, layout, "reattach", m.release, m.release, "unverified")
        return plan


def verify_live(host: Remote, cfg: Config, steps: ui.Steps) -> None:
    """`invoke verify`: check the live release as a deploy would."""
    state = read_state(host, Layout(cfg.app.name))
    if state.live_manifest is None:
        raise DeployError(
            f"[{host.name}] no release of {cfg.app.name} is attached", hint="run `invoke deploy`"
        )
    with steps.step(f"verify {state.live_manifest.release} on {host.name}"):
        try:
            verify(host, cfg, state.live_manifest, steps)
        except VerifyFailed as e:
            raise DeployError(
                f"[{host.name}] {e.message}", hint=f"see `invoke logs --host {host.name}`"
            ) from None


def rollback_on(host: Remote, cfg: Config, to: str | None, opts: Options, steps: ui.Steps) -> Plan:
    """Reattach the previous (or a named) release already on the host, verified like a deploy."""
    layout = Layout(cfg.app.name)
    with deploy_lock(host, layout, cfg, to or "previous", "rollback", opts.break_lock):
        state = read_state(host, layout)
        target_name = _release_name(cfg, to) if to else state.previous
        if target_name is None:
            raise DeployError(
                f"[{host.name}] no previous release in the deploy history",
                hint="name one with --to VERSION (see `invoke releases`)",
            )
        target = read_manifest(host, layout, target_name)
        if target is None:
            raise DeployError(
                f"[{host.name}] release {target_name} is not on the host",
                hint="see `invoke releases` for the ones kept there",
            )
        with steps.step(f"check {target.release} on {host.name}"):
            check_release(host, layout, target, cfg.sign.principal, staged=None)
        return switch(host, cfg, state, target, opts, steps, "rollback")


def _release_name(cfg: Config, to: str) -> str:
    prefix = f"{cfg.app.name}_"
    return to if to.startswith(prefix) else prefix + to


def releases_on(host: Remote, cfg: Config) -> list[ReleaseRow]:
    """`invoke releases`: the releases kept on the host, which is live, which rollback picks."""
    layout = Layout(cfg.app.name)
    state = read_state(host, layout)
    return release_rows(kept_releases(host, layout), state.live, state.previous, state.audit)
