"""From deploy.toml host entries to open ``Host`` connections (the sandbox VM is booted if needed).

Opening hosts only opens hosts: setting up a sandbox that was never set up is a step of its own
(``preflight.set_up_if_new``) that the tasks call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager

from .config import Config, HostConfig
from .errors import DeployError
from .host import Echo, Host, Target


def select(
    cfg: Config, names: Sequence[str] | None, roles: Sequence[str] | None = None
) -> list[HostConfig]:
    """The hosts a task acts on, in deploy.toml's order: the named ones (else every host), of
    those only the ones with one of ROLES when roles are given."""
    unknown = [n for n in names or () if n not in cfg.hosts]
    if unknown:
        raise DeployError(
            f"{cfg.path}: no host named {', '.join(unknown)}",
            hint=f"hosts in it: {', '.join(cfg.hosts)}",
        )
    known_roles = sorted({r for h in cfg.hosts.values() for r in h.roles})
    missing = [r for r in roles or () if r not in known_roles]
    if missing:
        raise DeployError(
            f"{cfg.path}: no host has the role {', '.join(missing)}",
            hint=f"roles in it: {', '.join(known_roles)}"
            if known_roles
            else 'give hosts roles in deploy.toml, e.g. roles = ["web"] under [hosts.NAME]',
        )
    chosen = [h for h in cfg.hosts.values() if not names or h.name in names]
    if roles:
        chosen = [h for h in chosen if set(h.roles) & set(roles)]
        if not chosen:
            raise DeployError(
                f"none of the hosts {', '.join(names or ())} has the role {', '.join(roles)}",
                hint="drop --host or --role, or add the role to the host in deploy.toml",
            )
    return chosen


def target_for(host: HostConfig, progress: Callable[[str], None] | None = None) -> Target:
    """How to reach HOST; for the sandbox host, boot its VM first when it is not running."""
    if not host.sandbox:
        assert host.address is not None  # config guarantees it
        return Target(host.name, host.address, host.port, host.user, host.identity_file)
    from .sandbox import Sandbox, vm_name

    box = Sandbox()
    name = vm_name(host.sandbox_index)
    vm = next((v for v in box.status() if v.name == name), None)
    if vm is None:  # `up N` boots sandbox-1..N, reusing the running ones
        vm = next(v for v in box.up(host.sandbox_index, progress=progress) if v.name == name)
    return Target(host.name, "127.0.0.1", vm.ssh_port, vm.user, vm.key, known_hosts=vm.known_hosts)


@contextmanager
def open_hosts(
    cfg: Config,
    names: Sequence[str] | None,
    *,
    roles: Sequence[str] | None = None,
    echo: Echo | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Iterator[list[Host]]:
    """The selected hosts, connected on first use; every connection is closed on exit."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(Host(target_for(entry, progress), echo=echo, dry_run=dry_run))
            for entry in select(cfg, names, roles)
        ]
