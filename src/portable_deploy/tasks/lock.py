"""`invoke lock.status` and `invoke lock.release`: the app's deploy lock on each host."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from .. import pipeline, ui
from ..host import Host
from ..status import holder
from .common import HOST_HELP, ROLE_HELP, config, each_host, hosts, user_errors


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP})
@user_errors
def status(c: Context, host: list[str] | None = None, role: list[str] | None = None) -> None:
    """Show who holds the deploy lock on each host, and whether `lock.release` would remove it."""
    cfg = config()
    with hosts(cfg, host, role) as opened:

        def show(h: Host) -> None:
            found = pipeline.lock_on(h, cfg)
            if found is None:
                ui.console.print(f"{h.name}: deploy lock free", markup=False)
                return
            lock, stale = found
            verdict = (
                f"stale ({stale}): `invoke lock.release --host {h.name}` removes it"
                if stale
                else "not stale: its owner may be at work"
            )
            ui.console.print(
                f"{h.name}: deploy lock held by {holder(lock)}; {verdict}", markup=False
            )

        each_host(opened, show, "lock.status")


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP})
@user_errors
def release(c: Context, host: list[str] | None = None, role: list[str] | None = None) -> None:
    """Remove a stale deploy lock (the rules of --break-lock); a lock that is not stale stays."""
    cfg = config()
    with hosts(cfg, host, role) as opened:

        def free(h: Host) -> None:
            removed = pipeline.release_lock_on(h, cfg)
            if removed is None:
                ui.console.print(f"{h.name}: deploy lock free, nothing to release", markup=False)
                return
            lock, why = removed
            ui.console.print(
                f"{h.name}: released the deploy lock of {holder(lock)}: {why}", markup=False
            )

        each_host(opened, free, "lock.release")
