"""journalctl: the app's logs, optionally of one release, some of its units, or matching a pattern."""

from __future__ import annotations

from collections.abc import Sequence

from ..command import Command, builder, cmd
from ..errors import DeployError

#: The fields a rendered line needs (``--output-fields``); journalctl adds ``__CURSOR``,
#: ``__REALTIME_TIMESTAMP``, ``__MONOTONIC_TIMESTAMP`` and ``_BOOT_ID`` by itself. Fewer fields
#: are less work for journalctl on the host and fewer bytes on the wire.
VIEW_FIELDS = ("MESSAGE", "PRIORITY", "_PID", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT")


@builder
def logs(
    app: str,
    *,
    follow: bool = False,
    lines: int = 100,
    reverse: bool = False,
    since: str | None = None,
    until: str | None = None,
    release: str | None = None,
    output: str = "short-iso",
    fields: Sequence[str] = (),
    units: Sequence[str] = (),
    grep: str | None = None,
    after_cursor: str | None = None,
    colour: bool | None = None,
) -> Command:
    """Journal lines of every unit of the app (``app_units``), or of UNITS only (names checked
    with ``unit_names``).

    ``release`` filters on the ``PORTABLE=`` field that the attach drop-in adds to every entry;
    ``grep`` is journalctl's own ``--grep`` (a PCRE2 pattern on MESSAGE, case-insensitive when
    all lower case); ``fields`` limits the fields of a JSON output; ``after_cursor`` starts
    after that entry (every line since, then ``lines`` is not used). ``colour``: journalctl's
    own priority colours in a text output on (or, on a terminal, off) whatever its stdout is
    (``SYSTEMD_COLORS``). ``reverse``: newest first,
    the one way systemd 252 gives the last ``lines`` with ``--until`` (else none) or
    ``--since`` (else the first ones) (systemd/systemd#26657).
    """
    return cmd(
        ["env", f"SYSTEMD_COLORS={int(colour)}"] if colour is not None else [],
        "journalctl",
        "--no-pager",
        "-o",
        output,
        ["--output-fields", ",".join(fields)] if fields else [],
        [arg for unit in units or app_units(app) for arg in ("-u", unit)],
        ["--after-cursor", after_cursor] if after_cursor else ["-n", str(lines)],
        ["-f"] if follow else [],
        ["-r"] if reverse else [],
        ["--since", since] if since else [],
        ["--until", until] if until else [],
        ["--grep", grep] if grep is not None else [],
        [f"PORTABLE={release}.raw"] if release else [],
    )


def app_units(app: str) -> list[str]:
    """Every unit of the app, as patterns: a unit file's name is the app's name followed by
    ``.``, ``-`` or ``@`` (``units.py``), so ``APP*`` would also match another program's
    ``APPshop.service``."""
    return [f"{app}.*", f"{app}-*", f"{app}@*"]


def unit_names(requested: Sequence[str], app_units: Sequence[str]) -> list[str]:
    """The units for ``logs(units=...)``: each of REQUESTED must be one of APP_UNITS (the unit
    files the app ships), named whole or without ``.service``. Anything else is an error that
    lists them: ``-u`` of a unit that is not the app's would show another program's log."""
    picked: list[str] = []
    for name in requested:
        unit = name if name in app_units else f"{name}.service"
        if unit not in app_units:
            raise DeployError(
                f"--unit {name}: not a unit of the app; its units are {', '.join(app_units)}",
                hint="name one of them (a .service may be named without its suffix)",
            )
        if unit not in picked:
            picked.append(unit)
    return picked
