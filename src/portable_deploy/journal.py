"""Journal lines of several hosts as one log: each host's ``journalctl -o json`` lines, tagged
with the host and merged in time order (``__REALTIME_TIMESTAMP``, microseconds since the epoch),
shown as text (coloured by priority on a terminal) or as the journal's JSON itself."""

from __future__ import annotations

import contextlib
import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: syslog priority (journal field PRIORITY) -> ANSI colour of the message, as journalctl shows
#: it: emerg..err red, warning yellow, notice and info plain, debug dim.
_COLOURS = {0: "\x1b[31m", 1: "\x1b[31m", 2: "\x1b[31m", 3: "\x1b[31m", 4: "\x1b[33m", 7: "\x1b[2m"}
_RESET = "\x1b[0m"
#: What a journal entry without a PRIORITY field is logged at (journald's default, info).
INFO = 6


@dataclass(frozen=True, order=True)
class Entry:
    """One journal line of one host; entries sort by time, then host (and keep their order
    when both are the same: journald gives one time to every line of a write)."""

    usec: int
    host: str
    unit: str = field(default="", compare=False)
    pid: str = field(default="", compare=False)
    message: str = field(default="", compare=False)
    #: The journal's own position of the entry (``__CURSOR``): a follow starts after it.
    cursor: str = field(default="", compare=False)
    priority: int = field(default=INFO, compare=False)
    #: The line as journalctl gave it (``--json`` prints it as is).
    raw: str = field(default="", compare=False, repr=False)

    @property
    def seqnum(self) -> int:
        """The journal's sequence number of the entry (``i=`` of the cursor; 0 if none)."""
        for part in self.cursor.split(";"):
            if part.startswith("i="):
                with contextlib.suppress(ValueError):
                    return int(part[2:], 16)
        return 0

    def render(self, tagged: bool = True, colour: bool = False) -> str:
        """``2026-11-27T12:00:01.123456Z [host] unit[pid]: message``; without ``[host]`` unless
        TAGGED, and with the message in its priority's colour when COLOUR."""
        at = datetime.fromtimestamp(self.usec / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        who = f"{self.unit}[{self.pid}]" if self.pid else self.unit
        message = self.message
        if colour and self.priority in _COLOURS:
            message = f"{_COLOURS[self.priority]}{message}{_RESET}"
        return f"{at} [{self.host}] {who}: {message}" if tagged else f"{at} {who}: {message}"

    def json_line(self, tagged: bool = True) -> str:
        """The journal's own JSON line; TAGGED: with ``"host"`` (the deploy.toml name) as its
        first key. Journal field names are upper case, so ``host`` never hides one of them; the
        rest of the line is left byte for byte as journalctl wrote it."""
        if not tagged:
            return self.raw
        return '{"host":' + json.dumps(self.host) + "," + self.raw.lstrip()[1:]


def parse(host: str, line: str) -> Entry | None:
    """An Entry from one line of ``journalctl -o json``; None for a line that is not one."""
    try:
        data = json.loads(line)
        usec = int(data["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    message = data.get("MESSAGE", "")
    if isinstance(message, list):  # a message that is not UTF-8: its bytes
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace"
        )
    unit = data.get("SYSLOG_IDENTIFIER") or data.get("_SYSTEMD_UNIT") or ""
    pid, cursor = str(data.get("_PID", "")), str(data.get("__CURSOR", ""))
    return Entry(usec, host, str(unit), pid, str(message), cursor, _priority(data), line)


def _priority(data: dict[str, object]) -> int:
    try:
        return int(str(data.get("PRIORITY", INFO)))
    except ValueError:
        return INFO


def entries(host: str, output: str) -> list[Entry]:
    return [e for e in (parse(host, line) for line in output.splitlines()) if e is not None]


def in_order(log: Sequence[Entry]) -> list[Entry]:
    """One host's entries oldest first: systemd 252 prints ``--grep`` with ``--lines``
    newest first (systemd/systemd#26476: it searches backwards), later ones oldest first."""
    if len(log) > 1 and (log[0].usec, log[0].seqnum) > (log[-1].usec, log[-1].seqnum):
        return list(reversed(log))
    return list(log)


def merged(logs: Sequence[Sequence[Entry]]) -> list[Entry]:
    """Every host's entries in one time order (each host's in its journal's order)."""
    return list(heapq.merge(*(sorted(in_order(log)) for log in logs)))


#: What journalctl says when nothing matched (and exits 1): not an error for a log viewer.
_NOTHING = ("-- No entries --", "No data available")


def failure(exit_code: int, stderr: str, other: Sequence[str] = ()) -> str | None:
    """What went wrong with a ``journalctl`` that exited EXIT_CODE, having said STDERR (and
    OTHER, the lines of its output that were no entry); None when nothing did. journalctl exits
    1 both for a bad argument and for a filter that matches nothing (``--grep``, a ``-u`` glob
    with no unit): only its message tells them apart."""
    if exit_code == 0:
        return None
    said = [line.strip() for line in [*stderr.splitlines(), *other] if line.strip()]
    if exit_code == 1 and all(any(n in line for n in _NOTHING) for line in said):
        return None
    return " / ".join(said[-3:]) or "it printed nothing"
