"""`invoke logs`, the reading and the showing: one host's journal as journalctl writes it, or
several hosts' read side by side, merged in time order, and followed; a host that fails is
reported on stderr while the others go on."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import fleet, journal, ui
from .command import Command
from .errors import DeployError
from .host import Host, Result


@dataclass
class Out:
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


def colour_for(stream: Any) -> bool:
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


def show(h: Host, command: Command, out: Out, follow: bool) -> None:
    """One host's lines, shown as they come, as journalctl wrote them: its text, or its JSON
    lines (the lines that are not JSON, its messages on a terminal, are kept for the error)."""
    reader = _Reader(h, lambda _: None)  # takes no entries: take() below reads the lines

    def take(lines: list[str]) -> None:
        if not out.json:
            out.write(lines)
            return
        entries = [line for line in lines if line.startswith("{")]
        if len(entries) < len(lines):
            reader.other += [line for line in lines if not line.startswith("{")][:20]
        out.write(entries)

    reader.check(command, h.lines(command, take, follow=follow))


def merged(opened: list[Host], command: Command, out: Out) -> tuple[list[str], dict[str, str]]:
    """Every host's lines, read side by side, printed in one time order. Returns the hosts
    that failed (reported) and the cursor of each host's last line."""
    logs: dict[str, list[journal.Entry]] = {}

    def read(h: Host) -> None:
        got: list[journal.Entry] = []
        reader = _Reader(h, got.extend)
        reader.check(command, h.lines(command, reader.take))
        logs[h.name] = got

    # Ctrl-C during a long read closes every connection: no host's read is waited for.
    results = fleet.each(opened, read, len(opened), on_interrupt=lambda: _close(opened))
    failed = _report(opened, results, out.tagged)
    out.write([out.text(e) for e in journal.merged([logs.get(h.name, []) for h in opened])])
    newest = {name: journal.in_order(log)[-1] for name, log in logs.items() if log}
    return failed, {name: entry.cursor for name, entry in newest.items()}


def follow_all(opened: list[Host], commands: dict[str, Command], out: Out) -> list[str]:
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
        except BaseException:
            # Anything else (stdout closed: `logs -f | head`) ends every host's stream, else
            # the others would wait for their host's next line.
            stop()
            raise

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
def stdout_closed_ends_it() -> Iterator[None]:
    """`invoke logs | head`: a reader that goes away ends the task quietly, as it ends
    journalctl (the connection closes, which ends the command on the host)."""
    try:
        yield
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
