"""Everything a deploy needs to know about a host, read in one round trip.

Each remote command costs a few hundred milliseconds on a small VPS (sshd forks a session and a
shell), so the read-only facts a deploy starts from are gathered by one script that prints them
in sections; ``facts.state_sections`` splits them again.
"""

from __future__ import annotations

from .. import profiles
from ..command import Command, builder, sh_args
from ..credentials import DROPIN, DROPIN_ROOT
from .layout import ATTACHED_DIR, Layout
from .trust import HOST_INFO_SCRIPT

SECTION = "### portable-deploy:"

# The live release is read from the drop-in that attach writes for each unit (``RootImage=``):
# ``portablectl list`` cannot tell, since an old image whose sidecar still runs from it is
# listed as "running" too. The manifest printed is that of the first unit's image; the caller
# checks it against the majority of units.
_SCRIPT = (
    f'echo "{SECTION}info"; {HOST_INFO_SCRIPT}; '
    f'echo "{SECTION}attached"; '
    f'roots=$(for d in {ATTACHED_DIR}/"$3".*.d {ATTACHED_DIR}/"$3"-*.d '
    f'{ATTACHED_DIR}/"$3"@*.d; do '
    '[ -f "$d/20-portable.conf" ] && grep -h "^RootImage=" "$d/20-portable.conf"; done); '
    '[ -n "$roots" ] && printf "%s\\n" "$roots"; '
    f'echo "{SECTION}live-manifest"; '
    'img=$(printf "%s\\n" "$roots" | head -n1); rel=$(basename "${img#RootImage=}" .raw); '
    '[ -n "$img" ] && [ -f "$4/$rel.manifest.json" ] && cat "$4/$rel.manifest.json"; '
    f'echo "{SECTION}audit"; [ -f "$5" ] && cat "$5"; '
    # The profile the live units run with (attach copies it in as 10-profile.conf) and the one a
    # deploy would attach now (portablectl's search order), both as SHA-256 digests.
    f'echo "{SECTION}profile-attached"; '
    f'for d in {ATTACHED_DIR}/"$3".*.d {ATTACHED_DIR}/"$3"-*.d {ATTACHED_DIR}/"$3"@*.d; do '
    '[ -f "$d/10-profile.conf" ] && { sha256sum < "$d/10-profile.conf" | cut -d" " -f1; break; }; '
    "done; "
    f'echo "{SECTION}profile"; for d in {" ".join(profiles.SEARCH_DIRS)}; do '
    '[ -f "$d/$6/service.conf" ] && { sha256sum < "$d/$6/service.conf" | cut -d" " -f1; break; }; '
    "done; "
    # Secrets: the digest salt, the sets kept, and each unit's secrets drop-in (no values).
    f'echo "{SECTION}secrets-salt"; [ -f "$7/salt" ] && cat "$7/salt" && echo; '
    f'echo "{SECTION}secret-sets"; [ -d "$7" ] && ls -1 "$7" | grep -v -e "^salt$" -e "^\\."; '
    f'echo "{SECTION}secrets-dropins"; '
    f'for f in {DROPIN_ROOT}/"$3".*.d/{DROPIN} {DROPIN_ROOT}/"$3"-*.d/{DROPIN} '
    f'{DROPIN_ROOT}/"$3"@*.d/{DROPIN}; do '
    '[ -f "$f" ] && { u=${f%/*}; u=${u##*/}; echo "=== ${u%.d}"; cat "$f"; }; done; true'
)


@builder
def host_state(layout: Layout, allowed_signers: str, state_root: str, profile: str) -> Command:
    """Host info, the attached image, its manifest, the audit log and the portable profile's
    digests (attached, and PROFILE as the host has it), as sections."""
    return sh_args(
        _SCRIPT,
        allowed_signers,
        state_root,
        layout.app,
        layout.releases_dir,
        layout.audit_log,
        profile,
        layout.secrets_dir,
    )
