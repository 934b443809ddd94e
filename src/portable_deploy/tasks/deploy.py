"""The release tasks, one per step and the whole chain: build, sign, upload, reattach, verify,
deploy, rollback."""

from __future__ import annotations

from collections.abc import Callable

from invoke.context import Context
from invoke.tasks import task
from rich.markup import escape

from .. import fleet, pipeline, release, ui
from ..board import Board
from ..config import Config
from ..fleet import FleetFailed, HostRun
from ..host import Host
from ..release import Options, Signed
from ..secrets import resolve as resolve_secrets
from ..targets import select
from .common import (
    ECHO_HELP,
    HOST_HELP,
    ROLE_HELP,
    SWITCH_HELP,
    config,
    each_host,
    hosts,
    user_errors,
)


def _built(cfg: Config, steps: ui.Steps) -> Signed:
    with steps.step("build"):
        artifact = release.build(cfg)
        steps.info(f"{artifact.image} ({artifact.manifest.image_size / 1e6:.1f} MB)")
        _warn(artifact.warnings, steps)
    with steps.step("sign"):
        return release.sign_release(cfg, artifact)


def _warn(warnings: tuple[str, ...], steps: ui.Steps) -> None:
    for warning in warnings:
        steps.warn(warning)


@task
@user_errors
def build(c: Context) -> None:
    """Run the [build] commands and pack dist/NAME_VERSION.raw with its manifest."""
    cfg, steps = config(), ui.Steps()
    with steps.step("build"):
        artifact = release.build(cfg)
        steps.info(f"image     {artifact.image} ({artifact.manifest.image_size / 1e6:.1f} MB)")
        steps.info(f"manifest  {artifact.manifest_path}")
        steps.info(f"sha256    {artifact.manifest.image_sha256}")
        _warn(artifact.warnings, steps)


@task
@user_errors
def sign(c: Context) -> None:
    """Sign the built release's manifest (and so its image) with [sign] key."""
    cfg, steps = config(), ui.Steps()
    with steps.step("sign"):
        signed = release.sign_release(cfg, release.local_release_unsigned(cfg))
        steps.info(f"signature {signed.signature}")


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP, "echo": ECHO_HELP})
@user_errors
def upload(
    c: Context, host: list[str] | None = None, role: list[str] | None = None, echo: bool = False
) -> None:
    """Send the built, signed release to the hosts and check it there (nothing is attached)."""
    cfg, steps = config(), ui.Steps()
    signed = release.local_release(cfg)
    with hosts(cfg, host, role, echo=echo) as opened:
        for h in opened:
            pipeline.upload_to(h, cfg, signed, steps)


@task(iterable=["host", "role"], help=SWITCH_HELP)
@user_errors
def reattach(
    c: Context,
    host: list[str] | None = None,
    role: list[str] | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
) -> None:
    """Attach the uploaded release and restart only the units that changed (no verify)."""
    cfg, steps = config(), ui.Steps()
    signed = release.local_release(cfg)
    opts = Options(dry_run, restart_sockets, break_lock)
    with hosts(cfg, host, role, echo=echo, dry_run=dry_run) as opened:
        for h in opened:
            pipeline.reattach_on(h, cfg, signed, opts, steps)


@task(iterable=["host", "role"], help={"host": HOST_HELP, "role": ROLE_HELP, "echo": ECHO_HELP})
@user_errors
def verify(
    c: Context, host: list[str] | None = None, role: list[str] | None = None, echo: bool = False
) -> None:
    """Check the live release: units active, health check through SSH, no restart loop."""
    cfg, steps = config(), ui.Steps()
    with hosts(cfg, host, role, echo=echo) as opened:
        each_host(opened, lambda h: pipeline.verify_live(h, cfg, steps), "verify")


@task(
    iterable=["host", "role"],
    help={
        **SWITCH_HELP,
        "no_build": "Deploy the release already built and signed in dist/ (build once, deploy many).",
        "rollback_all": "On several hosts: if a batch fails, put every host switched back too "
        '([fleet] on_failure = "rollback-all").',
    },
)
@user_errors
def deploy(
    c: Context,
    host: list[str] | None = None,
    role: list[str] | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
    no_build: bool = False,
    rollback_all: bool = False,
) -> None:
    """Build, sign, upload, reattach and verify; a release that fails verification is rolled back.
    On several hosts: upload to all, then switch in batches ([fleet])."""
    cfg, steps = config(), ui.Steps()
    opts = Options(dry_run, restart_sockets, break_lock)
    select(cfg, host, role)  # an unknown --host or --role fails before the build
    # Every secret source is read once, before the build and before any host is touched; each
    # host keys the digests with its own salt.
    values = resolve_secrets(cfg, b"")
    signed = release.local_release(cfg) if no_build else _built(cfg, steps)
    with (
        ui.hiding(v.value.value for v in values),
        hosts(cfg, host, role, echo=echo, dry_run=dry_run) as opened,
    ):
        if len(opened) == 1:
            h = opened[0]
            pipeline.deploy_to(h, cfg, signed, opts, steps, values)
            if not dry_run:
                ui.console.print(
                    f"[bold green]{signed.manifest.release} is live on {h.name}[/]"
                    + _url_hint(cfg, h)
                )
            return
        on_fleet(
            opened,
            lambda board: fleet.deploy(opened, cfg, signed, opts, board, values, rollback_all),
            None if dry_run else lambda runs: fleet.summary(runs, signed.manifest.release),
        )


def on_fleet(
    opened: list[Host],
    work: Callable[[Board], list[HostRun]],
    summary: Callable[[list[HostRun]], str] | None,
) -> None:
    """Run a fleet task with its board, then the table of what happened on each host, then
    its SUMMARY line (none for a dry run)."""
    failure: FleetFailed | None = None
    with Board([h.name for h in opened]) as board:
        try:
            runs = work(board)
        except FleetFailed as e:
            runs, failure = e.runs, e
    took = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in board.phases.items())
    ui.table(
        f"fleet ({took})" if took else "fleet",
        ["host", "release now", "what happened", "time"],
        [
            [r.name, r.now or "-", r.result + (f": {r.message}" if r.message else ""),
             f"{r.seconds:.1f}s"]
            for r in runs
        ],
    )  # fmt: skip
    if failure is not None:
        raise failure
    if summary is not None:
        ui.console.print(f"[bold green]{escape(summary(runs))}[/]")


def _url_hint(cfg: Config, host: Host) -> str:
    """Where the sandbox serves the app on this machine."""
    entry = cfg.hosts[host.name]
    if not entry.sandbox:
        return ""
    from ..sandbox import Sandbox, vm_name

    vm = next((v for v in Sandbox().status() if v.name == vm_name(entry.sandbox_index)), None)
    if vm is None:
        return ""
    tls = cfg.verify.tls
    if tls is not None and tls.port == 443:
        return f": https://{tls.name}:{vm.https_port}/ (connect to 127.0.0.1:{vm.https_port})"
    if cfg.verify.port == 80:
        return f": http://127.0.0.1:{vm.http_port}/"
    return ""


@task(
    iterable=["host", "role"],
    help={
        **SWITCH_HELP,
        "to": "Release to return to: VERSION or NAME_VERSION (default: the previous live one).",
    },
)
@user_errors
def rollback(
    c: Context,
    host: list[str] | None = None,
    role: list[str] | None = None,
    to: str | None = None,
    echo: bool = False,
    dry_run: bool = False,
    restart_sockets: bool = False,
    break_lock: bool = False,
) -> None:
    """Return to the previous release in the deploy history (or --to VERSION), verified."""
    cfg, steps = config(), ui.Steps()
    opts = Options(dry_run, restart_sockets, break_lock)
    with hosts(cfg, host, role, echo=echo, dry_run=dry_run) as opened:
        if len(opened) == 1:
            plan = pipeline.rollback_on(opened[0], cfg, to, opts, steps)
            if not dry_run:
                ui.console.print(f"[bold green]{plan.release} is live on {opened[0].name}[/]")
            return
        on_fleet(
            opened,
            lambda board: fleet.rollback(opened, cfg, to, opts, board),
            None if dry_run else lambda runs: fleet.summary(runs, "rolled back", rollback=True),
        )
