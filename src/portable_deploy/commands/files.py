"""File operations on a host: coreutils only, every argument quoted."""

from __future__ import annotations

from collections.abc import Sequence

from ..command import Command, builder, cmd, sh_args


@builder
def mkdir(*paths: str, mode: str | None = None) -> Command:
    return cmd("mkdir", "-p", ["-m", mode] if mode else [], *paths, mutates=True)


@builder
def sha256(path: str) -> Command:
    """``sha256sum PATH``; a missing file prints nothing instead of failing."""
    return sh_args('[ -f "$1" ] && sha256sum "$1" || true', path)


@builder
def cat(path: str) -> Command:
    """``cat PATH``; a missing file reads as empty."""
    return sh_args('[ -f "$1" ] && cat "$1" || true', path)


@builder
def move(src: str, dst: str) -> Command:
    """``mv -f``: atomic within one file system, which is why uploads land next to their target."""
    return cmd("mv", "-f", src, dst, mutates=True)


@builder
def install(moves: Sequence[tuple[str, str]]) -> Command:
    """Move staged files (SRC, DST) into place, in order and durably: their data reaches the
    disk before the first rename, and the renames before the command returns, so a host that
    loses power never has a name in place on a half-written file."""
    command = cmd("sync", *(src for src, _ in moves), mutates=True)
    for src, dst in moves:
        command = command.then(cmd("mv", "-f", src, dst, mutates=True))
    directories = sorted({dst.rsplit("/", 1)[0] or "/" for _, dst in moves})
    return command.then(cmd("sync", *directories, mutates=True))


@builder
def remove(*paths: str) -> Command:
    return cmd("rm", "-f", *paths, mutates=True)


#: Past this many lines the audit log rotates: the older half moves to LOG.1 (one generation),
#: so a deploy never reads more than this many records.
LOG_MAX_LINES = 2000

_APPEND_ROTATE = (
    'printf "%s\\n" "$2" >> "$1" || exit 1; n=$(wc -l < "$1"); [ "$n" -le "$3" ] && exit 0; '
    'keep=$(($3 / 2)); head -n "$((n - keep))" "$1" > "$1.1.tmp" && '
    'tail -n "$keep" "$1" > "$1.tmp" && mv -f "$1.1.tmp" "$1.1" && mv -f "$1.tmp" "$1"'
)


#: In a line given to ``append_log(..., stamped=True)``: replaced by the host's UTC time when the
#: line is appended (for a record written later by the host itself, such as the dead-man switch).
STAMP = "@AT@"


@builder
def append_log(
    path: str, line: str, max_lines: int = LOG_MAX_LINES, stamped: bool = False
) -> Command:
    """Append one line (a JSON record) to a log that rotates past MAX_LINES lines."""
    if stamped:
        stamp = (
            f'set -- "$1" "$(printf %s "$2" | sed "s/{STAMP}/$(date -u +%Y-%m-%dT%H:%M:%S+00:00)/")" '
            '"$3"; '
        )
        return sh_args(stamp + _APPEND_ROTATE, path, line, str(max_lines), mutates=True)
    return sh_args(_APPEND_ROTATE, path, line, str(max_lines), mutates=True)


@builder
def write(path: str, content: str, mode: str = "0644") -> Command:
    """Write a small file atomically: a temporary file next to it, then a rename."""
    return sh_args(
        'umask 077; printf %s "$2" > "$1.tmp.$$" && chmod "$3" "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"',
        path,
        content,
        mode,
        mutates=True,
    )


@builder
def listing(directory: str, pattern: str) -> Command:
    """Names in DIRECTORY matching a shell PATTERN, one per line (nothing if none)."""
    return sh_args(
        'cd "$1" 2>/dev/null || exit 0; for f in $2; do [ -e "$f" ] && echo "$f"; done',
        directory,
        pattern,
    )


@builder
def exists(paths: Sequence[str]) -> Command:
    """Print each of PATHS that exists."""
    return sh_args('for p in "$@"; do [ -e "$p" ] && echo "$p"; done; true', *paths)
