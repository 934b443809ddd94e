"""The release tasks, one per step and the whole chain: build, sign, upload, reattach, verify,
deploy, rollback."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from .. import pipeline, release, ui
from ..config import Config
from ..host import Host
from ..release import Options, Signed
from ..secrets import resolve as resolve_secrets
from ..targets import select
from .common import ECHO_HELP, HOST_HELP, SWITCH_HELP, config, hosts, user_errors


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


@task(iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def upload(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Send the built, signed release to the hosts and check it there (nothing is attached)."""
    cfg, steps = config(), ui.Steps()
    signed = release.local_release(cfg)
    with hosts(cfg, host, echo=echo) as opened:
        for h in opened:
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
    cfg, steps = config(), ui.Steps()
    signed = release.local_release(cfg)
    opts = Options(dry_run, restart_sockets, break_lock)
    with hosts(cfg, host, echo=echo, dry_run=dry_run) as opened:
        for h in opened:
            pipeline.reattach_on(h, cfg, signed, opts, steps)


@task(iterable=["host"], help={"host": HOST_HELP, "echo": ECHO_HELP})
@user_errors
def verify(c: Context, host: list[str] | None = None, echo: bool = False) -> None:
    """Check the live release: units active, health check through SSH, no restart loop."""
    cfg, steps = config(), ui.Steps()
    with hosts(cfg, host, echo=echo) as opened:
        for h in opened:
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
    cfg, steps = config(), ui.Steps()
    opts = Options(dry_run, restart_sockets, break_lock)
    select(cfg, host)  # an unknown --host fails before the build
    # Every secret source is read once, before the build and before any host is touched; each
    # host keys the digests with its own salt.
    values = resolve_secrets(cfg, b"")
    signed = release.local_release(cfg) if no_build else _built(cfg, steps)
    with (
        ui.hiding(v.value.value for v in values),
        hosts(cfg, host, echo=echo, dry_run=dry_run) as opened,
    ):
        for h in opened:
            pipeline.deploy_to(h, cfg, signed, opts, steps, values)
            if not dry_run:
                ui.console.print(
                    f"[bold green]{signed.manifest.release} is live on {h.name}[/]"
                    + _url_hint(cfg, h)
                )


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
    iterable=["host"],
    help={
        **SWITCH_HELP,
        "to": "Release to return to: VERSION or NAME_VERSION (default: the previous live one).",
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
    cfg, steps = config(), ui.Steps()
    opts = Options(dry_run, restart_sockets, break_lock)
    with hosts(cfg, host, echo=echo, dry_run=dry_run) as opened:
        for h in opened:
            plan = pipeline.rollback_on(h, cfg, to, opts, steps)
            if not dry_run:
                ui.console.print(f"[bold green]{plan.release} is live on {h.name}[/]")
