"""journalctl: the app's logs, optionally of one release."""

from __future__ import annotations

from ..command import Command, builder, cmd


@builder
def logs(
    app: str,
    *,
    follow: bool = False,
    lines: int = 100,
    since: str | None = None,
    release: str | None = None,
    output: str = "short-iso",
    after_cursor: str | None = None,
) -> Command:
    """Journal lines of every unit of the app (``APP.service``, ``APP-*.service`` ...).

    ``release`` filters on the ``PORTABLE=`` field that the attach drop-in adds to every entry;
    ``after_cursor`` starts after that entry (every line since, then ``lines`` is not used).
    """
    return cmd(
        "journalctl",
        "--no-pager",
        "-o",
        output,
        "-u",
        f"{app}*",
        ["--after-cursor", after_cursor] if after_cursor else ["-n", str(lines)],
        ["-f"] if follow else [],
        ["--since", since] if since else [],
        [f"PORTABLE={release}.raw"] if release else [],
    )
