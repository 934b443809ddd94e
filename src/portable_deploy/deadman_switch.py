"""The dead-man switch's revert, as the shell script the host runs if the deployer goes silent
after a switch: the same steps as the deployer's own rollback (the previous secrets drop-ins, the
reattach of the previous release with its restarts), then the audit record and the release of
the deployer's lock. Rendered from the tool's builders: the host needs only sh and systemd.
"""

from __future__ import annotations

from collections.abc import Mapping

from .command import Command
from .commands import creds, deadman, files, lock, systemctl
from .commands.layout import Layout
from .config import Config
from .credentials import changed_units, dropin_path
from .history import record_line
from .host import Remote
from .manifest import Manifest
from .plan import Action, Plan, plan_release
from .preflight import HostState
from .steps import reattach_command
from .verify import watched_units


def way_back(
    cfg: Config,
    state: HostState,
    failed: Manifest,
    previous: Manifest,
    dropins: Mapping[str, str | None],
) -> tuple[Plan, Command | None]:
    """From FAILED (switched to with DROPINS) back to PREVIOUS: the plan, and the command that
    puts back the secrets drop-ins PREVIOUS ran with (None: they did not change). What both the
    deployer's own rollback and the dead-man switch do."""
    changed = changed_units(state.secret_dropins, dropins)
    back = plan_release(
        failed,
        previous,
        restart_sockets=True,
        profile=cfg.deploy.profile,
        secrets_changed=frozenset(changed),
    )
    if not changed:
        return back, None
    old = {u: (dropin_path(u), state.secret_dropins.get(u)) for u in sorted(changed)}
    return back, creds.apply_dropins(old)


def dead_man(
    host: Remote,
    cfg: Config,
    layout: Layout,
    state: HostState,
    lock_token: str,
    failed: Manifest,
    plan: Plan,
    dropins: Mapping[str, str | None],
    event: str,
) -> Command | None:
    """The command that arms the switch for this switch to FAILED, or None when there is nothing
    to go back to (a first deploy: the app was not serving before, so the new release stays and
    `invoke verify` or `invoke rollback` settles it) or nothing switches."""
    previous = state.live_manifest
    if previous is None or host.dry_run or plan.action is Action.NONE:
        return None
    back, restore = way_back(cfg, state, failed, previous, dropins)
    timeout = cfg.deploy.confirm_timeout
    why = (
        f"no sign of life from the deployer for {timeout}s after the switch: "
        f"{previous.release} put back by the host's dead-man switch"
    )
    audit = {
        result: files.append_log(
            layout.audit_log,
            record_line(
                event, failed.release, previous.release, result, why, state.live_secret_set
            ),
            stamped=True,
        ).render(reveal=True)
        for result in ("rolled-back", "rollback-failed")
    }
    parts = [restore.render(reveal=True)] if restore is not None else []
    swap = reattach_command(layout, back)
    # Then every long-running unit of PREVIOUS is started (a no-op for those running): after a
    # reboot the swap can race the boot's own start jobs, and a sidecar left stopped would
    # otherwise stay so.
    running = systemctl.start(watched_units(previous))
    back_again = running if swap is None else swap.then(running)
    parts.append(
        f"if {back_again.render(reveal=True)}; then {audit['rolled-back']}; "
        f"else {audit['rollback-failed']}; fi"
    )
    parts.append(lock.release(layout.lock, lock_token).render(reveal=True))
    return deadman.arm(layout, timeout, "; ".join(parts))
