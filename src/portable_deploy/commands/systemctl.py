"""systemctl: start, restart and read units."""

from __future__ import annotations

from collections.abc import Sequence

from ..command import Command, builder, cmd

#: Properties read to tell whether a unit is up and stable.
UNIT_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "MainPID",
    "ActiveEnterTimestampMonotonic",
    "ActiveEnterTimestamp",
)
#: What `invoke status` shows besides: memory, and what a socket listens on.
STATUS_PROPERTIES = (*UNIT_PROPERTIES, "MemoryCurrent", "Listen")


@builder
def restart(units: Sequence[str]) -> Command:
    return cmd("systemctl", "restart", *units, mutates=True)


@builder
def start(units: Sequence[str]) -> Command:
    return cmd("systemctl", "start", *units, mutates=True)


@builder
def stop(units: Sequence[str]) -> Command:
    return cmd("systemctl", "stop", *units, mutates=True)


@builder
def restart_overlapped(app: str, twin: str, pause: Command | None = None) -> Command:
    """APP restarted with no moment off its sockets: TWIN, its overlap twin, restarts from the
    attached release beside APP's old process (with ``Type=notify`` the job ends only when the
    new process is ready, before it takes a connection, and fails if it never is), then APP
    restarts while TWIN serves, then TWIN stops and drains. The first failure ends it. PAUSE (a
    failpoint) runs while both serve."""
    command = restart([twin])
    if pause is not None:
        command = command.then(pause)
    return command.then(restart([app])).then(stop([twin]))


@builder
def show(units: Sequence[str], properties: Sequence[str] = UNIT_PROPERTIES) -> Command:
    return cmd("systemctl", "show", "--no-pager", "-p", ",".join(properties), *units)


@builder
def status(units: Sequence[str]) -> Command:
    return cmd("systemctl", "status", "--no-pager", "--lines=0", *units)


@builder
def version() -> Command:
    return cmd("systemctl", "--version")
