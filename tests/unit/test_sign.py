from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from portable_deploy.commands.layout import SIGNATURE_NAMESPACE
from portable_deploy.config import AppConfig, BuildConfig, Config, ImageConfig, SignConfig
from portable_deploy.errors import DeployError
from portable_deploy.image import Artifact
from portable_deploy.manifest import Manifest
from portable_deploy.sign import allowed_signers_text, sign, verify


def _keygen(path: Path, comment: str = "deploy") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _config(root: Path, key: Path | None, allowed_signers: Path | None = None) -> Config:
    return Config(
        path=root / "deploy.toml",
        app=AppConfig(name="demo", version="1.0"),
        build=BuildConfig(),
        image=ImageConfig(tree=None, units=root / "units", dist=root / "dist"),
        sign=SignConfig(key=key, allowed_signers=allowed_signers, principal="deploy"),
        hosts={},
    )


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """An unencrypted ed25519 signing key (and its .pub)."""
    return _keygen(tmp_path / "signing_key")


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    """A release in dist/: an image file and a manifest that names its sha256."""
    dist = tmp_path / "dist"
    dist.mkdir()
    data = b"not really squashfs, but bytes to hash\n" * 100
    manifest = Manifest(
        name="demo",
        version="1.0",
        image_sha256=hashlib.sha256(data).hexdigest(),
        image_size=len(data),
        compression="zstd",
        git_commit=None,
        git_dirty=False,
        files={"usr/bin/demo": "sha256:" + "a" * 64},
        units=("demo.service",),
    )
    image = dist / manifest.image_name
    image.write_bytes(data)
    path = dist / manifest.manifest_name
    path.write_text(manifest.to_json())
    return Artifact(image=image, manifest_path=path, manifest=manifest)


@pytest.fixture
def signed(tmp_path: Path, key: Path, artifact: Artifact) -> tuple[Path, Path]:
    """The artifact signed with ``key``: (allowed_signers file, signature)."""
    cfg = _config(tmp_path, key)
    sig = sign(cfg, artifact)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed_signers_text(cfg))
    return allowed, sig


def test_good_signature_verifies(signed: tuple[Path, Path], artifact: Artifact) -> None:
    """A manifest signed with the key verifies and parses, and the image matches it."""
    allowed, sig = signed
    assert sig == artifact.manifest_path.with_name("demo_1.0.manifest.json.sig")
    got = verify(allowed, "deploy", artifact.manifest_path, sig, artifact.image)
    assert got == artifact.manifest


def test_tampered_manifest_is_refused(signed: tuple[Path, Path], artifact: Artifact) -> None:
    """A manifest changed after signing fails the signature check, saying so."""
    allowed, sig = signed
    text = artifact.manifest_path.read_text().replace('"version": "1.0"', '"version": "6.6"')
    artifact.manifest_path.write_text(text)
    with pytest.raises(DeployError) as info:
        verify(allowed, "deploy", artifact.manifest_path, sig, None)
    assert info.value.message.startswith(f"signature check failed for {artifact.manifest_path}: ")
    assert "incorrect signature" in info.value.message
    assert "changed after it was signed" in info.value.message


def test_tampered_image_is_refused(signed: tuple[Path, Path], artifact: Artifact) -> None:
    """An image whose sha256 differs from the signed manifest's is refused with both hashes."""
    allowed, sig = signed
    with artifact.image.open("ab") as f:
        f.write(b"x")
    actual = hashlib.sha256(artifact.image.read_bytes()).hexdigest()
    with pytest.raises(DeployError) as info:
        verify(allowed, "deploy", artifact.manifest_path, sig, artifact.image)
    assert info.value.message == (
        f"image {artifact.image} does not match the signed manifest "
        f"(sha256 {actual}, manifest says {artifact.manifest.image_sha256})"
    )


def test_signature_by_another_key_is_refused(
    tmp_path: Path, signed: tuple[Path, Path], artifact: Artifact
) -> None:
    """A valid signature made by a key the allowed_signers does not list is refused."""
    allowed, _ = signed
    other = _keygen(tmp_path / "other_key", "mallory")
    sig = sign(_config(tmp_path, other), artifact)
    with pytest.raises(DeployError) as info:
        verify(allowed, "deploy", artifact.manifest_path, sig, artifact.image)
    assert "signature check failed" in info.value.message
    assert f"which {allowed} does not list" in info.value.message


def test_signature_for_another_principal_is_refused(
    signed: tuple[Path, Path], artifact: Artifact
) -> None:
    """A signature by a trusted key is refused when a different principal is required."""
    allowed, sig = signed
    with pytest.raises(DeployError, match="principal deploy, but principal ops is required"):
        verify(allowed, "ops", artifact.manifest_path, sig, None)


def test_signature_in_another_namespace_is_refused(
    signed: tuple[Path, Path], artifact: Artifact, key: Path
) -> None:
    """A signature of the same bytes made for another namespace does not count."""
    allowed, sig = signed
    sig.unlink()
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "git", str(artifact.manifest_path)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(DeployError, match="namespace does not match"):
        verify(allowed, "deploy", artifact.manifest_path, sig, None)


def test_sign_replaces_an_old_signature(tmp_path: Path, key: Path, artifact: Artifact) -> None:
    """Signing again overwrites an existing .sig instead of stopping at ssh-keygen's prompt."""
    sig = artifact.manifest_path.with_name(artifact.manifest_path.name + ".sig")
    sig.write_text("stale\n")
    assert sign(_config(tmp_path, key), artifact) == sig
    assert sig.read_text().startswith("-----BEGIN SSH SIGNATURE-----")


def test_missing_key_setting_explains_how_to_make_one(tmp_path: Path, artifact: Artifact) -> None:
    """With no [sign] key, the error hints at the ssh-keygen command and the config key."""
    with pytest.raises(DeployError) as info:
        sign(_config(tmp_path, None), artifact)
    assert info.value.message == "no signing key configured"
    assert info.value.hint is not None
    assert "ssh-keygen -t ed25519 -N '' -C deploy -f " in info.value.hint
    assert "set [sign] key in deploy.toml" in info.value.hint


def test_missing_key_file_names_the_path(tmp_path: Path, artifact: Artifact) -> None:
    """A configured key that does not exist is named, with the command that creates it there."""
    path = tmp_path / "keys" / "deploy_key"
    with pytest.raises(DeployError) as info:
        sign(_config(tmp_path, path), artifact)
    assert info.value.message == f"signing key {path} not found"
    assert f"ssh-keygen -t ed25519 -N '' -C deploy -f {path}" in (info.value.hint or "")


def test_allowed_signers_line_is_made_from_the_public_key(tmp_path: Path, key: Path) -> None:
    """Without [sign] allowed_signers, one line: principal, namespace restriction, public key."""
    keytype, blob = Path(f"{key}.pub").read_text().split()[:2]
    assert allowed_signers_text(_config(tmp_path, key)) == (
        f'deploy namespaces="{SIGNATURE_NAMESPACE}" {keytype} {blob}\n'
    )


def test_configured_allowed_signers_is_used_as_is(tmp_path: Path, key: Path) -> None:
    """[sign] allowed_signers is returned verbatim."""
    allowed = tmp_path / "team_signers"
    allowed.write_text("alice ssh-ed25519 AAAA\nbob ssh-ed25519 BBBB\n")
    cfg = _config(tmp_path, key, allowed)
    assert allowed_signers_text(cfg) == "alice ssh-ed25519 AAAA\nbob ssh-ed25519 BBBB\n"


def test_sign_checks_the_key_against_configured_allowed_signers(
    tmp_path: Path, key: Path, artifact: Artifact
) -> None:
    """Signing fails early when the configured allowed_signers would not trust the key."""
    other = _keygen(tmp_path / "other_key")
    allowed = tmp_path / "team_signers"
    allowed.write_text(allowed_signers_text(_config(tmp_path, other)))
    cfg = dataclasses.replace(_config(tmp_path, key), sign=SignConfig(key, allowed, "deploy"))
    with pytest.raises(DeployError, match=f"which {allowed} does not list"):
        sign(cfg, artifact)


def test_sign_failure_passes_on_ssh_keygens_reason(
    tmp_path: Path, key: Path, artifact: Artifact
) -> None:
    """When ssh-keygen cannot sign (here: a .pub of another key), its own reason is shown."""
    other = _keygen(tmp_path / "other_key")
    Path(f"{key}.pub").write_text(Path(f"{other}.pub").read_text())
    with pytest.raises(DeployError) as info:
        sign(_config(tmp_path, key), artifact)
    assert info.value.message.startswith(f"signing demo_1.0.manifest.json with {key} failed: ")
    assert "doesn't match private" in info.value.message
    assert f"ssh-keygen -Y sign -f {key} -n portable-deploy" in (info.value.hint or "")
