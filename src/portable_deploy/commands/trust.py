"""Checks a release on the host itself before anything changes: signature, then image hash."""

from __future__ import annotations

from ..command import Command, builder, sh_args
from .files import write
from .layout import ALLOWED_SIGNERS, SIGNATURE_NAMESPACE, STATE_ROOT


@builder
def verify_signature(manifest: str, signature: str, principal: str) -> Command:
    """``ssh-keygen -Y verify`` against the host's own allowed_signers (installed by host.setup)."""
    return sh_args(
        'ssh-keygen -Y verify -f "$1" -I "$2" -n "$3" -s "$4" < "$5"',
        ALLOWED_SIGNERS,
        principal,
        SIGNATURE_NAMESPACE,
        signature,
        manifest,
    )


@builder
def image_matches_manifest(image: str, manifest: str) -> Command:
    """Hash the image on the host and find that hash in the (already verified) manifest."""
    return sh_args(
        'h=$(sha256sum "$1" | cut -d" " -f1) && echo "$h" && grep -qF "\\"image_sha256\\": \\"$h\\"" "$2"',
        image,
        manifest,
    )


@builder
def install_allowed_signers(content: str) -> Command:
    return write(ALLOWED_SIGNERS, content, mode="0644")


#: Prints KEY=VALUE facts about the host; $1 is the allowed_signers path, $2 the state root.
HOST_INFO_SCRIPT = (
    'echo "systemd=$(systemctl --version | head -n1 | cut -d" " -f2)"; '
    'echo "portablectl=$(command -v portablectl || true)"; '
    'echo "ssh_keygen=$(command -v ssh-keygen || true)"; '
    '[ -f "$1" ] && echo "trust=yes" || echo "trust=no"; '
    '[ -d "$2" ] && echo "state=yes" || echo "state=no"; '
    'echo "user=$(id -un)"'
)


@builder
def host_info() -> Command:
    """What host.setup and deploy need to know about a host, in one round trip."""
    return sh_args(HOST_INFO_SCRIPT, ALLOWED_SIGNERS, STATE_ROOT)
