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
from .layout import STATE_ROOT, Layout

#: ``disarm`` exits with this when the switch has already fired (the host is reverting).
FIRED = 3

#: The switch's script, written to a root-only file by ``arm``: $1 heartbeat, $2 seconds; the
#: revert follows it. A file, not an argument of systemd-run: a transient unit's command line is
#: written to /run/systemd/transient/ and parsed again at every daemon-reload (the reattach does
#: one), which mangles a shell script's quoting and semicolons (seen on systemd 252).
WAIT = (
    "boot=$(cat /proc/sys/kernel/random/boot_id); "
    'while :; do [ -e "$1" ] || exit 0; '
    # A deployer's command still running on the host (a long reattach) is a sign of life.
    'b=; bb=; [ -r "$1.busy" ] && read -r b bb < "$1.busy"; '
    'if [ -n "$b" ] && [ "$bb" = "$boot" ] && kill -0 "$b" 2>/dev/null; then '
    'touch -c "$1"; sleep 1; continue; fi; '
    'age=$(( $(date +%s) - $(stat -c %Y "$1" 2>/dev/null || echo 0) )); '
    '[ "$age" -ge "$2" ] && break; sleep 1; done; '
    # Claim the switch: after this rename a disarm sees "fired" and leaves it alone.
    'mv "$1" "$1.fired" 2>/dev/null || exit 0; '
)

#: Marks the shell that runs the deployer's command line on the host ($PPID of this snippet)
#: as a sign of life while it runs: "PID BOOT_ID" in HEARTBEAT.busy ($1: the heartbeat).
_BUSY = 'echo "$PPID $(cat /proc/sys/kernel/random/boot_id)" > "$1.busy"'

#: After a reboot, an armed switch finishes at once: a template unit (instance: the app) that
#: the arm installs and enables by plain files (no daemon-reload of its own). It starts the same
#: transient timer, outside the boot transaction, with a limit of 0 s: the deployer's session
#: did not survive the reboot.
BOOT_UNIT = "pd-deadman-boot@.service"
_BOOT_UNIT_LINES = (
    "[Unit]",
    "Description=portable-deploy: finish the dead-man switch of %i after a reboot",
    f"ConditionPathExists={STATE_ROOT}/%i/deadman.heartbeat",
    "",
    "[Service]",
    "Type=oneshot",
    "ExecStart=/usr/bin/systemd-run --quiet --unit=pd-deadman-%i --on-active=1s "
    "--timer-property=AccuracySec=1s --description=portable-deploy-dead-man-switch "
    f"/bin/sh {STATE_ROOT}/%i/deadman.sh {STATE_ROOT}/%i/deadman.heartbeat 0",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
)

# $1 unit, $2 heartbeat, $3 seconds, $4 the script's path, $5 the app (the boot unit's
# instance), then the boot unit's lines; the script's text on stdin (it is long, and an error
# message or --echo shows the command line). The script and the heartbeat are synced: a power
# cut in the switch that follows finds them on the disk.
_ARM = (
    'systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
    'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; '
    'rm -f "$2.fired"; touch "$2" && ' + _BUSY.replace("$1", "$2") + " && "
    '(umask 077; cat > "$4.tmp") && mv -f "$4.tmp" "$4" && '
    f'unit=$1 hb=$2 after=$3 script=$4 wants="/etc/systemd/system/multi-user.target.wants" && '
    f'boot="/etc/systemd/system/{BOOT_UNIT}" && link="$wants/pd-deadman-boot@$5.service" && '
    'shift 5 && text=$(printf "%s\\n" "$@") && '
    '{ [ "$(cat "$boot" 2>/dev/null)" = "$text" ] || '
    '{ printf "%s\\n" "$text" > "$boot.tmp" && mv -f "$boot.tmp" "$boot"; }; } && '
    f'mkdir -p "$wants" && ln -sf "../{BOOT_UNIT}" "$link" && '
    'sync "$script" "$hb" "${script%/*}" "$boot" "$wants" && '
    'systemd-run --quiet --unit="$unit" --on-active="${after}s" --timer-property=AccuracySec=1s '
    '--description="portable-deploy dead-man switch" sh "$script" "$hb" "$after"'
)

_DISARM = (
    f'if [ -e "$2.fired" ]; then echo "the dead-man switch has fired" >&2; exit {FIRED}; fi; '
    'rm -f "$2" "$2.busy" "$3"; systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
    'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; true'
)


def unit(layout: Layout) -> str:
    return f"pd-deadman-{layout.app}"


@builder
def arm(layout: Layout, seconds: int, revert: str) -> Command:
    """Start the switch: REVERT runs unless the heartbeat is touched at least every SECONDS."""
    command = sh_args(
        _ARM,
        unit(layout),
        layout.heartbeat,
        str(seconds),
        layout.deadman_script,
        layout.app,
        *_BOOT_UNIT_LINES,
    )
    return Command(command.tokens, mutates=True, stdin=Secret(WAIT + revert + "\n"))


@builder
def heartbeat(layout: Layout) -> Command:
    """The deployer is alive: push the switch back, and hold it while the rest of this command
    line runs (nothing if it is not armed)."""
    return sh_args(f'[ ! -e "$1" ] || {{ touch "$1" && {_BUSY}; }}', layout.heartbeat, mutates=True)


_HOLD = (
    f'if [ -e "$1.fired" ]; then echo "the dead-man switch has fired" >&2; exit {FIRED}; fi; '
    '[ ! -e "$1" ] || { touch "$1" && ' + _BUSY + "; }"
)


@builder
def hold(layout: Layout) -> Command:
    """The deployer rolls back by itself: push the switch back, so that it fires only if the
    deployer dies during the rollback; exits ``FIRED`` if it already fired."""
    return sh_args(_HOLD, layout.heartbeat, mutates=True)


#: $1 unit, $2 heartbeat, $3 script. Claim the switch (a rename), stop its timer, then run its
#: script at once with the heartbeat back and long stale; or, if the switch is firing right now,
#: wait (bounded) until it has finished. Prints FINISHED when it ran the revert.
FINISHED = "dead-man switch finished"
_FINISH = (
    'if mv "$2" "$2.claim" 2>/dev/null; then '
    'systemctl stop "$1.timer" "$1.service" 2>/dev/null; '
    'systemctl reset-failed "$1.timer" "$1.service" 2>/dev/null; '
    'mv "$2.claim" "$2" && touch -d @0 "$2" && sh "$3" "$2" 1 >&2; '
    f'echo "{FINISHED}"; exit 0; fi; '
    'n=0; while systemctl -q is-active "$1.service" 2>/dev/null && [ "$n" -lt 360 ]; do '
    "sleep 0.5; n=$((n + 1)); done; true"
)


@builder
def finish(layout: Layout) -> Command:
    """Finish the switch of a deploy that no longer holds the lock (it died, or its lock was
    broken): put the release it switched from back now, before a new deploy reads the state."""
    return sh_args(_FINISH, unit(layout), layout.heartbeat, layout.deadman_script, mutates=True)


@builder
def disarm(layout: Layout) -> Command:
    """Stop the switch; exits ``FIRED`` if it already fired (the host is putting the previous
    release back, or has)."""
    return sh_args(_DISARM, unit(layout), layout.heartbeat, layout.deadman_script, mutates=True)
