"""`invoke logs`: the journal of the app's units on one host or, merged in time order, on many."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from invoke.context import Context
from invoke.tasks import Task, task

from .. import fleet, journal, ui
from ..command import Command
from ..commands import journalctl
from ..errors import DeployError
from ..host import Host, Result
from ..release import release_name
from ..units import unit_files
from .common import HOST_HELP, ROLE_HELP, config, hosts, user_errors

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
    with hosts(cfg, host, role) as opened, _stdout_closed_ends_it():
        out = _Out(json=json, tagged=len(opened) > 1, colour=_colour(sys.stdout))
        if len(opened) == 1 and not (grep or since or until):
            # One host: one command, its lines shown as they come (follow or not).
            command = query(follow=follow, lines=lines)
            try:
                _show(opened[0], command, out, follow)
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
        failed, last = _merged(opened, recent, out)
        if follow:
            up = [h for h in opened if h.name not in failed]
            after = {h.name: query(follow=True, lines=0, after_cursor=last.get(h.name)) for h in up}
            failed += _follow(up, after, out)
        if failed:
            raise DeployError(
                f"logs failed on {', '.join(failed)} of {len(opened)} hosts",
                hint="see the errors above",
            )


@dataclass
class _Out:
    """Where the lines go: stdout, as text (coloured by priority on a terminal) or as JSON; one
    write per batch of lines, whole lines only (several hosts' threads share it)."""

    json: bool
    tagged: bool
    colour: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self, entry: journal.Entry) -> str:
        if self.json:
            return entry.json_line(self.tagged)
        return entry.render(self.tagged, self.colour)

    def write(self, texts: Sequence[str]) -> None:
        if texts:
            with self.lock:
                sys.stdout.write("\n".join(texts) + "\n")
                sys.stdout.flush()


def _colour(stream: Any) -> bool:
    """Colour only on a terminal, and not when NO_COLOR is set (no-color.org)."""
    return bool(stream.isatty()) and not os.environ.get("NO_COLOR")


class _Reader:
    """One host's command: its journal lines as entries (or as they are, for --json on one
    host), and what else it printed (journalctl's messages on a terminal) for the error."""

    def __init__(self, host: Host, each: Callable[[list[journal.Entry]], None]) -> None:
        self.host = host
        self.each = each
        self.other: list[str] = []

    def take(self, lines: list[str]) -> None:
        entries = []
        for line in lines:
            entry = journal.parse(self.host.name, line)
            if entry is None:
                if line.strip() and len(self.other) < 20:
                    self.other.append(line)
            else:
                entries.append(entry)
        self.each(entries)

    def check(self, command: Command, result: Result, stopping: bool = False) -> None:
        """A command that failed (or a connection lost under it) is a DeployError."""
        if result.exit_code == -1:
            if stopping:
                return
            raise DeployError(
                f"[{self.host.name}] the connection was lost while reading the journal",
                hint="check the network and retry",
            )
        detail = journal.failure(result.exit_code, result.stderr, self.other)
        if detail is not None:
            raise DeployError(
                f"[{self.host.name}] journalctl failed (exit {result.exit_code}): {detail}",
                hint="check --since, --until and --grep (journalctl's own syntax); "
                f"to see more, run on the host: {command.render()}",
            )


def _show(h: Host, command: Command, out: _Out, follow: bool) -> None:
    """One host's lines, shown as they come."""
    reader = _Reader(h, lambda entries: out.write([out.text(e) for e in entries]))
    take = reader.take
    if out.json and not out.tagged:
        # As journalctl wrote them, not parsed: only the lines that are not JSON are looked at.
        def take(lines: list[str]) -> None:
            entries = [line for line in lines if line.startswith("{")]
            if len(entries) < len(lines):
                reader.other += [line for line in lines if not line.startswith("{")][:20]
            out.write(entries)

    reader.check(command, h.lines(command, take, follow=follow))


def _merged(opened: list[Host], command: Command, out: _Out) -> tuple[list[str], dict[str, str]]:
    """Every host's lines, read side by side, printed in one time order. Returns the hosts
    that failed (reported) and the cursor of each host's last line."""
    logs: dict[str, list[journal.Entry]] = {}

    def read(h: Host) -> None:
        got: list[journal.Entry] = []
        reader = _Reader(h, got.extend)
        reader.check(command, h.lines(command, reader.take))
        logs[h.name] = got

    failed = _report(opened, fleet.each(opened, read, len(opened)), out.tagged)
    out.write([out.text(e) for e in journal.merged([logs.get(h.name, []) for h in opened])])
    newest = {name: journal.in_order(log)[-1] for name, log in logs.items() if log}
    return failed, {name: entry.cursor for name, entry in newest.items()}


def _follow(opened: list[Host], commands: dict[str, Command], out: _Out) -> list[str]:
    """Every host's new lines as they come, each tagged with its host, until Ctrl-C. A host
    that cannot be reached (or is lost) is reported at once while the others keep streaming;
    Ctrl-C closes every connection, which ends the remote journalctl. Returns the failed."""
    failed: list[str] = []
    stopping = threading.Event()

    def stream(h: Host) -> None:
        reader = _Reader(h, lambda entries: out.write([out.text(e) for e in entries]))
        command = commands[h.name]
        try:
            reader.check(command, h.lines(command, reader.take, follow=True), stopping.is_set())
        except DeployError as e:
            if not out.tagged:
                raise  # the task's one host: its error is the task's
            if not stopping.is_set():
                failed.append(h.name)
                _error(e)

    def stop() -> None:
        stopping.set()
        _close(opened)

    with contextlib.suppress(KeyboardInterrupt):
        _report(opened, fleet.each(opened, stream, len(opened), on_interrupt=stop), out.tagged)
    return failed


def _close(opened: list[Host]) -> None:
    for h in opened:
        with contextlib.suppress(Exception):  # a connection torn down under its reader
            h.close()


def _report(opened: list[Host], results: Sequence[object], several: bool) -> list[str]:
    """The hosts whose result is an error, each error shown; with one host in the task (not
    SEVERAL), its error is raised: one line, as for any task."""
    failed = []
    for h, result in zip(opened, results, strict=True):
        if isinstance(result, DeployError):
            if not several:
                raise result
            failed.append(h.name)
            _error(result)
    return failed


def _error(e: DeployError) -> None:
    """A host's error, on stderr: stdout is the log (with --json, nothing else may be there)."""
    hint = f" (hint: {e.hint})" if e.hint else ""
    print(ui.redact(f"error: {e.message}{hint}"), file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stdout_closed_ends_it() -> Any:
    """`invoke logs | head`: a reader that goes away ends the task quietly, as it ends
    journalctl (the connection closes, which ends the command on the host)."""
    try:
        yield
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
