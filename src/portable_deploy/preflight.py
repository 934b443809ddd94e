"""Before any step: can this host run portable services, is it set up, and what runs there now.

``read_state`` reads everything a deploy needs from the host in one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import credentials, facts, profiles, sign
from .command import Command
from .commands import files, trust
from .commands.layout import PORTABLES_DIR, STATE_ROOT, TRUST_DIR, Layout
from .commands.state import SECTION, host_state
from .config import Config
from .errors import DeployError
from .facts import AuditRecord
from .host import Remote
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


def read_state(host: Remote, layout: Layout, profile: str = profiles.DEFAULT) -> HostState:
    """The host's facts in one round trip; refuses hosts that were never set up."""
    out = host.run(host_state(layout, layout.allowed_signers, STATE_ROOT, profile)).stdout
    sections = facts.state_sections(out, SECTION)
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


def setup_host(host: Remote, cfg: Config) -> list[str]:
    """Idempotent: make the directories and install the trust root. Returns what changed."""
    layout = Layout(cfg.app.name)
    check_host(host, layout)
    changed: list[str] = []
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
    wanted = sign.allowed_signers_text(cfg)
    if host.run(files.cat(layout.allowed_signers)).stdout != wanted:
        host.run(trust.install_allowed_signers(layout.allowed_signers, wanted))
        changed.append(f"installed {layout.allowed_signers}")
    if profiles.is_own(cfg.deploy.profile):
        path = profiles.host_path(cfg.deploy.profile)
        if host.run(files.cat(path)).stdout != profiles.text(cfg.deploy.profile):
            install_profile(host, cfg.deploy.profile)
            changed.append(f"installed {path}")
    return changed


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
