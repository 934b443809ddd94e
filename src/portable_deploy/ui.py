"""Everything the user sees: steps with durations, echoed commands, progress bars, tables."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .command import mask_text
from .errors import DeployError

console = Console(highlight=False)
#: Secret values resolved for this task: never printed, whatever text they turn up in.
_hidden: list[str] = []


@contextlib.contextmanager
def hiding(values: Iterable[str]) -> Iterator[None]:
    """While inside, every line this module prints shows VALUES (and their lines) as ``***``.

    A safety net under ``Secret`` masking: it catches a value echoed back by a remote program.
    A DeployError leaving the block is masked too, so its line printed later shows no value.
    """
    added = [v for v in values if v]
    _hidden.extend(added)
    try:
        yield
    except DeployError as exc:
        exc.message = redact(exc.message)
        exc.hint = redact(exc.hint) if exc.hint is not None else None
        exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
        raise
    finally:
        for value in added:
            _hidden.remove(value)


def redact(text: str) -> str:
    """TEXT with the values of ``hiding`` masked."""
    return mask_text(text, _hidden) if _hidden else text


class Steps:
    """Shows each pipeline step with its duration; remembers the timings for benchmarks."""

    def __init__(self, out: Console | None = None) -> None:
        self.out = out or console
        self.timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.out.print(f"[bold cyan]▸[/] {escape(redact(name))}")
        try:
            yield
        except BaseException:
            took = time.monotonic() - start
            self.timings.append((name, took))
            self.out.print(f"[bold red]✗[/] {escape(redact(name))} [dim]({took:.1f}s)[/]")
            raise
        took = time.monotonic() - start
        self.timings.append((name, took))
        self.out.print(f"[bold green]✓[/] {escape(redact(name))} [dim]({took:.1f}s)[/]")

    def info(self, message: str) -> None:
        self.out.print(f"  {escape(redact(message))}")

    def warn(self, message: str) -> None:
        self.out.print(f"  [yellow]![/] {escape(redact(message))}")

    def transfer(
        self, label: str, total: int
    ) -> contextlib.AbstractContextManager[Callable[[int, int], None]]:
        """A byte count going up to TOTAL: a progress bar here."""
        return transfer(label, total)


def echo(host: str, command: str, dry_run: bool) -> None:
    """``[host] $ command``, exactly as it can be pasted into a shell on that host."""
    mark = "[yellow](dry-run)[/] " if dry_run else ""
    shown = escape(redact(command))
    console.print(f"  [dim]\\[{escape(host)}][/] {mark}$ {shown}", soft_wrap=True)


@contextlib.contextmanager
def transfer(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with bytes and rate; yields the callback SFTP calls."""
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)

        def update(done: int, _total: int) -> None:
            progress.update(task, completed=done)

        yield update


def size(n: float) -> str:
    """A byte count for people: 512 B, 97.3 KB, 16.0 MB."""
    for unit in ("B", "KB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} MB"  # pragma: no cover


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    compact: bool = False,
    whole: Collection[str] = (),
) -> None:
    """The first column (a unit, a release), and the columns named in WHOLE, are never cut or
    wrapped, however narrow the terminal: the other columns fold instead. COMPACT: no frame, one
    space less between columns (five columns of unit names fit 80 columns)."""
    t = Table(title=title, title_justify="left")
    if compact:
        t.box, t.show_edge, t.pad_edge, t.collapse_padding = box.SIMPLE_HEAD, False, False, True
    cells = [[escape(redact(cell)) for cell in row] for row in rows]
    for i, column in enumerate(columns):
        if i == 0 or column in whole:
            longest = max((len(row[i]) for row in rows if len(row) > i), default=0)
            t.add_column(column, no_wrap=True, min_width=max(longest, len(column)))
        else:
            t.add_column(column, overflow="fold")
    for row in cells:
        t.add_row(*row)
    console.print(t)


@contextlib.contextmanager
def data_on_stdout() -> Iterator[None]:
    """While inside, everything this module prints goes to stderr: stdout carries only the
    document a task prints itself (``--json``)."""
    # The console follows sys.stdout as it is when it prints (pytest swaps it): it is told to
    # follow sys.stderr instead, never pinned to the file object of the moment.
    before = console.stderr
    console.stderr = True
    try:
        yield
    finally:
        console.stderr = before


def error(message: str, hint: str | None) -> None:
    console.print(f"[bold red]error:[/] {escape(redact(message))}")
    if hint:
        console.print(f"[dim]hint:[/] {escape(redact(hint))}")
