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
) -> Command:
    """Journal lines of every unit of the app (``APP.service``, ``APP-*.service`` ...).

    ``release`` filters on the ``PORTABLE=`` field that the attach drop-in adds to every entry.
    """
    return cmd(
        "journalctl",
        "--no-pager",
        "-o",
        output,
        "-u",
        f"{app}*",
        "-n",
        str(lines),
        ["-f"] if follow else [],
        ["--since", since] if since else [],
        [f"PORTABLE={release}.raw"] if release else [],
    )
