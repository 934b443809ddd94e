"""Before any step: can this host run portable services, is it set up, and what runs there now.

``read_state`` reads everything a deploy needs from the host in one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import credentials, facts, profiles, sign, signers
from .command import Command
from .commands import files, system, trust
from .commands.layout import PORTABLES_DIR, STATE_ROOT, TRUST_DIR, Layout
from .commands.state import SECTION, host_state
from .config import Config
from .errors import DeployError
from .facts import AuditRecord
from .host import Remote, RemoteCommandError
from .manifest import Manifest

MIN_SYSTEMD = 252


@dataclass(frozen=True)
class HostState:
    """What runs on the host now, and its deploy history."""

    live: str | None
    live_manifest: Manifest | None
    audit: list[AuditRecord]
    #: SHA-256 of the portable profile the live units were attached with (None: nothing attached).
    attached_profile: str | None = None
    #: SHA-256 of the configured profile as the host has it (None: not on the host).
    host_profile: str | None = None
    #: The key of this host's secret digests (None: no secret was ever delivered here).
    secrets_salt: str | None = None
    #: The secret sets kept on the host (their ids).
    secret_sets: frozenset[str] = frozenset()
    #: Unit -> the text of its secrets drop-in, as the host has it now.
    secret_dropins: Mapping[str, str] = field(default_factory=dict)

    @property
    def live_secret_set(self) -> str:
        """The id of the set the units run with now ("" for none)."""
        ids = {credentials.set_id_of(text) for text in self.secret_dropins.values()}
        ids.discard(None)
        return sorted(i for i in ids if i)[0] if ids else ""

    @property
    def previous(self) -> str | None:
        return facts.previous_release(self.audit, self.live)


def check_host(host: Remote, layout: Layout, info: facts.HostInfo | None = None) -> facts.HostInfo:
    """Refuse hosts that cannot run portable services."""
    info = info or facts.host_info(host.run(trust.host_info(layout.allowed_signers)).stdout)
    check_systemd(host.name, info)
    if not info.has_portablectl:
        raise DeployError(
            f"[{host.name}] has no portablectl",
            hint=f"run `invoke host.setup --host {host.name} --yes`: it installs it "
            f"(apt-get install {system.PORTABLE_PACKAGE})",
        )
    return info


def check_systemd(host_name: str, info: facts.HostInfo) -> None:
    if info.systemd_version < MIN_SYSTEMD:
        raise DeployError(
            f"[{host_name}] runs systemd {info.systemd_version}; portable-deploy needs {MIN_SYSTEMD}+",
            hint="use Debian 12 (bookworm) or newer",
        )


def read_state(host: Remote, layout: Layout, profile: str = profiles.DEFAULT) -> HostState:
    """The host's facts in one round trip; refuses hosts that were never set up."""
    out = host.run(state_command(layout, profile)).stdout
    return state_from(host, layout, facts.state_sections(out, SECTION))


def state_command(layout: Layout, profile: str = profiles.DEFAULT) -> Command:
    """What ``read_state`` runs (a read-only task may run more in the same round trip)."""
    return host_state(layout, layout.allowed_signers, STATE_ROOT, profile)


def state_from(host: Remote, layout: Layout, sections: Mapping[str, str]) -> HostState:
    """The HostState in the sections ``state_command`` printed; refuses hosts never set up."""
    info = check_host(host, layout, facts.host_info(sections.get("info", "")))
    if not (info.set_up and info.trusted):
        raise DeployError(
            f"[{host.name}] is not set up for {layout.app} (no {layout.allowed_signers})",
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
    return HostState(
        live,
        manifest,
        audit,
        attached_profile=facts.digest(sections.get("profile-attached", "")),
        host_profile=facts.digest(sections.get("profile", "")),
        secrets_salt=sections.get("secrets-salt", "").strip() or None,
        secret_sets=frozenset(sections.get("secret-sets", "").split()),
        secret_dropins=credentials.parse_dropins(sections.get("secrets-dropins", "")),
    )


def read_manifest(host: Remote, layout: Layout, release: str) -> Manifest | None:
    """The installed manifest of RELEASE, or None if the host does not have it."""
    text = host.run(files.cat(layout.manifest(release))).stdout
    if not text.strip():
        return None
    return Manifest.from_json(text, f"{host.name}:{layout.manifest(release)}")


#: host.setup refuses a host with less room than this where the images go: an image of the
#: reference app is about 10 MB, and a deploy keeps [deploy] keep_releases of them plus one staged.
MIN_FREE_BYTES = 200 * 1024 * 1024

#: Asked before a package is installed on a host: (host name, package) -> go ahead?
Consent = Callable[[str, str], bool]


@dataclass(frozen=True)
class SetupRequest:
    """What host.setup was asked for beyond the defaults."""

    #: The trust root's change (``sign.trust_change``); None: just what deploy.toml's [sign] says.
    trust: signers.Change | None = None
    #: Whether systemd-container may be installed where it is missing (None: never; refused).
    consent: Consent | None = None


def setup_host(host: Remote, cfg: Config, request: SetupRequest | None = None) -> list[str]:
    """Idempotent: the package, the directories, the trust root (rotated as asked) and the
    profile. Everything is checked before the first change. Returns what changed."""
    request = request or SetupRequest()
    layout = Layout(cfg.app.name)
    info = facts.host_info(host.run(trust.host_info(layout.allowed_signers)).stdout)
    check_systemd(host.name, info)
    # Room and squashfs are a new host's checks: a set-up host's trust root is rotated whatever
    # its disk (revoking a leaked key on a full disk is when it is most urgent).
    if not (request.trust is not None and info.set_up and info.trusted):
        check_capacity(host.name, facts.capacity(host.run(system.capacity(PORTABLES_DIR)).stdout))
    current = host.run(files.cat(layout.allowed_signers)).stdout
    rotation = signers.rotate(current, request.trust or sign.trust_change(cfg))
    if not signers.keys(rotation.after):
        raise DeployError(
            f"[{host.name}] would trust no key at all: {layout.allowed_signers} keeps at least one",
            hint="add the new key first (--add-key NEW.pub), then remove the old one",
        )
    changed: list[str] = []
    if not info.has_portablectl:
        install_portablectl(host, layout, info, request.consent)
        changed.append(f"installed {system.PORTABLE_PACKAGE}")
    dirs = [
        TRUST_DIR,
        layout.trust_dir,
        PORTABLES_DIR,
        layout.state_dir,
        layout.releases_dir,
        layout.incoming_dir,
    ]
    present = set(host.run(files.exists(dirs)).stdout.split())
    missing = [d for d in dirs if d not in present]
    if missing:
        host.run(files.mkdir(*missing, mode="0755"))
        changed += [f"created {d}" for d in missing]
    changed += install_trust(host, layout, rotation)
    if profiles.is_own(cfg.deploy.profile):
        path = profiles.host_path(cfg.deploy.profile)
        if host.run(files.cat(path)).stdout != profiles.text(cfg.deploy.profile):
            install_profile(host, cfg.deploy.profile)
            changed.append(f"installed {path}")
    return changed


def check_capacity(host_name: str, capacity: facts.Capacity) -> None:
    """Refuse a host whose kernel cannot mount the images, or with no room for them."""
    if capacity.squashfs is False:
        raise DeployError(
            f"[{host_name}] has no squashfs in its kernel (not in /proc/filesystems, no module)",
            hint="portable images are squashfs: boot a kernel with squashfs, such as "
            "Debian's linux-image-amd64 or linux-image-cloud-amd64",
        )
    free = capacity.free_bytes
    if free is not None and free < MIN_FREE_BYTES:
        raise DeployError(
            f"[{host_name}] has {free // 2**20} MiB free for {PORTABLES_DIR}; "
            f"host.setup needs {MIN_FREE_BYTES // 2**20} MiB",
            hint=f"free space on the file system that holds {PORTABLES_DIR}",
        )


def install_portablectl(
    host: Remote, layout: Layout, info: facts.HostInfo, consent: Consent | None
) -> None:
    """Install systemd-container as root, if CONSENT says so; check that portablectl came."""
    package = system.PORTABLE_PACKAGE
    if consent is None or not consent(host.name, package):
        raise DeployError(
            f"[{host.name}] has no portablectl (package {package})",
            hint=f"rerun with --yes to install it (apt-get install {package} on the host)",
        )
    if info.user != "root":
        raise DeployError(
            f"[{host.name}] installing {package} needs root; connected as {info.user!r}",
            hint=f'set user = "root" for the host, or run apt-get install {package} there',
        )
    result = host.run(system.install_packages(package), check=False, timeout=900)
    if not result.ok:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        raise DeployError(
            f"[{host.name}] apt-get install {package} failed (exit {result.exit_code})"
            + (f": {last[0]}" if last else ""),
            hint="run `apt-get update` on the host (its package lists may be old) and retry",
        )
    check_host(host, layout)


def install_trust(host: Remote, layout: Layout, rotation: signers.Rotation) -> list[str]:
    """Write the rotated trust root in one atomic step (if it changed); what changed."""
    if rotation.after == rotation.before:
        return [f"{f} was not trusted (nothing to remove)" for f in rotation.absent]
    before = rotation.before
    expected = hashlib.sha256(before.encode()).hexdigest() if before.strip() else None
    command = trust.replace_allowed_signers(layout.allowed_signers, rotation.after, expected)
    result = host.run(command, check=False)
    if result.exit_code == trust.TRUST_CHANGED:
        raise DeployError(
            f"[{host.name}] {layout.allowed_signers} changed while host.setup read it",
            hint="another host.setup ran at the same time: run this one again",
        )
    if not result.ok:
        raise RemoteCommandError(host.name, command, result)
    if not before.strip():
        return [f"installed {layout.allowed_signers}"]
    path = layout.allowed_signers
    return (
        [f"trusts key {k.fingerprint} ({path})" for k in rotation.added]
        + [f"no longer trusts key {k.fingerprint}" for k in rotation.removed]
        + [f"{f} was not trusted (nothing to remove)" for f in rotation.absent]
    )


def install_profile(host: Remote, name: str) -> None:
    """Write the tool's own portable profile NAME where portablectl finds it first."""
    host.run(install_profile_command(name))


def install_profile_command(name: str) -> Command:
    path = profiles.host_path(name)
    return files.mkdir(path.rsplit("/", 1)[0], mode="0755").then(
        files.write(path, profiles.text(name), mode="0644")
    )


def profile_problem(host_name: str, profile: str, state: HostState) -> DeployError | None:
    """A profile that is neither the tool's own nor on the host cannot be attached."""
    if profiles.is_own(profile) or state.host_profile is not None:
        return None
    return DeployError(
        f"[{host_name}] has no portable profile {profile!r}",
        hint=f'set [deploy] profile to {profiles.DEFAULT!r} or "default", or install '
        f"{profiles.SEARCH_DIRS[0]}/{profile}/service.conf on the host",
    )


def wanted_profile_digest(profile: str, state: HostState) -> str | None:
    """The digest of the profile a deploy attaches now (the tool's text for its own)."""
    if profiles.is_own(profile):
        return profiles.digest(profiles.text(profile))
    return state.host_profile


def set_up_if_new(host: Remote, cfg: Config) -> list[str]:
    """Set up a host that was never set up (the sandbox on first use); a set-up one is left alone.

    The trust root of a host that is set up is never replaced here, exactly as a deploy never
    replaces it on a real host.
    """
    if check_host(host, Layout(cfg.app.name)).trusted:
        return []
    return setup_host(host, cfg)
