"""Journal lines of several hosts as one log: each host's ``journalctl -o json`` lines, tagged
with the host and merged in time order (``__REALTIME_TIMESTAMP``, microseconds since the epoch)."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, order=True)
class Entry:
    """One journal line of one host; entries sort by time, then host."""

    usec: int
    host: str
    unit: str = ""
    pid: str = ""
    message: str = ""
    #: The journal's own position of the entry (``__CURSOR``): a follow starts after it.
    cursor: str = field(default="", compare=False)

    def render(self) -> str:
        """``2026-11-27T12:00:01.123456Z [host] unit[pid]: message``."""
        at = datetime.fromtimestamp(self.usec / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        who = f"{self.unit}[{self.pid}]" if self.pid else self.unit
        return f"{at} [{self.host}] {who}: {self.message}"


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
    return Entry(usec, host, str(unit), pid, str(message), cursor)


def entries(host: str, output: str) -> list[Entry]:
    return [e for e in (parse(host, line) for line in output.splitlines()) if e is not None]


def merged(logs: Sequence[Iterable[Entry]]) -> list[Entry]:
    """Every host's entries (each in time order, as journalctl gives them) in one time order."""
    return list(heapq.merge(*(sorted(log) for log in logs)))
