"""The per-app deploy lock: one file created atomically with link(2), holding who took it."""

from __future__ import annotations

from ..command import Command, builder, sh_args

#: Exit status of ``acquire`` when someone else holds the lock (its content is printed).
HELD = 3
#: Exit status of ``acquire`` on a host that was never set up (no state directory).
NOT_SET_UP = 4

_ACQUIRE = (
    f'[ -d "${{1%/*}}" ] || exit {NOT_SET_UP}; '
    # Synced before it is linked: a lock never exists without its record, even after a power
    # cut. An empty lock file is what a power cut left of an older, unsynced one: nobody's.
    'tmp="$1.$$"; { printf "%s\\n" "$2" > "$tmp" && sync "$tmp"; } || exit 1; '
    '[ -f "$1" ] && [ ! -s "$1" ] && rm -f "$1"; '
    # Holding the lock, nobody else is uploading: what staging ($3) holds is left over from a
    # deploy that died; it goes now, so a partial upload never stays on the disk.
    'if ln "$tmp" "$1" 2>/dev/null; then rm -f "$tmp"; '
    'for f in "$3"/*; do [ -e "$f" ] && rm -f "$f"; done; '
    # $4: what the new holder runs first (the dead-man switch of a deploy that is gone).
    '[ -z "$4" ] || sh -c "$4"; exit 0; fi; '
    f'rm -f "$tmp"; cat "$1" 2>/dev/null; exit {HELD}'
)


@builder
def acquire(lock: str, record: str, staging: str, then: Command | None = None) -> Command:
    """Take the lock, empty STAGING and run THEN; or print the holder's record and exit with
    ``HELD``."""
    after = then.render(reveal=True) if then is not None else ""
    return sh_args(_ACQUIRE, lock, record, staging, after, mutates=True)


#: Remove the lock only if it holds token $2, without a check-then-act race: rename it away
#: (atomic), look at what was renamed, and put back (with ln, which never overwrites) a lock that
#: turned out to be someone else's.
_REMOVE_IF_HOLDS = (
    'moved="$1.removing.$$"; mv "$1" "$moved" 2>/dev/null || exit 0; '
    'if grep -qF "$2" "$moved"; then rm -f "$moved"; exit 0; fi; '
    'ln "$moved" "$1" 2>/dev/null; rm -f "$moved"; true'
)


@builder
def release(lock: str, token: str) -> Command:
    """Remove the lock only if it is still ours (its record holds our token)."""
    return sh_args(_REMOVE_IF_HOLDS, lock, token, mutates=True)


@builder
def read(lock: str) -> Command:
    return sh_args('cat "$1" 2>/dev/null; true', lock)


@builder
def break_(lock: str, token: str) -> Command:
    """Remove a stale lock, provided it is still the one that was judged stale."""
    return sh_args(_REMOVE_IF_HOLDS, lock, token, mutates=True)
