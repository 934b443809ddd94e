"""The per-app deploy lock on a host, held for the length of a deploy, rollback or upload.

Taken atomically on the host (``commands.lock``); a held lock fails at once with who holds it.
A lock whose owner is provably gone (taken on this machine by a process that no longer exists,
or in an earlier boot) is cleared with a message; one that is only old (``lock_ttl``) is broken
only on request (``--break-lock``): its owner may be another machine still at work.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from . import facts, history, ui
from .commands import deadman, lock
from .commands.layout import Layout
from .config import Config
from .errors import DeployError, LockHeld
from .host import Remote, RemoteCommandError


@dataclass
class Held:
    """The deploy lock this task holds: its token, and whether a command of the task's own has
    released it already (riding on the last one, such as the audit record)."""

    token: str
    released: bool = False


@contextlib.contextmanager
def deploy_lock(
    host: Remote, layout: Layout, cfg: Config, release: str, command: str, break_lock: bool
) -> Iterator[Held]:
    """Hold the app's deploy lock on the host for the duration; refuse if someone else holds
    it. The lock is released at the end unless the task released it with its last command
    (``Held.released``)."""
    token = uuid.uuid4().hex
    record = json.dumps(
        {
            "token": token,
            "user": getpass.getuser(),
            "origin": socket.gethostname(),
            "pid": os.getpid(),
            "at": time.time(),
            "release": release,
            # "deploy", or "deploy (fleet deploy ID)": what a refused operator is told.
            "command": f"{command} ({history.operation()})" if history.operation() else command,
            "machine": machine_id(),
            "boot": boot_id(),
        },
        sort_keys=True,
    )
    # A dead-man switch still armed when the lock is ours belongs to a deploy that is gone (or
    # whose lock was broken): it puts back what that deploy replaced, now, before the state is
    # read; never under a new deploy.
    acquire = lock.acquire(layout.lock, record, layout.incoming_dir, deadman.finish(layout))
    held = Held(token)
    if host.dry_run:
        host.run(acquire)
        yield held
        return
    result = host.run(acquire, check=False)
    if result.exit_code == lock.HELD:
        holder = facts.lock_record(result.stdout)
        if holder is None:  # released in between: try once more
            result = host.run(acquire, check=False)
        elif _owner_gone(holder) or (break_lock and _stale(holder, cfg.deploy.lock_ttl)):
            if not break_lock:
                ui.console.print(
                    f"[{host.name}] clearing the deploy lock of {holder.user}@{holder.origin} "
                    f"(pid {holder.pid}, `{holder.command}` of {holder.release}): that process "
                    "is gone",
                    markup=False,
                    highlight=False,
                )
            host.run(lock.break_(layout.lock, holder.token))
            result = host.run(acquire, check=False)
        else:
            raise LockHeld(_held_message(host.name, holder, cfg.deploy.lock_ttl, break_lock))
    if result.exit_code == lock.NOT_SET_UP:
        raise DeployError(
            f"[{host.name}] is not set up for portable-deploy (no {layout.state_dir})",
            hint=f"run `invoke host.setup --host {host.name}` once",
        )
    if result.exit_code != 0:
        raise RemoteCommandError(host.name, acquire, result)
    if deadman.FINISHED in result.stdout:
        ui.console.print(
            f"[{host.name}] a deploy that is gone left the host's dead-man switch armed: it "
            "put back the release that deploy had replaced, first (see the audit log)",
            markup=False,
            highlight=False,
        )
    try:
        yield held
    except BaseException as first:
        if held.released:
            raise
        # Release on every path, but never let a failed release (the connection is gone) hide
        # why the task failed.
        try:
            host.run(lock.release(layout.lock, token))
        except DeployError as second:
            if isinstance(first, DeployError):
                # The same error (its type and what it carries, such as a fleet's table), told
                # that the lock is still held.
                first.message += f"; the deploy lock is still held ({second.message})"
                first.hint = (
                    first.hint + "; " if first.hint else ""
                ) + "once this process has exited, retry with --break-lock"
                first.args = (first.message,)
                raise first from None
        raise
    if not held.released:
        host.run(lock.release(layout.lock, token))


def read_lock(host: Remote, layout: Layout) -> facts.LockRecord | None:
    """Who holds the app's deploy lock on the host (None: nobody)."""
    return facts.lock_record(host.run(lock.read(layout.lock)).stdout)


def why_stale(holder: facts.LockRecord, ttl: int) -> str | None:
    """Why `--break-lock` would break HOLDER's lock (None: it would not: it is not stale)."""
    if not _stale(holder, ttl):
        return None
    if _owner_gone(holder):
        return "the process that took it, on this machine, is gone"
    return f"it is older than [deploy] lock_ttl ({ttl}s)"


def release_stale(host: Remote, layout: Layout, cfg: Config) -> tuple[facts.LockRecord, str] | None:
    """`invoke lock.release`: remove the app's deploy lock if `--break-lock` would break it;
    returns its holder and why it was stale (None: there was no lock). A lock that is not stale
    is refused (``LockHeld``) and left as it is."""
    holder = read_lock(host, layout)
    if holder is None:
        return None
    why = why_stale(holder, cfg.deploy.lock_ttl)
    if why is None:
        raise LockHeld(
            _held_message(host.name, holder, cfg.deploy.lock_ttl, break_lock=True),
            hint="wait for it to finish; if its owner (on another machine) is gone, "
            f"lock.release works once the lock is older than lock_ttl ({cfg.deploy.lock_ttl}s)",
        )
    host.run(lock.break_(layout.lock, holder.token))
    return holder, why


def machine_id() -> str:
    """This machine's identity (/etc/machine-id); "" where there is none."""
    return _read_id("/etc/machine-id")


def boot_id() -> str:
    """This boot's identity: a pid recorded under another boot id no longer runs."""
    return _read_id("/proc/sys/kernel/random/boot_id")


def _read_id(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _stale(holder: facts.LockRecord, ttl: int) -> bool:
    """Older than TTL, or taken on this machine by a process that is gone (or in an earlier boot)."""
    return time.time() - holder.at > ttl or _owner_gone(holder)


def _owner_gone(holder: facts.LockRecord) -> bool:
    """Taken on this machine by a process that no longer exists, or in an earlier boot."""
    here = machine_id()
    if holder.machine and here:
        if holder.machine != here:
            return False
        if holder.boot and holder.boot != boot_id():
            return True
    elif holder.origin != socket.gethostname():
        return False
    if holder.pid > 0:
        try:
            # No mutants here: signal 0 mutated to 1 would send SIGHUP to a real process.
            os.kill(holder.pid, 0)  # pragma: no mutate
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _held_message(host: str, holder: facts.LockRecord, ttl: int, break_lock: bool) -> str:
    since = datetime.fromtimestamp(holder.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    base = (
        f"[{host}] deploy lock held by {holder.user}@{holder.origin} (pid {holder.pid}) since "
        f"{since}, running `{holder.command}` for {holder.release}"
    )
    if break_lock:
        return f"{base}; it is not stale (younger than {ttl}s and its owner may be alive)"
    return f"{base} (hint: wait for it; if its owner (on another machine) is gone, retry with --break-lock)"
