"""A task on several hosts: the deploy lock on every one first (in a fixed order), then the
uploads side by side, then the switch in health-gated batches, and a row per host at the end.

    lock all (sorted)  ->  upload to all (at most [fleet] parallel at a time)
                       ->  switch batch 1 (the canary), verify  ->  batch 2 ...  ->  unlock all

A batch whose switch fails on a host is rolled back there by the host's own switch (the single
host pipeline); later batches are never touched; the hosts that passed stay on the new release
unless [fleet] on_failure = "rollback-all" (or --rollback-all) puts them back too. Hosts that
cannot be reached (or whose upload fails) before any switch are left out and reported, up to
[fleet] max_failures; one more and nothing is switched anywhere.

One host is not a fleet: the tasks call the pipeline directly, so its output, errors and
interrupts stay what they are.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from . import history, interrupts
from .board import Board
from .config import Batch, Config
from .credentials import SecretSet
from .errors import DeployError, LockHeld
from .host import Remote
from .pipeline import Session, go_live, put_back, roll_back, session, stage, switch, tidy
from .preflight import read_state
from .release import Options, Signed, check_local
from .secrets import SecretValue

T = TypeVar("T")
R = TypeVar("R")

# What happened on a host, as the final table says it.
DEPLOYED = "deployed"
ROLLED_BACK = "failed, rolled back"
FAILED = "failed"
PUT_BACK = "put back (rollback-all)"
UNREACHABLE = "unreachable"
UPLOAD_FAILED = "upload failed"
UNTOUCHED = "not touched"
SKIPPED = "skipped (an earlier batch failed)"
PUT_BACK_FAILED = "put back failed"
ROLLED_BACK_ON_REQUEST = "rolled back"


@dataclass
class HostRun:
    """One host in a fleet task: what it ran before, what it runs now, what happened."""

    name: str
    before: str | None = None
    now: str | None = None
    result: str = UNTOUCHED
    message: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.left_out or self.result in (ROLLED_BACK, FAILED)

    @property
    def left_out(self) -> bool:
        """Failed before any switch: tolerated up to [fleet] max_failures."""
        return self.result in (UNREACHABLE, UPLOAD_FAILED)


class FleetFailed(DeployError):
    """The fleet task failed on some hosts; the table of HostRuns says which and how."""

    def __init__(self, message: str, runs: Sequence[HostRun], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.runs = list(runs)


def batch_sizes(total: int, batches: Sequence[Batch]) -> list[int]:
    """How many hosts each batch switches, in order. A number is a count, a share ("25%") is
    of the whole fleet, rounded up; the last entry repeats until every host is in a batch (as
    Ansible's ``serial``)."""
    sizes: list[int] = []
    left = total
    i = 0
    while left > 0:
        spec = batches[min(i, len(batches) - 1)]
        n = spec if isinstance(spec, int) else math.ceil(total * int(spec[:-1]) / 100)
        n = max(1, min(n, left))
        sizes.append(n)
        left -= n
        i += 1
    return sizes


def in_batches(items: Sequence[T], batches: Sequence[Batch]) -> list[list[T]]:
    out, at = [], 0
    for n in batch_sizes(len(items), batches):
        out.append(list(items[at : at + n]))
        at += n
    return out


def each(
    items: Sequence[T],
    work: Callable[[T], R],
    limit: int,
    on_interrupt: Callable[[], None] | None = None,
) -> list[R | DeployError]:
    """WORK on every item, at most LIMIT at a time; a DeployError comes back in its item's
    place. A single item (or LIMIT 1) runs in this thread, so that an interrupt reaches it as in
    a one-host task. An interrupt while threads run starts nothing more, calls ON_INTERRUPT (which
    may end the running ones: close their connections), lets the running ones end (a switch
    ends verified or rolled back), then is raised."""
    if len(items) <= 1 or limit <= 1:
        results: list[R | DeployError] = []
        for item in items:
            before = interrupts.handled_count()
            try:
                results.append(work(item))
            except DeployError as e:
                results.append(e)
            if interrupts.handled_count() != before:  # it dealt with an interrupt: stop here
                raise KeyboardInterrupt("SIGINT")
        return results
    pool = ThreadPoolExecutor(max_workers=min(limit, len(items)), thread_name_prefix="fleet")
    futures: list[Future[R]] = [pool.submit(work, item) for item in items]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
    except KeyboardInterrupt:
        interrupts.handled()
        if on_interrupt is not None:
            on_interrupt()
        for future in futures:
            future.cancel()
        # The locks are let go only once every thread has ended, however often the user insists
        # (Python would wait for the threads at exit anyway).
        while True:
            try:
                pool.shutdown(wait=True)
                break
            except KeyboardInterrupt:
                interrupts.handled()
        raise
    pool.shutdown(wait=True)
    done: list[R | DeployError] = []
    for future in futures:
        error = future.exception()
        if error is None:
            done.append(future.result())
        elif isinstance(error, DeployError):
            done.append(error)
        else:
            raise error
    return done


def new_operation(kind: str, hosts: int) -> str:
    """Name this process's fleet operation: every audit record and lock it writes carries it."""
    name = f"fleet {kind} {uuid.uuid4().hex[:12]} ({hosts} hosts)"
    history.set_operation(name)
    return name


@contextmanager
def locked(
    hosts: Sequence[Remote],
    cfg: Config,
    event: str,
    release: str,
    runs: dict[str, HostRun],
    board: Board,
    break_lock: bool = False,
) -> Iterator[list[Session]]:
    """The deploy lock on every host, taken one host after the other in the order of their
    names (two operators on overlapping fleets never deadlock: the first to reach a host wins,
    the other is refused there with the holder's name, and lets go of what it holds). A host
    that cannot be reached is marked and left out; [fleet] max_failures of them are tolerated.
    Every lock is released on every way out."""
    with ExitStack() as stack:
        sessions = []
        for host in sorted(hosts, key=lambda h: h.name):
            run = runs[host.name]
            board.update(host.name, "lock")
            try:
                s = stack.enter_context(_held(host, cfg, event, release, break_lock, run, board))
            except LockHeld:
                raise
            except DeployError as e:
                _mark(run, UNREACHABLE, e, board)
                _tolerate(runs, cfg, "before anything changed")
                continue
            run.before = run.now = s.state.live
            board.update(host.name, "locked", s.state.live or "")
            sessions.append(s)
        order = {h.name: i for i, h in enumerate(hosts)}
        yield sorted(sessions, key=lambda s: order[s.host.name])


@contextmanager
def _held(
    host: Remote,
    cfg: Config,
    event: str,
    release: str,
    break_lock: bool,
    run: HostRun,
    board: Board,
) -> Iterator[Session]:
    """One host's session; at the normal end, a lock that cannot be released (the host went
    away) is said in its row, never raised over the other hosts' outcome."""
    with ExitStack() as inner:
        yield inner.enter_context(session(host, cfg, event, release, break_lock))
        try:
            inner.close()
        except DeployError as e:
            run.message += (
                f"{'; ' if run.message else ''}its deploy lock is still held: {e.message}"
            )
            board.update(run.name, run.result, run.message, failed=True)


def _mark(run: HostRun, result: str, error: DeployError, board: Board) -> None:
    run.result, run.message = result, error.message
    board.update(run.name, result, error.message, failed=True)


def _tolerate(runs: dict[str, HostRun], cfg: Config, when: str) -> None:
    """Raise when more hosts failed than [fleet] max_failures allows."""
    failed = [r for r in runs.values() if r.failed]
    if len(failed) > cfg.fleet.max_failures:
        raise FleetFailed(
            f"{len(failed)} of {len(runs)} hosts failed {when} "
            f"({', '.join(r.name for r in failed)}), more than [fleet] max_failures = "
            f"{cfg.fleet.max_failures}: nothing was switched",
            list(runs.values()),
            hint="see the table above; fix or leave out those hosts (--host, --role), or raise "
            "[fleet] max_failures",
        )


def deploy(
    hosts: Sequence[Remote],
    cfg: Config,
    signed: Signed,
    opts: Options,
    board: Board,
    secrets: Sequence[SecretValue] = (),
    rollback_all: bool = False,
) -> list[HostRun]:
    """`invoke deploy` on several hosts: see the module's text. Returns a row per host;
    raises FleetFailed (with the rows) when any host failed."""
    m = signed.manifest
    check_local(signed)
    new_operation("deploy", len(hosts))
    runs = {h.name: HostRun(h.name) for h in hosts}
    rollback_all = rollback_all or cfg.fleet.on_failure == "rollback-all"
    with _interrupts_end_in_the_table(runs):
        _deploy(hosts, cfg, signed, opts, board, secrets, rollback_all, runs)
    _raise_if_failed(runs, "deploy", m.release, rollback_all)
    return list(runs.values())


@contextmanager
def _interrupts_end_in_the_table(runs: dict[str, HostRun]) -> Iterator[None]:
    """Ctrl-C or SIGTERM: nothing more is started, the hosts in flight end their step (a switch
    ends verified or rolled back), every lock is released, and the table says where each host
    is: one error, exit code 1."""
    try:
        yield
    except KeyboardInterrupt as signal:
        interrupts.handled()
        raise FleetFailed(
            f"interrupted ({signal or 'SIGINT'}): nothing more was started; the hosts in "
            "flight ended their step",
            list(runs.values()),
            hint="see the table for where each host is; `invoke status` reads them again",
        ) from None


def _deploy(
    hosts: Sequence[Remote],
    cfg: Config,
    signed: Signed,
    opts: Options,
    board: Board,
    secrets: Sequence[SecretValue],
    rollback_all: bool,
    runs: dict[str, HostRun],
) -> None:
    m = signed.manifest
    with locked(hosts, cfg, "deploy", m.release, runs, board, opts.break_lock) as sessions:
        # 1. Upload to every host, side by side; nothing is switched yet.
        def upload(s: Session) -> SecretSet:
            with _timed(runs[s.host.name]):
                return stage(s, signed, board.steps(s.host.name, "upload"), secrets)

        staged: list[tuple[Session, SecretSet]] = []
        with board.phase("upload"):
            # Ctrl-C ends the uploads at once (each resumes next time): their connections close.
            uploads = each(
                sessions, upload, cfg.fleet.parallel, lambda: _close(s.host for s in sessions)
            )
        for s, got in zip(sessions, uploads, strict=True):
            if isinstance(got, DeployError):
                _mark(runs[s.host.name], UPLOAD_FAILED, got, board)
            else:
                board.update(s.host.name, "uploaded")
                staged.append((s, got))
        _tolerate(runs, cfg, "before the switch")
        if opts.dry_run:
            for s, delivered in staged:
                go_live(s, signed, opts, board.steps(s.host.name, "switch"), delivered)
            return

        # 2. Switch in batches, each verified before the next.
        switched: list[Session] = []

        def go(item: tuple[Session, SecretSet]) -> None:
            s, delivered = item
            run = runs[s.host.name]
            steps = board.steps(s.host.name, "switch")
            with _timed(run):
                try:
                    switch(s, m, opts, steps, "deploy", delivered)
                except DeployError as e:
                    run.now = _live_now(s)
                    back = run.now is not None and run.now == run.before
                    run.result = ROLLED_BACK if back else FAILED
                    run.message = e.message
                    board.update(s.host.name, run.result, e.message, failed=True)
                    raise
                run.now, run.result = m.release, DEPLOYED
                try:  # the release is live and verified: a failure here is only reported
                    tidy(s, m, steps, delivered)
                except DeployError as e:
                    run.message = f"then pruning failed: {e.message}"
            board.update(s.host.name, DEPLOYED, m.release)

        batches = in_batches(staged, cfg.fleet.batches)
        with board.phase("switch"):
            failed_at = _switch_batches(batches, go, switched, board, cfg)
        if failed_at is not None:
            for later in batches[failed_at:]:
                for s, _ in later:
                    runs[s.host.name].result = SKIPPED
                    board.update(s.host.name, SKIPPED)
            if rollback_all:
                _put_back_all(switched, runs, opts, board, cfg)


def _switch_batches(
    batches: Sequence[Sequence[tuple[Session, SecretSet]]],
    switch: Callable[[tuple[Session, SecretSet]], None],
    switched: list[Session],
    board: Board,
    cfg: Config,
) -> int | None:
    """Switch batch after batch, each side by side and verified before the next; the number of
    the batch that failed (None: none did). SWITCHED gets every host that passed."""
    for number, batch in enumerate(batches, 1):
        board.note(f"batch {number} of {len(batches)}: {', '.join(s.host.name for s, _ in batch)}")
        results = each(batch, switch, cfg.fleet.parallel)
        switched += [s for (s, _), r in zip(batch, results, strict=True) if r is None]
        if any(isinstance(r, DeployError) for r in results):
            return number
        if cfg.fleet.pause and number < len(batches):
            board.note(f"pause {cfg.fleet.pause:g}s ([fleet] pause)")
            time.sleep(cfg.fleet.pause)
    return None


def _put_back_all(
    switched: Sequence[Session],
    runs: dict[str, HostRun],
    opts: Options,
    board: Board,
    cfg: Config,
) -> None:
    """rollback-all: every host that took the new release goes back to what it ran before."""
    board.note(f"rollback-all: putting back {', '.join(s.host.name for s in switched)}")

    def back(s: Session) -> None:
        run = runs[s.host.name]
        with _timed(run):
            try:
                put_back(s, opts, board.steps(s.host.name, "put back"))
            except DeployError as e:
                run.now = _live_now(s)
                run.result, run.message = FAILED, f"{PUT_BACK_FAILED}: {e.message}"
                board.update(s.host.name, FAILED, run.message, failed=True)
                raise
        run.now, run.result = run.before, PUT_BACK
        board.update(s.host.name, PUT_BACK, run.before or "")

    each(switched, back, cfg.fleet.parallel)


def rollback(
    hosts: Sequence[Remote], cfg: Config, to: str | None, opts: Options, board: Board
) -> list[HostRun]:
    """`invoke rollback` on several hosts: every lock first, then every host back to its own
    previous release (or TO), side by side: a rollback is urgent, it is not batched."""
    new_operation("rollback", len(hosts))
    runs = {h.name: HostRun(h.name) for h in hosts}
    with (
        _interrupts_end_in_the_table(runs),
        locked(hosts, cfg, "rollback", to or "previous", runs, board, opts.break_lock) as sessions,
    ):

        def back(s: Session) -> None:
            run = runs[s.host.name]
            with _timed(run):
                try:
                    plan = roll_back(s, to, opts, board.steps(s.host.name, "rollback"))
                except DeployError as e:
                    run.now = _live_now(s)
                    run.result = FAILED
                    run.message = e.message
                    board.update(s.host.name, FAILED, e.message, failed=True)
                    raise
            run.now, run.result = plan.release, ROLLED_BACK_ON_REQUEST
            board.update(s.host.name, ROLLED_BACK_ON_REQUEST, plan.release)

        each(sessions, back, cfg.fleet.parallel)
    _raise_if_failed(runs, "rollback", to or "the previous releases", False)
    return list(runs.values())


def _raise_if_failed(runs: dict[str, HostRun], kind: str, release: str, put_back: bool) -> None:
    """Raise FleetFailed if any host failed: in the switch, or before it (left out, within
    [fleet] max_failures: the others went on, and the exit code still says not all did)."""
    failed = [r for r in runs.values() if r.failed and not r.left_out]
    left = [r for r in runs.values() if r.left_out]
    if not failed and not left:
        return
    done = [r.name for r in runs.values() if r.result in (DEPLOYED, ROLLED_BACK_ON_REQUEST)]
    parts = [f"{kind} failed on {', '.join(r.name for r in failed)}"] if failed else []
    if left:
        shown = ", ".join(f"{r.name} ({r.result})" for r in left)
        parts.append(f"left out {shown}, within [fleet] max_failures")
    tail = ""
    if kind == "deploy" and done:
        tail = f"; {', '.join(done)} {'kept' if failed else 'now run'} {release}"
    elif kind == "rollback" and done:
        tail = f"; rolled back: {', '.join(done)}"
    elif kind == "deploy" and put_back:
        back = [r.name for r in runs.values() if r.result == PUT_BACK]
        stuck = [r.name for r in runs.values() if r.message.startswith(PUT_BACK_FAILED)]
        if back:
            tail = f"; put back: {', '.join(back)}"
        if stuck:
            tail += f"; could not be put back: {', '.join(stuck)}"
    raise FleetFailed(
        "; ".join(parts) + tail,
        list(runs.values()),
        hint="see the table above, and `invoke logs --host NAME` for a failed host"
        + ("; `invoke rollback` returns the rest" if done else ""),
    )


def summary(runs: Sequence[HostRun], release: str, rollback: bool = False) -> str:
    """The last line of a fleet task that succeeded on every host."""
    names = ", ".join(r.name for r in runs)
    return f"rolled back: {names}" if rollback else f"{release} is live on {names}"


def _close(hosts: Iterable[Remote]) -> None:
    for host in hosts:
        with suppress(Exception):  # a connection torn down under its thread
            host.close()


def _live_now(s: Session) -> str | None:
    """What the host runs now, read again (None: it cannot be reached to say)."""
    try:
        return read_state(s.host, s.layout, s.cfg.deploy.profile).live
    except DeployError:
        return None


@contextmanager
def _timed(run: HostRun) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        run.seconds += time.monotonic() - start
