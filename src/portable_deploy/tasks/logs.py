"""`invoke logs`: the journal of the app's units on one host or, merged in time order, on many."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Sequence

from invoke.context import Context
from invoke.tasks import task

from .. import fleet, journal, ui
from ..command import Command
from ..commands import journalctl
from ..errors import DeployError
from ..host import Host
from ..release import release_name
from .common import HOST_HELP, ROLE_HELP, config, hosts, user_errors


@task(
    iterable=["host", "role"],
    help={
        "host": HOST_HELP,
        "role": ROLE_HELP,
        "follow": "Keep streaming new lines (Ctrl-C to stop).",
        "lines": "How many recent lines to show first, per host (default 100).",
        "release": "Only lines logged by this release (VERSION or NAME_VERSION).",
        "since": "Only lines since this time (journalctl --since syntax, e.g. '10 min ago').",
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
) -> None:
    """Show (or --follow) the journal of every unit of the app; several hosts' lines come out
    merged in time order, each tagged with its host."""
    cfg = config()
    rel = release_name(cfg.app.name, release) if release else None
    with hosts(cfg, host, role) as opened:
        if len(opened) == 1:
            command = journalctl.logs(
                cfg.app.name, follow=follow, lines=lines, since=since, release=rel
            )
            opened[0].stream(command, follow=follow)
            return
        # Every host's recent lines in one time order; then, with --follow, every host's new
        # lines as they come, each host's after the last line shown of it.
        command = journalctl.logs(
            cfg.app.name, lines=lines, since=since, release=rel, output="json"
        )
        failed, last = _merged(opened, command)
        if follow:
            up = [h for h in opened if h.name not in failed]
            after = {
                h.name: journalctl.logs(
                    cfg.app.name,
                    follow=True,
                    lines=0,
                    release=rel,
                    output="json",
                    after_cursor=last.get(h.name) or None,
                )
                for h in up
            }
            failed += _follow(up, after)
        _fail_if(failed, len(opened))


def _merged(opened: list[Host], command: Command) -> tuple[list[str], dict[str, str]]:
    """Every host's lines, read side by side, printed in one time order. Returns the hosts
    that failed (reported) and the cursor of each host's last line."""
    logs: dict[str, list[journal.Entry]] = {}

    def read(h: Host) -> None:
        logs[h.name] = journal.entries(h.name, h.run(command).stdout)

    failed = _report(opened, fleet.each(opened, read, len(opened)))
    for entry in journal.merged([logs.get(h.name, []) for h in opened]):
        print(entry.render(), flush=False)
    sys.stdout.flush()
    return failed, {name: log[-1].cursor for name, log in logs.items() if log}


def _follow(opened: list[Host], commands: dict[str, Command]) -> list[str]:
    """Every host's new lines as they come, each tagged with its host, until Ctrl-C. A host
    that cannot be reached (or is lost) is reported at once while the others keep streaming;
    Ctrl-C closes every connection, which ends the remote journalctl. Returns the failed."""
    printing = threading.Lock()
    failed: list[str] = []

    def stream(h: Host) -> None:
        def show(line: str) -> None:
            entry = journal.parse(h.name, line)
            if entry is not None:
                with printing:
                    print(entry.render(), flush=True)

        try:
            h.lines(commands[h.name], show)
        except DeployError as e:
            with printing:
                failed.append(h.name)
                ui.error(e.message, e.hint)

    with contextlib.suppress(KeyboardInterrupt):
        fleet.each(opened, stream, len(opened), on_interrupt=lambda: _close(opened))
    return failed


def _close(opened: list[Host]) -> None:
    for h in opened:
        with contextlib.suppress(Exception):  # a connection torn down under its reader
            h.close()


def _report(opened: list[Host], results: Sequence[object]) -> list[str]:
    failed = []
    for h, result in zip(opened, results, strict=True):
        if isinstance(result, DeployError):
            failed.append(h.name)
            ui.error(result.message, result.hint)
    return failed


def _fail_if(failed: list[str], total: int) -> None:
    if failed:
        raise DeployError(
            f"logs failed on {', '.join(failed)} of {total} hosts", hint="see the errors above"
        )
