"""Signing manifests with an SSH key (``ssh-keygen -Y sign``) and checking them locally.

Hosts check the same signature with ``ssh-keygen -Y verify`` and an allowed_signers file; the
image is bound to the signed manifest by its sha256. ``verify`` here is the local twin of that
check: ``sign`` runs it right after signing, so a key the hosts would refuse is caught early.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import signers
from .commands.layout import SIGNATURE_NAMESPACE
from .config import Config
from .errors import DeployError
from .image import Artifact, file_sha256
from .localenv import tool_env
from .manifest import Manifest


def keygen_hint(key: Path) -> str:
    return (
        f"make one with `ssh-keygen -t ed25519 -N '' -C deploy -f {key}` "
        "and set [sign] key in deploy.toml to its path"
    )


def generate_key(key: Path) -> None:
    """Make KEY (and KEY.pub): the command ``keygen_hint`` tells users to run (``invoke init``)."""
    key.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(key)]
    proc = _run(argv)
    if proc.returncode != 0 or not key.is_file():
        raise DeployError(
            f"making the signing key {key} failed: {_reason(proc)}",
            f"try it by hand: {shlex.join(argv)}",
        )


def sign(cfg: Config, artifact: Artifact) -> Path:
    """Sign the artifact's manifest; returns MANIFEST.sig after checking it like a host would."""
    key = signing_key(cfg)
    manifest = artifact.manifest_path
    sig = manifest.with_name(manifest.name + ".sig")
    # ssh-keygen asks before overwriting a signature; never let it ask.
    sig.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", SIGNATURE_NAMESPACE, str(manifest)]
    proc = _run(argv)
    if proc.returncode != 0 or not sig.is_file():
        raise DeployError(
            f"signing {manifest.name} with {key} failed: {_reason(proc)}",
            f"try it by hand: {shlex.join(argv)}",
        )
    # Check it the way hosts will, against what they are told to trust.
    configured = cfg.sign.allowed_signers
    with tempfile.TemporaryDirectory(prefix="portable-deploy-sign-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text(allowed_signers_text(cfg))
        shown = str(configured) if configured else f"the line made from {key}.pub"
        _verify(allowed, shown, cfg.sign.principal, manifest, sig, artifact.image)
    return sig


def signing_key(cfg: Config) -> Path:
    """The configured private key, which must exist."""
    key = cfg.sign.key
    if key is None:
        raise DeployError(
            "no signing key configured", keygen_hint(cfg.root / ".deploy" / "signing_key")
        )
    if not key.is_file():
        raise DeployError(f"signing key {key} not found", keygen_hint(key))
    return key


def allowed_signers_text(cfg: Config) -> str:
    """What hosts trust: [sign] allowed_signers, or one line made from the key's .pub file."""
    if cfg.sign.allowed_signers is not None:
        try:
            return cfg.sign.allowed_signers.read_text()
        except OSError as e:
            raise DeployError(
                f"[sign] allowed_signers: cannot read {cfg.sign.allowed_signers}: {e.strerror}",
                "fix the path, or remove the key to derive the file from [sign] key",
            ) from None
    key = signing_key(cfg)
    pub = key.with_name(key.name + ".pub")
    try:
        fields = pub.read_text().split()
    except OSError:
        raise DeployError(
            f"public key {pub} not found (needed for the hosts' allowed_signers)",
            f"recreate it: ssh-keygen -y -f {key} > {pub}",
        ) from None
    if len(fields) < 2:
        raise DeployError(
            f"{pub} is not an SSH public key", f"recreate it: ssh-keygen -y -f {key} > {pub}"
        )
    return f'{cfg.sign.principal} namespaces="{SIGNATURE_NAMESPACE}" {fields[0]} {fields[1]}\n'


def trust_change(
    cfg: Config, add: Sequence[Path] = (), remove: Sequence[str] = (), force: bool = False
) -> signers.Change:
    """What `host.setup` makes hosts trust: deploy.toml's keys, plus ADD (public key files,
    trusted for [sign] principal), minus REMOVE (key files or fingerprints).

    Checked here, before any host is touched: a key that deploy.toml's [sign] trusts (the key
    releases are signed with) is removed only with FORCE, since the next deploy would be refused
    and the next plain host.setup would trust it again; a key is not both added and removed.
    """
    configured = allowed_signers_text(cfg)
    added = [signers.public_key(path, "--add-key") for path in add]
    lines = [
        *configured.splitlines(),
        *(signers.line(cfg.sign.principal, SIGNATURE_NAMESPACE, k) for k in added),
    ]
    gone = {signers.fingerprint(ref, "--remove-key") for ref in remove}
    both = sorted(gone & {k.fingerprint for k in added})
    if both:
        raise DeployError(
            f"--add-key and --remove-key both name key {both[0]}", "name each key once"
        )
    kept = sorted(gone & {k.fingerprint for k in signers.keys(configured)})
    if kept and not force:
        where = str(cfg.sign.allowed_signers or cfg.sign.key)
        raise DeployError(
            f"--remove-key {kept[0]}: deploy.toml's [sign] trusts that key ({where}); "
            "releases signed with it would be refused",
            hint="switch [sign] key to the new key first (then --remove-key the old one), "
            "or pass --force to remove it anyway (e.g. a leaked key)",
        )
    return signers.Change(configured, tuple(lines), frozenset(gone))


def verify(
    allowed_signers: Path,
    principal: str,
    manifest_path: Path,
    sig_path: Path,
    image_path: Path | None,
) -> Manifest:
    """Check the manifest's signature and, if given, the image's sha256 against the manifest."""
    return _verify(
        allowed_signers, str(allowed_signers), principal, manifest_path, sig_path, image_path
    )


def _verify(
    allowed_signers: Path,
    shown: str,
    principal: str,
    manifest_path: Path,
    sig_path: Path,
    image_path: Path | None,
) -> Manifest:
    for path, what in ((manifest_path, "manifest"), (sig_path, "signature")):
        if not path.is_file():
            raise DeployError(
                f"{what} {path} not found", "build and sign the release: invoke build sign"
            )
    # Check and parse the same bytes: the file may change between two reads.
    data = manifest_path.read_bytes()
    argv = ["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", principal]
    argv += ["-n", SIGNATURE_NAMESPACE, "-s", str(sig_path)]
    proc = _run(argv, stdin=data)
    if proc.returncode != 0:
        why = _diagnose(allowed_signers, shown, principal, sig_path, data, proc)
        raise DeployError(
            f"signature check failed for {manifest_path}: {why}",
            "rebuild and sign with `invoke build sign`; if the key changed, update the "
            "allowed_signers the hosts trust",
        )
    manifest = Manifest.from_json(data.decode(errors="replace"), str(manifest_path))
    if image_path is not None:
        if not image_path.is_file():
            raise DeployError(f"image {image_path} not found", "build the release: invoke build")
        actual = file_sha256(image_path)[0]
        if actual != manifest.image_sha256:
            raise DeployError(
                f"image {image_path} does not match the signed manifest "
                f"(sha256 {actual}, manifest says {manifest.image_sha256})",
                "the image was changed or replaced after the build; rebuild it: invoke build sign",
            )
    return manifest


def _diagnose(
    allowed_signers: Path,
    shown: str,
    principal: str,
    sig_path: Path,
    data: bytes,
    failed: subprocess.CompletedProcess[bytes],
) -> str:
    """Why ``-Y verify`` said no: ssh-keygen says only "Could not verify" for a foreign key."""
    check = _run(
        ["ssh-keygen", "-Y", "check-novalidate", "-n", SIGNATURE_NAMESPACE, "-s", str(sig_path)],
        data,
    )
    if check.returncode != 0:
        reason = _reason(check)
        if "incorrect signature" in reason:
            return f"{reason} (the manifest changed after it was signed)"
        return reason
    key = check.stdout.decode(errors="replace").strip().rpartition(" key ")[2] or "?"
    found = _run(
        ["ssh-keygen", "-Y", "find-principals", "-s", str(sig_path), "-f", str(allowed_signers)]
    )
    principals = found.stdout.decode(errors="replace").split() if found.returncode == 0 else []
    if principals and principal not in principals:
        return (
            f"signed by key {key} of principal {', '.join(principals)}, "
            f"but principal {principal} is required"
        )
    if not principals and (found.returncode == 0 or "No principal matched" in _reason(found)):
        return f"signed by key {key}, which {shown} does not list"
    return f"signed by key {key}: {_reason(failed)}"


def _run(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            check=False,
            env=tool_env(),
        )
    except FileNotFoundError:
        raise DeployError(
            "ssh-keygen not found", "install OpenSSH: apt-get install openssh-client"
        ) from None


def _reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    """ssh-keygen's own explanation: the last meaningful line it wrote."""
    text = (proc.stderr + proc.stdout).decode(errors="replace")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("@") and not line.startswith("Signing file")
    ]
    return " ".join(lines) if lines else f"ssh-keygen exited with {proc.returncode}"
