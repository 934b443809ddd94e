"""Signals during a task: SIGTERM (a cancelled CI job) is an interrupt like Ctrl-C, and a
critical section (a reattach, a rollback) runs to its end before an interrupt is raised.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

#: Interrupts raised and not yet handled: Invoke catches a KeyboardInterrupt raised while a
#: remote command runs, forwards it to the command and carries on; ``raise_pending`` raises it
#: again once the command returns.
_pending: list[str] = []


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    _pending.append(name)
    raise KeyboardInterrupt(name)


def raise_pending() -> None:
    """Raise an interrupt that arrived under a remote command and was swallowed there."""
    if _pending:
        name = _pending[0]
        _pending.clear()
        raise KeyboardInterrupt(name)


#: How many interrupts were dealt with (``handled``): a fleet stops after a host that did.
_handled = [0]


def handled() -> None:
    """The interrupt in flight is being dealt with (a rollback runs): forget it."""
    _pending.clear()
    _handled[0] += 1


def handled_count() -> int:
    return _handled[0]


@contextmanager
def _handling(handler: Callable[[int, FrameType | None], None]) -> Iterator[bool]:
    """HANDLER answers SIGINT and SIGTERM for the block, then the previous handlers again.

    Yields False (and changes nothing) outside the main thread, where Python cannot set them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield True
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def terminate_is_interrupt() -> Iterator[None]:
    """For the duration, SIGTERM (like SIGINT) raises KeyboardInterrupt, so `finally` blocks (the
    lock) run; an interrupt that Invoke swallows is raised again after the command."""
    try:
        with _handling(_raise_interrupt):
            yield
    finally:
        _pending.clear()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise KeyboardInterrupt.

    A second signal during the block interrupts at once: the user insists.
    """
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            _raise_interrupt(signum, frame)

    with _handling(hold):
        yield
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)
