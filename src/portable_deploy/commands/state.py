"""Everything a deploy needs to know about a host, read in one round trip.

Each remote command costs a few hundred milliseconds on a small VPS (sshd forks a session and a
shell), so the read-only facts a deploy starts from are gathered by one script that prints them
in sections; ``facts.state_sections`` splits them again.
"""

from __future__ import annotations

from ..command import Command, builder, sh_args
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
    f'echo "{SECTION}audit"; [ -f "$5" ] && cat "$5"; true'
)


@builder
def host_state(layout: Layout, allowed_signers: str, state_root: str) -> Command:
    """Host info, the attached image, its manifest and the audit log, as sections."""
    return sh_args(
        _SCRIPT, allowed_signers, state_root, layout.app, layout.releases_dir, layout.audit_log
    )
