"""host.setup: the package, the disk and kernel checks, and the trust root's rotation.

The allowed_signers text is handled by pure functions (``signers``), the host-side scripts run in
a real ``sh`` here, and ``setup_host`` runs against a small fake host that records what it ran.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portable_deploy import facts, preflight, profiles, sign, signers
from portable_deploy.command import Command
from portable_deploy.commands import system, trust
from portable_deploy.config import AppConfig, BuildConfig, Config, ImageConfig, SignConfig
from portable_deploy.errors import DeployError
from portable_deploy.host import Result

NS = 'namespaces="portable-deploy"'


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _pub(key: Path) -> signers.Key:
    return signers.public_key(Path(f"{key}.pub"), "--add-key")


def _config(root: Path, key: Path) -> Config:
    return Config(
        path=root / "deploy.toml",
        app=AppConfig(name="demo", version="1"),
        build=BuildConfig(),
        image=ImageConfig(tree=None, units=root / "units", dist=root / "dist"),
        sign=SignConfig(key=key, principal="deploy"),
        hosts={},
    )


@pytest.fixture
def key_a(tmp_path: Path) -> Path:
    return _keygen(tmp_path / "key_a")


@pytest.fixture
def key_b(tmp_path: Path) -> Path:
    return _keygen(tmp_path / "key_b")


def _sh(command: Command) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command.render(reveal=True)], capture_output=True, text=True, check=False
    )


# --- signers: the allowed_signers text ---------------------------------------------------------


def test_a_key_fingerprint_is_the_one_ssh_keygen_prints(key_a: Path) -> None:
    """Key.fingerprint equals `ssh-keygen -lf KEY.pub`'s SHA256 field."""
    printed = subprocess.run(
        ["ssh-keygen", "-lf", f"{key_a}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert _pub(key_a).fingerprint == printed


def test_key_of_a_line_skips_principals_options_and_comments() -> None:
    """The key is found after quoted options that hold spaces; comments have none."""
    line = 'deploy,ci namespaces="portable-deploy",valid-after="2024 01" ssh-ed25519 AAAA x y'
    assert signers.key_of(line) == signers.Key("ssh-ed25519", "AAAA")
    assert signers.key_of("# deploy ssh-ed25519 AAAA") is None
    assert signers.key_of("deploy ssh-ed25519 not*base64") is None


def test_rotate_on_a_host_without_a_file_installs_the_configured_text() -> None:
    """No file (or an empty one): the base text as it is, comments kept."""
    base = f"# ours\ndeploy {NS} ssh-ed25519 AAAA\n"
    change = signers.Change(base, tuple(base.splitlines()))
    assert signers.rotate("", change).after == base


def test_rotate_adds_a_key_next_to_the_old_one() -> None:
    """--add-key appends the new key's line and keeps every other line untouched."""
    current = f"# keep me\ndeploy {NS} ssh-ed25519 AAAA\n"
    new = f"deploy {NS} ssh-ed25519 BBBB"
    rotation = signers.rotate(current, signers.Change("", (f"deploy {NS} ssh-ed25519 AAAA", new)))
    assert rotation.after == current + new + "\n"
    assert [k.blob for k in rotation.added] == ["BBBB"]


def test_rotate_adds_a_trusted_key_for_a_new_principal() -> None:
    """A key the host trusts for another principal is trusted for the configured one too: a
    changed [sign] principal reaches the host (the host verifies with -I PRINCIPAL)."""
    current = f"deploy {NS} ssh-ed25519 AAAA\n"
    rotation = signers.rotate(current, signers.Change("", (f"ci {NS} ssh-ed25519 AAAA",)))
    assert rotation.after == f"deploy {NS} ssh-ed25519 AAAA\nci {NS} ssh-ed25519 AAAA\n"
    same = signers.rotate(current, signers.Change("", (f"deploy  {NS}  ssh-ed25519 AAAA",)))
    assert same.after == current and not same.added


def test_rotate_removes_a_key_by_fingerprint_whatever_its_principal() -> None:
    """The lines of a removed key go, under any principal; the others stay."""
    old = signers.Key("ssh-ed25519", "AAAA")
    current = f"deploy {NS} ssh-ed25519 AAAA\nci ssh-ed25519 AAAA\ndeploy {NS} ssh-ed25519 BBBB\n"
    rotation = signers.rotate(current, signers.Change("", (), frozenset({old.fingerprint})))
    assert rotation.after == f"deploy {NS} ssh-ed25519 BBBB\n"
    assert len(rotation.removed) == 2


def test_rotate_with_nothing_to_do_keeps_the_file_byte_for_byte() -> None:
    """A file without a final newline, whose keys are all there, is left as it is."""
    current = f"deploy {NS} ssh-ed25519 AAAA"
    rotation = signers.rotate(current, signers.Change("", (current,), frozenset({"SHA256:x"})))
    assert rotation.after == current
    assert rotation.absent == ("SHA256:x",)


# --- sign.trust_change: what the flags ask, checked before any host -----------------------------


def test_trust_change_adds_a_public_key_for_the_configured_principal(
    tmp_path: Path, key_a: Path, key_b: Path
) -> None:
    """--add-key B.pub: deploy.toml's line, then B's, for [sign] principal in our namespace."""
    change = sign.trust_change(_config(tmp_path, key_a), add=[Path(f"{key_b}.pub")])
    b = _pub(key_b)
    assert change.lines[-1] == f"deploy {NS} {b.type} {b.blob}"
    assert [signers.key_of(line) for line in change.lines] == [_pub(key_a), b]


def test_removing_the_key_deploy_toml_signs_with_needs_force(tmp_path: Path, key_a: Path) -> None:
    """--remove-key of [sign] key's own key is refused without --force, and names --force."""
    cfg = _config(tmp_path, key_a)
    with pytest.raises(DeployError) as refused:
        sign.trust_change(cfg, remove=[f"{key_a}.pub"])
    assert "[sign] trusts that key" in refused.value.message
    assert "--force" in (refused.value.hint or "")
    forced = sign.trust_change(cfg, remove=[f"{key_a}.pub"], force=True)
    assert forced.remove == {_pub(key_a).fingerprint}


def test_remove_key_takes_a_fingerprint_or_a_private_key_next_to_its_pub(
    tmp_path: Path, key_a: Path, key_b: Path
) -> None:
    """SHA256:... as ssh-keygen prints it, and the private key's path, name the same key."""
    cfg = _config(tmp_path, key_a)
    fp = _pub(key_b).fingerprint
    assert sign.trust_change(cfg, remove=[fp]).remove == {fp}
    assert sign.trust_change(cfg, remove=[str(key_b)]).remove == {fp}


@pytest.mark.parametrize("flag", ["add", "remove"])
def test_a_key_that_is_not_a_key_is_refused_with_its_flag(
    tmp_path: Path, key_a: Path, flag: str
) -> None:
    """A missing or garbled key file is one error naming the flag."""
    junk = tmp_path / "junk.pub"
    junk.write_text("hello\n")
    with pytest.raises(DeployError, match=f"--{flag}-key"):
        if flag == "add":
            sign.trust_change(_config(tmp_path, key_a), add=[junk])
        else:
            sign.trust_change(_config(tmp_path, key_a), remove=[str(tmp_path / "nothing")])


def test_a_key_both_added_and_removed_is_refused(tmp_path: Path, key_a: Path, key_b: Path) -> None:
    """--add-key B --remove-key B is a contradiction, refused."""
    with pytest.raises(DeployError, match="both name key"):
        sign.trust_change(
            _config(tmp_path, key_a), add=[Path(f"{key_b}.pub")], remove=[f"{key_b}.pub"]
        )


# --- the commands, rendered and run in a real sh -------------------------------------------------


def test_install_packages_renders_noninteractive_without_recommends() -> None:
    """The package comes with apt-get, no question, no recommended extras; it mutates."""
    command = system.install_packages(system.PORTABLE_PACKAGE)
    assert command.render() == (
        "env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "systemd-container"
    )
    assert command.mutates


def test_capacity_reads_the_nearest_existing_directory(tmp_path: Path) -> None:
    """For a directory not made yet, the free space of its nearest parent; squashfs is answered."""
    out = _sh(system.capacity(str(tmp_path / "not" / "yet"))).stdout
    got = facts.capacity(out)
    assert got.free_bytes is not None
    assert abs(got.free_bytes - _free(tmp_path)) < 64 * 2**20
    assert got.squashfs is not None
    assert not system.capacity("/x").mutates


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


#: system.capacity("/var/lib/portables") as run on sandbox-3 (systemd 252.39, 3 GB disk): before
#: the first image was attached (squashfs a module not loaded yet), and during a deploy.
RECORDED_CAPACITY = ("free_kib=2351544\nsquashfs=module\n", "free_kib=2351464\nsquashfs=loaded\n")


def test_capacity_facts_of_the_sandbox_say_room_and_squashfs() -> None:
    """The recorded answers: about 2.2 GiB free, squashfs mountable before and once loaded."""
    before, during = map(facts.capacity, RECORDED_CAPACITY)
    assert before == facts.Capacity(2351544 * 1024, True)
    assert during == facts.Capacity(2351464 * 1024, True)


def test_capacity_facts_parse_every_answer() -> None:
    """free_kib in KiB to bytes; squashfs loaded or module is yes, no is no, nothing is unknown."""
    assert facts.capacity("free_kib=2048\nsquashfs=module\n") == facts.Capacity(2 * 2**20, True)
    assert facts.capacity("free_kib=\nsquashfs=no\n") == facts.Capacity(None, False)
    assert facts.capacity("") == facts.Capacity(None, None)


def test_replace_allowed_signers_swaps_the_file_in_one_rename(tmp_path: Path) -> None:
    """Absent -> written 0644; then replaced when the expected sha256 matches; no temp left."""
    path = tmp_path / "allowed_signers"
    assert _sh(trust.replace_allowed_signers(str(path), "one\n", None)).returncode == 0
    assert path.read_text() == "one\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    sha = hashlib.sha256(b"one\n").hexdigest()
    assert _sh(trust.replace_allowed_signers(str(path), "two\n", sha)).returncode == 0
    assert path.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["allowed_signers"]


def test_replace_allowed_signers_refuses_a_file_changed_since_it_was_read(tmp_path: Path) -> None:
    """Another writer got there first: exit TRUST_CHANGED and the file is theirs, untouched."""
    path = tmp_path / "allowed_signers"
    path.write_text("theirs\n")
    stale = hashlib.sha256(b"what we read\n").hexdigest()
    result = _sh(trust.replace_allowed_signers(str(path), "ours\n", stale))
    assert result.returncode == trust.TRUST_CHANGED
    assert path.read_text() == "theirs\n"
    assert _sh(trust.replace_allowed_signers(str(path), "ours\n", None)).returncode == (
        trust.TRUST_CHANGED
    )


# --- setup_host against a fake host --------------------------------------------------------------

INFO = "systemd=252\nportablectl={}\nssh_keygen=/usr/bin/ssh-keygen\ntrust={}\nstate={}\nuser={}\n"


@dataclass
class FakeHost:
    """Answers host.setup's commands by the builder that made them; records what ran."""

    portablectl: bool = True
    user: str = "root"
    capacity: str = "free_kib=9999999\nsquashfs=module\n"
    trusted: str = ""
    #: The directories and the tool's profile are in place.
    set_up: bool = False
    name: str = "h"
    dry_run: bool = False
    ran: list[Command] = field(default_factory=list)

    def run(self, command: Command, *, check: bool = True, timeout: float | None = None) -> Result:
        self.ran.append(command)
        source = command.sources[0] if command.sources else ""
        if source == "trust.host_info":
            portablectl = "/usr/bin/portablectl" if self.portablectl else ""
            done = "yes" if self.set_up else "no"
            return Result(INFO.format(portablectl, done, done, self.user), "", 0)
        if source == "system.capacity":
            return Result(self.capacity, "", 0)
        if source == "system.install_packages":
            self.portablectl = True
        if source == "files.cat" and "allowed_signers" in command.render():
            return Result(self.trusted, "", 0)
        if source == "files.cat" and self.set_up:
            return Result(profiles.text(profiles.DEFAULT), "", 0)
        if source == "files.exists" and self.set_up:
            return Result("\n".join(t for t in command.tokens[4:] if isinstance(t, str)), "", 0)
        return Result("", "", 0)

    def mutations(self) -> list[str]:
        return [c.sources[0] for c in self.ran if c.mutates]


def _setup(
    host: FakeHost, cfg: Config, consent: bool | None = None, change: signers.Change | None = None
) -> list[str]:
    ask = None if consent is None else (lambda h, p: consent)
    return preflight.setup_host(host, cfg, preflight.SetupRequest(change, ask))  # type: ignore[arg-type]


def test_a_host_without_portablectl_is_refused_with_yes_and_nothing_changes(
    tmp_path: Path, key_a: Path
) -> None:
    """No consent (no --yes, no terminal): one error naming --yes and the package; no change."""
    host = FakeHost(portablectl=False)
    with pytest.raises(DeployError) as refused:
        _setup(host, _config(tmp_path, key_a), consent=False)
    assert "--yes" in (refused.value.hint or "")
    assert "apt-get install systemd-container" in (refused.value.hint or "")
    assert host.mutations() == []


def test_with_consent_the_package_is_installed_before_anything_else(
    tmp_path: Path, key_a: Path
) -> None:
    """--yes: apt-get runs first, then the directories and the trust root."""
    host = FakeHost(portablectl=False)
    changed = _setup(host, _config(tmp_path, key_a), consent=True)
    assert host.mutations()[:3] == [
        "system.install_packages",
        "files.mkdir",
        "trust.replace_allowed_signers",
    ]
    assert changed[0] == "installed systemd-container"


def test_installing_needs_root(tmp_path: Path, key_a: Path) -> None:
    """Connected as another user, the package is not attempted: the error says root."""
    host = FakeHost(portablectl=False, user="deploy")
    with pytest.raises(DeployError, match="needs root"):
        _setup(host, _config(tmp_path, key_a), consent=True)
    assert host.mutations() == []


@pytest.mark.parametrize(
    ("capacity", "error"),
    [
        ("free_kib=1000\nsquashfs=module\n", "MiB free"),
        ("free_kib=9999999\nsquashfs=no\n", "no squashfs"),
    ],
)
def test_a_host_without_room_or_squashfs_is_refused_before_any_change(
    tmp_path: Path, key_a: Path, capacity: str, error: str
) -> None:
    """Under 200 MiB free, or a kernel without squashfs: refused, even with --yes, no change."""
    host = FakeHost(portablectl=False, capacity=capacity)
    with pytest.raises(DeployError, match=error):
        _setup(host, _config(tmp_path, key_a), consent=True)
    assert host.mutations() == []


def test_removing_the_last_key_is_refused_before_any_change(tmp_path: Path, key_a: Path) -> None:
    """--remove-key --force of the only trusted key would leave none: refused, no change."""
    cfg = _config(tmp_path, key_a)
    host = FakeHost(trusted=sign.allowed_signers_text(cfg))
    change = sign.trust_change(cfg, remove=[f"{key_a}.pub"], force=True)
    with pytest.raises(DeployError, match="would trust no key"):
        _setup(host, cfg, change=change)
    assert host.mutations() == []


def test_rotation_writes_once_with_the_sha256_it_read(
    tmp_path: Path, key_a: Path, key_b: Path
) -> None:
    """--add-key on a set-up host: one atomic replace, conditioned on the file it read."""
    cfg = _config(tmp_path, key_a)
    current = sign.allowed_signers_text(cfg)
    host = FakeHost(trusted=current, set_up=True)
    changed = _setup(host, cfg, change=sign.trust_change(cfg, add=[Path(f"{key_b}.pub")]))
    [write] = [c for c in host.ran if c.sources == ("trust.replace_allowed_signers",)]
    assert write.render().endswith(hashlib.sha256(current.encode()).hexdigest())
    assert changed == [
        f"trusts key {_pub(key_b).fingerprint} (/etc/portable-deploy/demo/allowed_signers)"
    ]


def test_a_set_up_host_is_left_alone(tmp_path: Path, key_a: Path) -> None:
    """Everything in place: no mutating command, nothing reported."""
    cfg = _config(tmp_path, key_a)
    host = FakeHost(trusted=sign.allowed_signers_text(cfg), set_up=True)
    assert _setup(host, cfg) == []
    assert host.mutations() == []


def test_a_set_up_hosts_key_is_removed_whatever_its_disk(
    tmp_path: Path, key_a: Path, key_b: Path
) -> None:
    """Revoking a key on a set-up host does not wait for room: the capacity checks are a new
    host's, and a full disk is no reason to keep trusting a leaked key."""
    cfg = _config(tmp_path, key_a)
    both = sign.allowed_signers_text(cfg) + f"deploy {NS} {Path(f'{key_b}.pub').read_text()}"
    host = FakeHost(trusted=both, set_up=True, capacity="free_kib=1000\nsquashfs=module\n")
    changed = _setup(host, cfg, change=sign.trust_change(cfg, remove=[f"{key_b}.pub"]))
    assert host.mutations() == ["trust.replace_allowed_signers"]
    assert changed == [f"no longer trusts key {_pub(key_b).fingerprint}"]
