"""The per-app deploy lock on a host, held for the length of a deploy, rollback or upload.

Taken atomically on the host (``commands.lock``); a held lock fails at once with who holds it,
and a stale one (older than ``lock_ttl``, or its local owner gone) is broken only on request.
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
from datetime import UTC, datetime

from . import facts
from .commands import lock
from .commands.layout import Layout
from .config import Config
from .errors import DeployError
from .host import Remote, RemoteCommandError


@contextlib.contextmanager
def deploy_lock(
    host: Remote, layout: Layout, cfg: Config, release: str, command: str, break_lock: bool
) -> Iterator[None]:
    """Hold the app's deploy lock on the host for the duration; refuse if someone else holds it."""
    token = uuid.uuid4().hex
    record = json.dumps(
        {
            "token": token,
            "user": getpass.getuser(),
            "origin": socket.gethostname(),
            "pid": os.getpid(),
            "at": time.time(),
            "release": release,
            "command": command,
        },
        sort_keys=True,
    )
    if host.dry_run:
        host.run(lock.acquire(layout.lock, record))
        yield
        return
    result = host.run(lock.acquire(layout.lock, record), check=False)
    if result.exit_code == lock.HELD:
        holder = facts.lock_record(result.stdout)
        if holder is None:  # released in between: try once more
            result = host.run(lock.acquire(layout.lock, record), check=False)
        elif break_lock and _stale(holder, cfg.deploy.lock_ttl):
            host.run(lock.break_(layout.lock, holder.token))
            result = host.run(lock.acquire(layout.lock, record), check=False)
        else:
            raise DeployError(_held_message(host.name, holder, cfg.deploy.lock_ttl, break_lock))
    if result.exit_code != 0:
        raise RemoteCommandError(host.name, lock.acquire(layout.lock, record), result)
    try:
        yield
    finally:
        host.run(lock.release(layout.lock, token))


def _stale(holder: facts.LockRecord, ttl: int) -> bool:
    if time.time() - holder.at > ttl:
        return True
    if holder.origin == socket.gethostname() and holder.pid > 0:
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
    return f"{base} (hint: wait for it; if its owner is gone, retry with --break-lock)"
