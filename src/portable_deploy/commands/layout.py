"""Where things live on a host. One place, so every builder and the README agree."""

from __future__ import annotations

from dataclasses import dataclass

PORTABLES_DIR = "/var/lib/portables"
STATE_ROOT = "/var/lib/portable-deploy"
#: Each app's trust root is TRUST_DIR/APP/allowed_signers: the keys of one app never sign another.
TRUST_DIR = "/etc/portable-deploy"
#: The signature namespace: a signature made for anything else never verifies as a release.
SIGNATURE_NAMESPACE = "portable-deploy"
ATTACHED_DIR = "/etc/systemd/system.attached"


@dataclass(frozen=True)
class Layout:
    """The paths one app uses on a host."""

    app: str

    @property
    def trust_dir(self) -> str:
        return f"{TRUST_DIR}/{self.app}"

    @property
    def allowed_signers(self) -> str:
        """The app's trust root: installed by host.setup, never touched by a deploy."""
        return f"{self.trust_dir}/allowed_signers"

    @property
    def state_dir(self) -> str:
        return f"{STATE_ROOT}/{self.app}"

    @property
    def releases_dir(self) -> str:
        return f"{self.state_dir}/releases"

    @property
    def incoming_dir(self) -> str:
        return f"{self.state_dir}/incoming"

    @property
    def partial_dir(self) -> str:
        """The delta stream of an upload that did not finish: kept across locks, so the next
        upload of the same recipe resumes it (one at most)."""
        return f"{self.state_dir}/partial"

    def partial(self, release: str, recipe_id: str) -> str:
        return f"{self.partial_dir}/{release}.{recipe_id}.delta"

    @property
    def secrets_dir(self) -> str:
        """Root-only: one directory per secret set (encrypted credentials, environment files)."""
        return f"{self.state_dir}/secrets"

    def secret_set(self, set_id: str) -> str:
        return f"{self.secrets_dir}/{set_id}"

    def incoming_secret_set(self, set_id: str) -> str:
        return f"{self.secrets_dir}/.incoming-{set_id}"

    @property
    def secrets_salt(self) -> str:
        """The key of the secrets' digests on this host: they can be compared, not reversed."""
        return f"{self.secrets_dir}/salt"

    @property
    def heartbeat(self) -> str:
        """The dead-man switch's heartbeat: touched by the deployer; absent when not armed."""
        return f"{self.state_dir}/deadman.heartbeat"

    @property
    def deadman_script(self) -> str:
        """The dead-man switch's revert script (root-only), run by its transient timer."""
        return f"{self.state_dir}/deadman.sh"

    @property
    def lock(self) -> str:
        return f"{self.state_dir}/deploy.lock"

    @property
    def audit_log(self) -> str:
        return f"{self.state_dir}/audit.jsonl"

    def image(self, release: str) -> str:
        return f"{PORTABLES_DIR}/{release}.raw"

    def incoming_image(self, release: str) -> str:
        return f"{self.incoming_dir}/{release}.raw"

    def manifest(self, release: str) -> str:
        return f"{self.releases_dir}/{release}.manifest.json"

    def index(self, release: str) -> str:
        """The release image's chunk index (``chunks.Index``), what delta uploads copy by."""
        return f"{self.releases_dir}/{release}.index"

    def incoming_index(self, release: str) -> str:
        return f"{self.incoming_dir}/{release}.index"

    def signature(self, release: str) -> str:
        return f"{self.manifest(release)}.sig"
