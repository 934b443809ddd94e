"""File operations on a host: coreutils only, every argument quoted."""

from __future__ import annotations

from collections.abc import Sequence

from ..command import Command, Op, builder, cmd, sh_args


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
def remove(*paths: str) -> Command:
    return cmd("rm", "-f", *paths, mutates=True)


@builder
def append_line(path: str, line: str) -> Command:
    """Append one line (a JSON record) to a log file."""
    return cmd("printf", "%s\\n", line, Op(">>"), path, mutates=True)


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
