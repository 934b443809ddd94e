"""What a fleet task shows: a row per host (its step, bytes sent, state, time). On a terminal it
is one live table; elsewhere (CI logs, a pipe) every change is a plain line ``[host] ...``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from . import ui


@dataclass
class Row:
    host: str
    state: str = "waiting"
    detail: str = ""
    sent: int = 0
    total: int = 0
    failed: bool = False
    started: float = 0.0


class Board:
    """The rows, safe to update from the fleet's threads."""

    def __init__(self, hosts: Sequence[str], out: Console | None = None) -> None:
        self.out = out or ui.console
        self.rows = {h: Row(h) for h in hosts}
        self.live = self.out.is_terminal
        self._lock = threading.Lock()
        self._display: Live | None = None
        #: Seconds each phase of the task took ("upload", "switch"): shown, and read by benches.
        self.phases: dict[str, float] = {}

    def __enter__(self) -> Board:
        if self.live:
            self._display = Live(
                get_renderable=self._table, console=self.out, refresh_per_second=4, transient=False
            )
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def update(self, host: str, state: str, detail: str = "", failed: bool = False) -> None:
        with self._lock:
            row = self.rows[host]
            row.state, row.detail, row.failed = state, ui.redact(detail), failed or row.failed
            if not row.started:
                row.started = time.monotonic()
        if not self.live:
            mark = "[bold red]✗[/]" if failed else "[dim]·[/]"
            shown = f" {escape(ui.redact(detail))}" if detail else ""
            self.out.print(f"{mark} [bold]\\[{escape(host)}][/] {escape(state)}{shown}")

    def sent(self, host: str, done: int, total: int) -> None:
        with self._lock:
            row = self.rows[host]
            row.sent, row.total = done, total

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the task (every host's upload, the batches' switch)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = time.monotonic() - start

    def note(self, text: str) -> None:
        """A line of its own (above the live table)."""
        self.out.print(f"[bold cyan]▸[/] {escape(ui.redact(text))}")

    def steps(self, host: str, phase: str) -> HostSteps:
        return HostSteps(self, host, phase)

    def _table(self) -> Table:
        t = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("host", "state", "sent", "time", ""):
            t.add_column(column, no_wrap=column != "")
        now = time.monotonic()
        with self._lock:
            for row in self.rows.values():
                style = "red" if row.failed else ("green" if row.state == "deployed" else "")
                sent = f"{ui.size(row.sent)} / {ui.size(row.total)}" if row.total else ""
                took = f"{now - row.started:.0f}s" if row.started else ""
                t.add_row(
                    row.host,
                    f"[{style}]{escape(row.state)}[/]" if style else escape(row.state),
                    sent,
                    took,
                    escape(row.detail),
                )
        return t


class HostSteps(ui.Steps):
    """The pipeline's steps for one host of a fleet: each step becomes that host's state on the
    board; warnings are printed, tagged with the host."""

    def __init__(self, board: Board, host: str, phase: str) -> None:
        super().__init__(board.out)
        self.board, self.host, self.phase = board, host, phase

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        # "upload X to HOST", "verify X on HOST", "roll back HOST to X": the row names the host.
        h = self.host
        short = name.replace(f" to {h}", "").replace(f" on {h}", "").replace(f" {h} ", " ")
        self.board.update(self.host, short)
        try:
            yield
        finally:
            self.timings.append((name, time.monotonic() - start))

    def info(self, message: str) -> None:
        if self.board.live:
            with self.board._lock:
                self.board.rows[self.host].detail = ui.redact(message)
        else:
            self.board.out.print(f"  [dim]\\[{escape(self.host)}][/] {escape(ui.redact(message))}")

    def warn(self, message: str) -> None:
        self.board.out.print(
            f"  [yellow]![/] [bold]\\[{escape(self.host)}][/] {escape(ui.redact(message))}"
        )

    def transfer(
        self, label: str, total: int
    ) -> contextlib.AbstractContextManager[Callable[[int, int], None]]:
        @contextlib.contextmanager
        def counting() -> Iterator[Callable[[int, int], None]]:
            self.board.sent(self.host, 0, total)

            def update(done: int, _total: int) -> None:
                self.board.sent(self.host, done, total)

            yield update

        return counting()
