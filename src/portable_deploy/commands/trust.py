"""Checks a release on the host itself before anything changes: signature, then image hash."""

from __future__ import annotations

from ..command import Command, builder, sh_args
from .layout import SIGNATURE_NAMESPACE, STATE_ROOT


@builder
def verify_signature(
    manifest: str, signature: str, principal: str, allowed_signers: str
) -> Command:
    """``ssh-keygen -Y verify`` against the app's own allowed_signers on the host (host.setup)."""
    return sh_args(
        'ssh-keygen -Y verify -f "$1" -I "$2" -n "$3" -s "$4" < "$5"',
        allowed_signers,
        principal,
        SIGNATURE_NAMESPACE,
        signature,
        manifest,
    )


#: Exit status of ``image_matches_manifest`` when the manifest names another release.
OTHER_RELEASE = 3


@builder
def image_matches_manifest(image: str, manifest: str, release: str) -> Command:
    """The (already verified) manifest is RELEASE's (exit ``OTHER_RELEASE`` if not: a signed
    manifest of another release staged under this name), then the image's hash is in it."""
    return sh_args(
        f'grep -qF "\\"release\\": \\"$3\\"" "$2" || exit {OTHER_RELEASE}; '
        'h=$(sha256sum "$1" | cut -d" " -f1) && echo "$h" && grep -qF "\\"image_sha256\\": \\"$h\\"" "$2"',
        image,
        manifest,
        release,
    )


#: Exit status of ``check_release`` when the image's sha256 is not the signed manifest's (it
#: prints the sha256 it found).
NOT_SIGNED_IMAGE = 1
#: Exit status of ``check_release`` when the signature does not verify.
BAD_SIGNATURE = 20
#: Exit status of ``check_release`` with ``show=True`` when the manifest is not on the host.
NO_MANIFEST = 21
#: Printed by ``check_release`` with ``show=True`` between the manifest and the checks' output.
CHECKED = "--- checked by portable-deploy ---"


@builder
def check_release(
    manifest: str,
    signature: str,
    principal: str,
    allowed_signers: str,
    image: str,
    release: str,
    show: bool = False,
) -> Command:
    """Both host-side checks in one round trip: the signature (exit ``BAD_SIGNATURE``), then
    that the manifest is RELEASE's (exit ``OTHER_RELEASE``) and holds the image's sha256 (which
    it prints; exit 1 if not). SHOW prints the manifest first, then ``CHECKED`` (exit
    ``NO_MANIFEST`` if there is none), so that a rollback reads and checks its target at once."""
    first = f'if [ "$7" = show ]; then cat "$5" || exit {NO_MANIFEST}; echo; echo "{CHECKED}"; fi; '
    return sh_args(
        first + 'ssh-keygen -Y verify -f "$1" -I "$2" -n "$3" -s "$4" < "$5" >/dev/null '
        f"|| exit {BAD_SIGNATURE}; "
        f'grep -qF "\\"release\\": \\"$8\\"" "$5" || exit {OTHER_RELEASE}; '
        'h=$(sha256sum "$6" | cut -d" " -f1) && echo "$h" && '
        'grep -qF "\\"image_sha256\\": \\"$h\\"" "$5"',
        allowed_signers,
        principal,
        SIGNATURE_NAMESPACE,
        signature,
        manifest,
        image,
        "show" if show else "",
        release,
    )


#: Exit status of ``replace_allowed_signers`` when the file is no longer what was read.
TRUST_CHANGED = 3


@builder
def replace_allowed_signers(path: str, content: str, expected_sha256: str | None) -> Command:
    """Install the trust root in one rename, so a reader sees the old file or the new one and
    never a moment without a key: written and synced next to it, then moved over it. Only if
    the file is still what was read (its sha256; None: absent or empty), else exit
    ``TRUST_CHANGED`` with nothing changed (another host.setup rotated it meanwhile)."""
    return sh_args(
        'umask 077; cur=none; [ -s "$1" ] && { cur=$(sha256sum < "$1" | cut -d" " -f1) || exit 1; }; '
        f'[ "$cur" = "$3" ] || exit {TRUST_CHANGED}; t="$1.tmp.$$"; '
        'if printf %s "$2" > "$t" && chmod 0644 "$t" && sync "$t" && mv -f "$t" "$1"; '
        'then sync "${1%/*}"; else rm -f "$t"; exit 1; fi',
        path,
        content,
        expected_sha256 or "none",
        mutates=True,
    )


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
def host_info(allowed_signers: str) -> Command:
    """What host.setup and deploy need to know about a host (and the app's trust root)."""
    return sh_args(HOST_INFO_SCRIPT, allowed_signers, STATE_ROOT)
