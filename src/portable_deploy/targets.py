"""From deploy.toml host entries to reachable ``Host`` objects (the sandbox VM is booted if needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import pipeline
from .config import Config, HostConfig
from .errors import DeployError
from .host import Echo, Host, Target

SANDBOX_VM = "sandbox-1"


def select(cfg: Config, names: Sequence[str] | None) -> list[HostConfig]:
    """The hosts a task acts on: the named ones, else every host in deploy.toml."""
    if not names:
        return list(cfg.hosts.values())
    unknown = [n for n in names if n not in cfg.hosts]
    if unknown:
        raise DeployError(
            f"{cfg.path}: no host named {', '.join(unknown)}",
            hint=f"hosts in it: {', '.join(cfg.hosts)}",
        )
    return [cfg.hosts[n] for n in names]


def target_for(host: HostConfig, progress: Callable[[str], None] | None = None) -> Target:
    if not host.sandbox:
        assert host.address is not None  # config guarantees it
        return Target(host.name, host.address, host.port, host.user, host.identity_file)
    from .sandbox import Sandbox

    box = Sandbox()
    running = {vm.name: vm for vm in box.status()}
    vm = running.get(SANDBOX_VM)
    if vm is None:
        vms = box.up(1, progress=progress)
        vm = next(v for v in vms if v.name == SANDBOX_VM)
    return Target(host.name, "127.0.0.1", vm.ssh_port, vm.user, vm.key, known_hosts=vm.known_hosts)


def open_hosts(
    cfg: Config,
    names: Sequence[str] | None,
    *,
    echo: Echo | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Host]:
    """Hosts ready to use; a sandbox host that was never set up is set up on the way."""
    hosts = []
    for entry in select(cfg, names):
        host = Host(target_for(entry, progress), echo=echo, dry_run=dry_run)
        if entry.sandbox and not dry_run and not pipeline.check_host(host).trusted:
            # Only a sandbox that was never set up: the trust root is then never replaced by a
            # deploy, exactly as on a real host.
            changed = pipeline.setup_host(host, cfg)
            if progress is not None:
                progress(f"set up {entry.name}: {'; '.join(changed)}")
        hosts.append(host)
    return hosts
