"""The Invoke collection: flags, help text, and turning errors into one line and exit code 1.

A user's tasks.py is ``from portable_deploy.tasks import ns``; deploy.toml next to it is read
(or the file $DEPLOY_TOML names).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from . import pipeline, ui
from .commands import journalctl
from .commands.layout import Layout
from .config import Config, config_path, load_config
from .errors import DeployError
from .host import Host
from .targets import open_hosts, select

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "PORTABLE_DEPLOY_DEBUG"

HOST_HELP = "Act on this host from deploy.toml (repeatable; default: every host)."
ECHO_HELP = "Show every remote command as `[host] $ command`."
DRY_HELP = "Show the remote commands and the units that would restart; change nothing."
#: The flags of every task that switches the live release (deploy, rollback, reattach).
SWITCH_HELP = {
    "host": HOST_HELP,
    "echo": ECHO_HELP,
    "dry_run": DRY_HELP,
    "restart_sockets": "Allow restarting a .socket unit whose unit file changed.",
    "break_lock": "Break a stale deploy lock (older than lock_ttl, or its local owner is gone).",
}


def user_errors(fn: F) -> F:
    """A DeployError becomes `error: message (hint: ...)` and exit code 1; no traceback
    unless $PORTABLE_DEPLOY_DEBUG is set."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DeployError as e:
            if os.environ.get(DEBUG_ENV):
                raise
            raise Exit(f"error: {e}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def _config() -> Config:
    return load_config(config_path())


@contextmanager
def _hosts(
    cfg: Config, names: list[str] | None, *, echo: bool = False, dry_run: bool = False
) -> Iterator[list[Host]]:
    hosts = open_hosts(
        cfg,
        names,
        echo=ui.echo if (echo or dry_run) else None,
        dry_run=dry_run,
        progress=lambda line: ui.console.print(f"  {line}"),
    )
    try:
        yield hosts
    finally:
        for host in hosts:
            host.close()


def _built(cfg: Config, steps: ui.Steps) -> pipeline.Signed:
    with steps.step("build"):
        artifact = pipeline.build(cfg)
        steps.info(f"{artifact.image} ({artifact.manifest.image_size / 1e6:.1f} MB)")
    with steps.step("sign"):
        return pipeline.sign_release(cfg, artifact)


@task
@user_errors
def build(c: Context) -> None:
    """Run the [build] commands and pack dist/NAME_VERSION.raw with its manifest."""
    cfg, steps = _config(), ui.Steps()
    with steps.step("build"):
        artifact = pipeline.build(cfg)
        steps.info(f"image     {artifact.image} ({artifact.manifest.image_size / 1e6:.1f} MB)")
        steps.info(f"manifest  {artifact.manifest_path}")
        steps.info(f"sha256    {artifact.manifest.image_sha256}")


@task
@user_errors
def sign(c: Context) -> None:
    """Sign the built release's manifest (and so its image) with [sign] key."""
    from . import sign as signing

    cfg, steps = _config(), ui.Steps()
    with steps.step("sign"):
        release = pipeline.local_release_unsigned(cfg)
        signature = signing.sign(cfg, release)
        steps.info(f"signature {signature}")


@task(iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def upload(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Send the built, signed release to the hosts and check it there (nothing is attached)."""
    cfg, steps = _config(), ui.Steps()
    signed = pipeline.local_release(cfg)
    with _hosts(cfg, host, echo=echo) as hosts:
        for h in hosts:
            pipeline.upload_to(h, cfg, signed, steps)


@task(iterable=["host"], help=SWITCH_HELP)
@user_errors
def reattach(
    c: Context,
    host: list[str] | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
) -> None:
    """Attach the uploaded release and restart only the units that changed (no verify)."""
    cfg, steps = _config(), ui.Steps()
    signed = pipeline.local_release(cfg)
    opts = pipeline.Options(dry_run, restart_sockets, break_lock)
    with _hosts(cfg, host, echo=echo, dry_run=dry_run) as hosts:
        for h in hosts:
            pipeline.reattach_on(h, cfg, signed, opts, steps)


@task(iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def verify(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Check the live release: units active, health check through SSH, no restart loop."""
    cfg, steps = _config(), ui.Steps()
    with _hosts(cfg, host, echo=echo) as hosts:
        for h in hosts:
            pipeline.verify_live(h, cfg, steps)


@task(
    iterable=["host"],
    help={
        **SWITCH_HELP,
        "no_build": "Deploy the release already built and signed in dist/ (build once, deploy many).",
    },
)
@user_errors
def deploy(
    c: Context,
    host: list[str] | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
    no_build: bool = False,
) -> None:
    """Build, sign, upload, reattach and verify; a release that fails verification is rolled back."""
    cfg, steps = _config(), ui.Steps()
    opts = pipeline.Options(dry_run, restart_sockets, break_lock)
    select(cfg, host)  # an unknown --host fails before the build
    signed = pipeline.local_release(cfg) if no_build else _built(cfg, steps)
    with _hosts(cfg, host, echo=echo, dry_run=dry_run) as hosts:
        for h in hosts:
            pipeline.deploy_to(h, cfg, signed, opts, steps)
            if not dry_run:
                ui.console.print(
                    f"[bold green]{signed.manifest.release} is live on {h.name}[/]"
                    + _url_hint(cfg, h)
                )


def _url_hint(cfg: Config, host: Host) -> str:
    if any(e.sandbox and e.name == host.name for e in cfg.hosts.values()):
        from .sandbox import Sandbox

        vm = next((v for v in Sandbox().status() if v.name == "sandbox-1"), None)
        if vm is not None and cfg.verify.port == 80:
            return f": http://127.0.0.1:{vm.http_port}/"
    return ""


@task(
    iterable=["host"],
    help={
        "host": HOST_HELP,
        "to": "Release to return to: VERSION or NAME_VERSION (default: the previous live one).",
        "echo": ECHO_HELP,
        "dry_run": DRY_HELP,
        "restart_sockets": "Allow restarting a .socket unit whose unit file differs.",
        "break_lock": "Break a stale deploy lock.",
    },
)
@user_errors
def rollback(
    c: Context,
    host: list[str] | None = None,
    to: str | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
) -> None:
    """Return to the previous release in the deploy history (or --to VERSION), verified."""
    cfg, steps = _config(), ui.Steps()
    opts = pipeline.Options(dry_run, restart_sockets, break_lock)
    with _hosts(cfg, host, echo=echo, dry_run=dry_run) as hosts:
        for h in hosts:
            plan = pipeline.rollback_on(h, cfg, to, opts, steps)
            if not dry_run:
                ui.console.print(f"[bold green]{plan.release} is live on {h.name}[/]")


@task(iterable=["host"], help={"host": HOST_HELP})
@user_errors
def releases(c: Context, host: list[str] | None = None) -> None:
    """List the releases kept on each host: which is live, which rollback picks, who deployed when."""
    cfg = _config()
    with _hosts(cfg, host) as hosts:
        for h in hosts:
            rows = pipeline.releases_on(h, cfg)
            ui.table(
                f"{cfg.app.name} on {h.name}",
                ["release", "state", "deployed (UTC)", "by", "result"],
                [
                    [
                        r.release,
                        "live" if r.live else ("rollback target" if r.rollback_target else ""),
                        r.deployed_at,
                        r.deployed_by,
                        r.result,
                    ]
                    for r in rows
                ],
            )


@task(
    iterable=["host"],
    help={
        "host": HOST_HELP,
        "follow": "Keep streaming new lines (Ctrl-C to stop).",
        "lines": "How many recent lines to show first (default 100).",
        "release": "Only lines logged by this release (VERSION or NAME_VERSION).",
        "since": "Only lines since this time (journalctl --since syntax, e.g. '10 min ago').",
    },
)
@user_errors
def logs(
    c: Context,
    host: list[str] | None = None,
    follow: bool = False,
    lines: int = 100,
    release: str | None = None,
    since: str | None = None,
) -> None:
    """Show (or --follow) the journal of every unit of the app."""
    cfg = _config()
    rel = None
    if release:
        rel = release if release.startswith(cfg.app.name + "_") else f"{cfg.app.name}_{release}"
    command = journalctl.logs(cfg.app.name, follow=follow, lines=lines, since=since, release=rel)
    with _hosts(cfg, host) as hosts:
        for h in hosts:
            h.stream(command)


@task(iterable=["host"], help={"host": HOST_HELP})
@user_errors
def status(c: Context, host: list[str] | None = None) -> None:
    """Show the live release and the state of each of its units on every host."""
    cfg = _config()
    layout = Layout(cfg.app.name)
    with _hosts(cfg, host) as hosts:
        for h in hosts:
            state = pipeline.read_state(h, layout)
            if state.live_manifest is None:
                ui.console.print(f"{h.name}: no release of {cfg.app.name} attached")
                continue
            units = sorted(state.live_manifest.unit_info)
            states = pipeline.unit_states(h, units)
            ui.table(
                f"{h.name}: {state.live} live"
                + (f", rollback target {state.previous}" if state.previous else ""),
                ["unit", "state", "since", "main pid", "restarts"],
                [
                    [
                        u,
                        f"{states[u].active_state}/{states[u].sub_state}" if u in states else "?",
                        states[u].active_enter if u in states else "",
                        str(states[u].main_pid or "") if u in states else "",
                        str(states[u].n_restarts) if u in states else "",
                    ]
                    for u in units
                ],
            )


# -- host set-up ----------------------------------------------------------------------------------


@task(name="setup", iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def host_setup(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Prepare hosts (idempotent): directories and the allowed_signers trust root."""
    cfg = _config()
    with _hosts(cfg, host, echo=echo) as hosts:
        for h in hosts:
            changed = pipeline.setup_host(h, cfg)
            ui.console.print(f"{h.name}: " + ("; ".join(changed) if changed else "already set up"))


# -- the sandbox ---------------------------------------------------------------------------------


def _vm_table(vms: list[Any]) -> None:
    rows = [
        [v.name, f"127.0.0.1:{v.ssh_port}", f"127.0.0.1:{v.http_port}",
         f"127.0.0.1:{v.https_port}", str(v.pid)]
        for v in vms
    ]  # fmt: skip
    ui.table("sandbox", ["name", "ssh", "http", "https", "pid"], rows)


def _sandbox() -> Any:
    from .sandbox import Sandbox

    return Sandbox()


@task(name="up", help={"count": "How many VMs (default 1); running ones are reused."})
@user_errors
def sandbox_up(c: Context, count: int = 1) -> None:
    """Boot the local Debian 12 sandbox VM(s) and print how to reach them."""
    vms = _sandbox().up(count, progress=lambda line: ui.console.print(f"  {line}"))
    if config_path().exists():
        # The app's sandbox host gets host.setup as soon as it is up.
        cfg = _config()
        sandbox_hosts = [h.name for h in cfg.hosts.values() if h.sandbox]
        if sandbox_hosts:
            with _hosts(cfg, sandbox_hosts):
                pass
    _vm_table(vms)


@task(name="down")
@user_errors
def sandbox_down(c: Context) -> None:
    """Stop every sandbox VM; no process is left behind."""
    stopped = _sandbox().down(progress=lambda line: ui.console.print(f"  {line}"))
    ui.console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@task(name="status")
@user_errors
def sandbox_status(c: Context) -> None:
    """List the sandbox VMs that are running."""
    vms = _sandbox().status()
    if not vms:
        ui.console.print("no sandbox VM is running (invoke sandbox.up)")
        return
    _vm_table(vms)


@task(
    name="ssh",
    help={"name": "VM name (default sandbox-1). A command may follow `--`."},
)
@user_errors
def sandbox_ssh(c: Context, name: str | None = None) -> None:
    """Open a root shell on a sandbox VM, or run the command given after `--`."""
    command = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    argv = _sandbox().ssh_argv(name, command)
    code = subprocess.call(argv)
    if code != 0:
        raise Exit(code=code)


ns = Collection(build, sign, upload, reattach, verify, deploy, rollback, releases, logs, status)
ns.add_collection(Collection("host", host_setup))
ns.add_collection(Collection("sandbox", sandbox_up, sandbox_down, sandbox_status, sandbox_ssh))
