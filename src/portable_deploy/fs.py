"""File-system questions whose "cannot tell" means "no" (a name too long, unencodable, unreadable)."""

from __future__ import annotations

from pathlib import Path


def is_dir(path: Path) -> bool:
    """Path.is_dir, but False where it would raise (e.g. ENAMETOOLONG or an unencodable name)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def is_file(path: Path) -> bool:
    """Path.is_file, but False where it would raise."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
