"""A release as this machine knows it: built, signed, and how the pipeline is asked to switch it.

These are the types that the steps, the host preflight and the pipeline all use, plus the two
local steps (build and sign), which need no host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from . import image, sign
from .config import Config, check_sources, resolve_version
from .errors import DeployError
from .image import Artifact
from .manifest import Manifest


@dataclass(frozen=True)
class Options:
    """How a switch (deploy, rollback, reattach) may act."""

    dry_run: bool = False
    restart_sockets: bool = False
    break_lock: bool = False


@dataclass(frozen=True)
class Signed:
    """A built release with its manifest signature, ready to upload."""

    artifact: Artifact
    signature: Path

    @property
    def manifest(self) -> Manifest:
        return self.artifact.manifest


class Where(StrEnum):
    """Where the host holds a release's files while they are checked."""

    #: Image, manifest and signature are in the staging directory (just uploaded).
    STAGED = "staged"
    #: Manifest and signature are staged; the host already had the same image in place.
    STAGED_MANIFEST = "staged-manifest"
    #: Everything is installed (a kept release, checked again before a rollback).
    INSTALLED = "installed"


def release_name(app: str, version_or_release: str) -> str:
    """``VERSION`` or ``NAME_VERSION`` (as users type them after --to/--release) -> ``NAME_VERSION``."""
    prefix = f"{app}_"
    return (
        version_or_release if version_or_release.startswith(prefix) else prefix + version_or_release
    )


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
    release = release_name(cfg.app.name, resolve_version(cfg))
    manifest_path = cfg.image.dist / f"{release}.manifest.json"
    image_path = cfg.image.dist / f"{release}.raw"
    for path in (image_path, manifest_path):
        if not path.exists():
            raise DeployError(f"{path} not found", hint="run `invoke build` first")
    manifest = Manifest.from_json(manifest_path.read_text(), str(manifest_path))
    return Artifact(image_path, manifest_path, manifest)


def local_release(cfg: Config) -> Signed:
    """The release already built and signed in dist/ (for `upload` and friends run on their own);
    its image is checked against its manifest (``check_local``)."""
    artifact = local_release_unsigned(cfg)
    sig = artifact.manifest_path.with_name(artifact.manifest_path.name + ".sig")
    if not sig.exists():
        raise DeployError(f"{sig} not found", hint="run `invoke sign` first")
    signed = Signed(artifact, sig)
    check_local(signed)
    return signed


def check_local(signed: Signed) -> None:
    """The image in dist/ is the one its (signed) manifest names: checked here before any host
    is touched, so that a host whose check finds another sha256 was sent damaged bytes."""
    local = image.file_sha256(signed.artifact.image)[0]
    if local != signed.manifest.image_sha256:
        raise DeployError(
            f"{signed.artifact.image} is not the image its manifest names "
            f"(sha256 {local[:16]}..., the manifest says {signed.manifest.image_sha256[:16]}...)",
            hint="build and sign again: `invoke build sign`",
        )
