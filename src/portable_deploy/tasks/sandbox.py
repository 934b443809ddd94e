"""`invoke sandbox.*`: the local Debian 12 VMs that stand in for a VPS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from .. import ui
from ..config import config_path
from ..errors import DeployError
from ..targets import open_hosts
from .common import config, say, set_up_sandbox, user_errors

if TYPE_CHECKING:
    from ..sandbox import VM, Sandbox


def _sandbox() -> Sandbox:
    from ..sandbox import Sandbox

    return Sandbox()


def _vm_table(vms: list[VM]) -> None:
    rows = [
        [v.name, f"127.0.0.1:{v.ssh_port}", f"127.0.0.1:{v.http_port}",
         f"127.0.0.1:{v.https_port}", str(v.pid)]
        for v in vms
    ]  # fmt: skip
    ui.table("sandbox", ["name", "ssh", "http", "https", "pid"], rows)


@task(help={"count": "How many VMs (default 1); running ones are reused."})
@user_errors
def up(c: Context, count: int = 1) -> None:
    """Boot the local Debian 12 sandbox VM(s) and print how to reach them."""
    vms = _sandbox().up(count, progress=say)
    if config_path().exists():
        _set_up_app_host()
    _vm_table(vms)


def _set_up_app_host() -> None:
    """Set up deploy.toml's sandbox host now if we can; booting needs no signing key."""
    cfg = config()
    names = [h.name for h in cfg.hosts.values() if h.sandbox]
    if not names:
        return
    with open_hosts(cfg, names, progress=say) as opened:
        for host in opened:
            try:
                set_up_sandbox(cfg, host)
            except DeployError as e:
                say(
                    f"{host.name} is up but not set up yet ({e.message}); `invoke deploy` sets it up"
                )


@task
@user_errors
def down(c: Context) -> None:
    """Stop every sandbox VM; no process is left behind."""
    stopped = _sandbox().down(progress=say)
    ui.console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@task
@user_errors
def status(c: Context) -> None:
    """List the sandbox VMs that are running."""
    vms = _sandbox().status()
    if not vms:
        ui.console.print("no sandbox VM is running (invoke sandbox.up)")
        return
    _vm_table(vms)


@task(
    help={
        "domain": "A test domain the VM resolves to itself (repeatable; default APP.test).",
        "name": "VM name (default: the first running one).",
        "root": "Where to write pebble's issuing root, PEM (default .deploy/sandbox-acme-root.pem).",
    },
    iterable=["domain"],
)
@user_errors
def acme(
    c: Context, domain: list[str] | None = None, name: str | None = None, root: str | None = None
) -> None:
    """Run a Let's Encrypt test CA (pebble) in a sandbox VM, for trying TLS with no real domain."""
    from ..sandbox import acme as pebble

    box = _sandbox()
    vms = [v for v in box.status() if name in (None, v.name)]
    if not vms:
        raise DeployError(
            f"sandbox VM {name} is not running" if name else "no sandbox VM is running",
            hint="start it with `invoke sandbox.up`",
        )
    domains = domain or [f"{config().app.name}.test"]
    try:
        pem = pebble.start(vms[0], domains)
    except (ValueError, RuntimeError) as e:
        raise DeployError(
            str(e), hint=f"see `invoke sandbox.ssh -- journalctl -u {pebble.UNIT}`"
        ) from None
    out = Path(root or ".deploy/sandbox-acme-root.pem")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(pem)
    say(
        f"pebble answers in {vms[0].name} at {pebble.DIRECTORY_URL}; {', '.join(domains)} -> the VM"
    )
    say(f"its issuing root (new at each pebble start) is in {out}: use it as [verify.tls] ca_file")


@task(help={"name": "VM name (default: the first running one). A command may follow `--`."})
@user_errors
def ssh(c: Context, name: str | None = None) -> None:
    """Open a root shell on a sandbox VM, or run the command given after `--`."""
    command = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    argv = _sandbox().ssh_argv(name, command)
    code = subprocess.call(argv)
    if code != 0:
        raise Exit(code=code)
