"""What every task shares: the config, its hosts, the flags' help, and errors -> one line, exit 1."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from invoke.exceptions import Exit

from .. import interrupts, preflight, ui
from ..config import Config, config_path, load_config
from ..errors import DeployError
from ..host import Host
from ..targets import open_hosts

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PORTABLE_DEPLOY_DEBUG"

HOST_HELP = "Act on this host from deploy.toml (repeatable; default: every host)."
ROLE_HELP = "Act on the hosts with this role in deploy.toml (repeatable; with --host: both)."
JSON_HELP = "Print one JSON document on stdout and nothing else (messages go to stderr)."
ECHO_HELP = "Show every remote command as `[host] $ command`."
DRY_HELP = "Show the remote commands and the units that would restart; change nothing."
#: The flags of every task that switches the live release (deploy, rollback, reattach).
SWITCH_HELP = {
    "host": HOST_HELP,
    "role": ROLE_HELP,
    "echo": ECHO_HELP,
    "dry_run": DRY_HELP,
    "restart_sockets": "Allow restarting a .socket unit whose unit file changed.",
    "break_lock": "Break a stale deploy lock (older than lock_ttl, or its local owner is gone).",
}


def user_errors(fn: F) -> F:
    """A DeployError becomes `error: message (hint: ...)` and exit code 1; no traceback
    unless $PORTABLE_DEPLOY_DEBUG is set. SIGTERM is handled like Ctrl-C (the lock is released)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with interrupts.terminate_is_interrupt():
                return fn(*args, **kwargs)
        except DeployError as e:
            if os.environ.get(DEBUG_ENV):
                raise
            raise Exit(ui.redact(f"error: {e}"), code=1) from None
        except OSError as e:
            # A local file the task could not read or write (dist/ not writable, a full disk).
            if os.environ.get(DEBUG_ENV):
                raise
            where = f": {e.filename}" if e.filename else ""
            raise Exit(
                f"error: {e.strerror or e}{where} (hint: check that path and its permissions; "
                f"{DEBUG_ENV}=1 shows where it happened)",
                code=1,
            ) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def config() -> Config:
    """deploy.toml next to tasks.py, or the file $DEPLOY_TOML names."""
    return load_config(config_path())


def say(line: str) -> None:
    ui.console.print(f"  {line}")


@contextmanager
def hosts(
    cfg: Config,
    names: list[str] | None,
    roles: list[str] | None = None,
    *,
    echo: bool = False,
    dry_run: bool = False,
) -> Iterator[list[Host]]:
    """The selected hosts, open for the task; a sandbox host that was never set up is set up."""
    with open_hosts(
        cfg,
        names,
        roles=roles,
        echo=ui.echo if (echo or dry_run) else None,
        dry_run=dry_run,
        progress=say,
    ) as opened:
        if not dry_run:
            for host in opened:
                set_up_sandbox(cfg, host)
        yield opened


def set_up_sandbox(cfg: Config, host: Host) -> None:
    """First use of the sandbox VM: `host.setup`, as a user would run it on a new VPS."""
    if cfg.hosts[host.name].sandbox:
        changed = preflight.set_up_if_new(host, cfg)
        if changed:
            say(f"set up {host.name}: {'; '.join(changed)}")


def each_host(opened: list[Host], work: Callable[[Host], object], what: str) -> None:
    """WORK on every host in turn; on several hosts one that fails (or cannot be reached) is
    reported and the others still get their turn; then exit code 1 if any failed."""
    if len(opened) == 1:
        work(opened[0])
        return
    failed = []
    for host in opened:
        try:
            work(host)
        except DeployError as e:
            failed.append(host.name)
            ui.error(e.message, e.hint)
    if failed:
        raise DeployError(
            f"{what} failed on {', '.join(failed)} of {len(opened)} hosts",
            hint="see the errors above",
        )
