"""What `invoke status` reads beyond ``state.host_state``, in the same round trip.

The units are the ones portablectl attached for the app (their files in system.attached), so
the script needs no list from the caller; templates (``NAME@.service``) have no state of their
own and are left out. Times are printed as ``@EPOCH`` with the host's clock next to them, so
"since" is measured on the host's clock, not this machine's.
"""

from __future__ import annotations

from ..command import Command, builder, sh_args
from .layout import ATTACHED_DIR, PORTABLES_DIR, Layout
from .state import SECTION
from .systemctl import STATUS_PROPERTIES

_SCRIPT = (
    f'echo "{SECTION}now"; date +%s; '
    f'echo "{SECTION}units"; '
    f'units=$(for f in {ATTACHED_DIR}/"$1".* {ATTACHED_DIR}/"$1"-* {ATTACHED_DIR}/"$1"@*; do '
    '[ -f "$f" ] || continue; u=${f##*/}; case $u in *@.*) ;; *) echo "$u";; esac; done); '
    f'[ -n "$units" ] && systemctl show --no-pager --timestamp=unix -p {",".join(STATUS_PROPERTIES)} '
    "$units; "
    f'echo "{SECTION}images"; for f in {PORTABLES_DIR}/"$1"_*.raw; do '
    '[ -f "$f" ] && stat -c "%s %n" "$f"; done; '
    f'echo "{SECTION}releases-dir"; du -sk "$2" 2>/dev/null; '
    f'echo "{SECTION}disk"; df -Pk {PORTABLES_DIR} 2>/dev/null | tail -n 1; '
    f'echo "{SECTION}lock"; cat "$3" 2>/dev/null; true'
)


@builder
def report(layout: Layout) -> Command:
    """The host's clock, the app's attached units' properties (memory and sockets' addresses
    included), the sizes of its kept images and release files, the free disk, the deploy lock."""
    return sh_args(_SCRIPT, layout.app, layout.releases_dir, layout.lock)
