"""The dead-man switch: a host-side revert that runs unless the deployer confirms in time.

Armed in the same command as the reattach, it is a transient systemd timer whose service waits
until the deployer's heartbeat file is older than the confirm timeout, then claims the switch
(an atomic rename of the heartbeat) and runs the revert script: plain shell rendered from the
tool's own builders, so the host needs nothing but sh and systemd. The deployer touches the
heartbeat while it verifies, and disarms the switch in the same command that records success.
A deployer that dies, is killed or loses its connection after the switch therefore leaves a
host that puts the previous release back by itself within the timeout.
"""

from __future__ import annotations

from ..command import Command, Secret, builder, sh_args
from .layout import Layout

#: ``disarm`` exits with this when the switch has already fired (the host is reverting).
FIRED = 3

#: The switch's script, written to a root-only file by ``arm``: $1 heartbeat, $2 seconds; the
#: revert follows it. A file, not an argument of systemd-run: a transient unit's command line is
#: written to /run/systemd/transient/ and parsed again at every daemon-reload (the reattach does
#: one), which mangles a shell script's quoting and semicolons (seen on systemd 252).
WAIT = (
    'while :; do [ -e "$1" ] || exit 0; '
    'age=$(( $(date +%s) - $(stat -c %Y "$1" 2>/dev/null || echo 0) )); '
    '[ "$age" -ge "$2" ] && break; sleep 1; done; '
    # Claim the switch: after this rename a disarm sees "fired" and leaves it alone.
    'mv "$1" "$1.fired" 2>/dev/null || exit 0; '
)

# $1 unit, $2 heartbeat, $3 seconds, $4 the script's path; the script's text on stdin (it is
# long, and an error message or --echo shows the command line).
_ARM = (
    'systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
    'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; '
    'rm -f "$2.fired"; touch "$2" && '
    '(umask 077; cat > "$4.tmp") && mv -f "$4.tmp" "$4" && '
    'systemd-run --quiet --unit="$1" --on-active="$3s" --timer-property=AccuracySec=1s '
    '--description="portable-deploy dead-man switch" sh "$4" "$2" "$3"'
)

_DISARM = (
    f'if [ -e "$2.fired" ]; then echo "the dead-man switch has fired" >&2; exit {FIRED}; fi; '
    'rm -f "$2" "$3"; systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
    'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; true'
)


def unit(layout: Layout) -> str:
    return f"pd-deadman-{layout.app}"


@builder
def arm(layout: Layout, seconds: int, revert: str) -> Command:
    """Start the switch: REVERT runs unless the heartbeat is touched at least every SECONDS."""
    command = sh_args(_ARM, unit(layout), layout.heartbeat, str(seconds), layout.deadman_script)
    return Command(command.tokens, mutates=True, stdin=Secret(WAIT + revert + "\n"))


@builder
def heartbeat(layout: Layout) -> Command:
    """The deployer is alive: push the switch back (nothing if it is not armed)."""
    return sh_args('[ ! -e "$1" ] || touch "$1"', layout.heartbeat, mutates=True)


@builder
def disarm(layout: Layout) -> Command:
    """Stop the switch; exits ``FIRED`` if it already fired (the host is putting the previous
    release back, or has)."""
    return sh_args(_DISARM, unit(layout), layout.heartbeat, layout.deadman_script, mutates=True)
