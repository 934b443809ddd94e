"""`invoke logs`: the journal of the app's units on one host or, merged in time order, on many."""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any

from invoke.context import Context
from invoke.tasks import Task, task

from .. import logview, ui
from ..commands import journalctl
from ..errors import DeployError
from ..release import release_name
from ..units import unit_files
from .common import HOST_HELP, ROLE_HELP, config, hosts, user_errors

#: One host's view: journalctl's text with microseconds, as the merged view's times.
TEXT = "short-iso-precise"

#: Short flags that Invoke would not derive from the names: journalctl's own ``-n`` and ``-u``.
_SHORT = {"lines": "n", "unit": "u"}


class _LogsTask(Task[Any]):
    """A task whose flags in ``_SHORT`` get that short flag instead of the first free letter."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        taken_names.update(_SHORT.values())  # no other flag may take them first
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        if name in _SHORT:
            opts["names"] = [opts["names"][0], _SHORT[name]]
        return opts


@task(
    klass=_LogsTask,
    iterable=["host", "role", "unit"],
    help={
        "host": HOST_HELP,
        "role": ROLE_HELP,
        "follow": "Keep streaming new lines (Ctrl-C to stop).",
        "lines": "How many recent lines to show first, per host (default 100).",
        "release": "Only lines logged by this release (VERSION or NAME_VERSION).",
        "since": "Only lines since this time (journalctl --since syntax, e.g. '10 min ago').",
        "until": "Only lines until this time (journalctl --until syntax); not with --follow.",
        "unit": "Only this unit of the app (repeatable; .service may be left out).",
        "grep": "Only lines whose message matches this pattern (journalctl --grep, PCRE2; "
        "case-insensitive when all lower case).",
        "json": "Print the journal's own JSON lines (journalctl -o json); on several hosts "
        'each with a "host" key first.',
    },
)
@user_errors
def logs(
    c: Context,
    host: list[str] | None = None,
    role: list[str] | None = None,
    follow: bool = False,
    lines: int = 100,
    release: str | None = None,
    since: str | None = None,
    until: str | None = None,
    unit: list[str] | None = None,
    grep: str | None = None,
    json: bool = False,
) -> None:
    """Show (or --follow) the journal of every unit of the app; several hosts' lines come out
    merged in time order, each tagged with its host."""
    cfg = config()
    if lines < 0:
        raise DeployError(f"--lines {lines}: expected 0 or more", hint="e.g. --lines 100")
    if follow and until:
        raise DeployError(
            "--until with --follow: a follow has no end to stop at",
            hint="drop --until to follow, or --follow to read up to that time",
        )
    app_units = [path.name for path in unit_files(cfg.image.units, cfg.app.name)]
    query = functools.partial(
        journalctl.logs,
        cfg.app.name,
        release=release_name(cfg.app.name, release) if release else None,
        units=journalctl.unit_names(unit or [], app_units),
        grep=grep,
        output="json",
        fields=() if json else journalctl.VIEW_FIELDS,
    )
    json_only = ui.data_on_stdout() if json else contextlib.nullcontext()
    with json_only, hosts(cfg, host, role) as opened, logview.stdout_closed_ends_it():
        out = logview.Out(json=json, tagged=len(opened) > 1, colour=logview.colour_for(sys.stdout))
        if len(opened) == 1 and not (grep or since or until):
            # One host: one command, its lines shown as they come (follow or not). The view is
            # journalctl's own text, coloured by priority by journalctl itself: on the host,
            # its text output costs a third of its JSON (bench/logs.py).
            if json:
                command = query(follow=follow, lines=lines)
            else:
                command = query(
                    follow=follow, lines=lines, output=TEXT, fields=(), colour=out.colour
                )
            try:
                logview.show(opened[0], command, out, follow)
            except KeyboardInterrupt:
                if not follow:
                    raise
                # Ctrl-C is how a follow ends: the channel is closed, which ends journalctl.
            return
        # Every host's recent lines in one time order; then, with --follow, every host's new
        # lines as they come, each host's after the last line shown of it. With a filter of
        # time or text one host comes here too: systemd 252 gives the last lines right only
        # newest first (-r; see journalctl.logs), which cannot be followed (-f) in one command.
        recent = query(lines=lines, since=since, until=until, reverse=True)
        failed, last = logview.merged(opened, recent, out)
        if follow:
            up = [h for h in opened if h.name not in failed]
            after = {h.name: query(follow=True, lines=0, after_cursor=last.get(h.name)) for h in up}
            failed += logview.follow_all(up, after, out)
        if failed:
            raise DeployError(
                f"logs failed on {', '.join(failed)} of {len(opened)} hosts",
                hint="see the errors above",
            )
