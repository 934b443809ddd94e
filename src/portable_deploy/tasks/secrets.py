"""`invoke secrets`: what deploy.toml's [secrets] name, and whether each source resolves here.

Values are read to check them, never shown.
"""

from __future__ import annotations

from collections.abc import Mapping

from invoke.context import Context
from invoke.tasks import task
from rich.markup import escape

from .. import pipeline, ui
from ..config import Config
from ..errors import DeployError
from ..secrets import COMMAND_TIMEOUT, SecretValue, digest, problem, resolve
from .common import config, hosts, user_errors

COLUMNS = ["secret", "source", "delivery", "units", "here"]
#: Per host, secret name -> what the host's live release holds (its digest), for a column per host.
LiveDigests = Mapping[str, Mapping[str, str]]


def secret_rows(
    cfg: Config, live: LiveDigests | None = None, *, timeout: float = COMMAND_TIMEOUT
) -> tuple[list[str], list[list[str]], int]:
    """(columns, one row per secret in name order, how many sources do not resolve now).

    ``here`` is "ok" or the one-line problem of the source on this machine.

    HOOK (host side): LIVE adds one column per host, "live on HOST", whose cell is what
    ``live[HOST]`` has for the secret ("-" when nothing); the secrets task passes nothing yet.
    """
    hosts = list(live or {})
    columns = [*COLUMNS, *(f"live on {host}" for host in hosts)]
    rows, failing = [], 0
    for name in sorted(cfg.secrets):
        secret = cfg.secrets[name]
        why = problem(cfg, secret, timeout=timeout)
        failing += why is not None
        delivery = f"env {secret.environment}" if secret.environment else "credential"
        row = [name, secret.source, delivery, " ".join(secret.units), why or "ok"]
        rows.append(row + [(live or {})[host].get(name, "-") for host in hosts])
    return columns, rows, failing


def live_digests(cfg: Config, names: list[str] | None) -> LiveDigests:
    """Per host: what the units run with now, as "DIGEST (same as here)" or "(differs)"."""
    here = {v.name: v.value.value for v in resolve_quietly(cfg)}
    out: dict[str, dict[str, str]] = {}
    with hosts(cfg, names) as opened:
        for h in opened:
            digests, salt = pipeline.live_secrets_on(h, cfg)
            cells = {}
            for name, live in digests.items():
                same = (
                    salt is not None
                    and name in here
                    and live == digest(name, here[name], salt.encode())
                )
                cells[name] = f"{live[:12]} ({'same as here' if same else 'differs'})"
            out[h.name] = cells
    return out


def resolve_quietly(cfg: Config) -> list[SecretValue]:
    """The values whose sources resolve now (the table reports the others)."""
    try:
        return resolve(cfg, b"")
    except DeployError:
        return []


@task(
    iterable=["host"],
    help={
        "host": "Show what this host's live release has (repeatable; default: every host).",
        "local": "Only check the sources here; connect to no host.",
    },
)
@user_errors
def secrets(c: Context, host: list[str] | None = None, local: bool = False) -> None:
    """List the secrets: source, delivery, units, whether each resolves here, and what each
    host's live release has (digests, never values)."""
    cfg = config()
    if not cfg.secrets:
        ui.console.print(
            escape(f"no secrets: {cfg.path} has no [secrets.NAME] table"), soft_wrap=True
        )
        return
    live = None if local else live_digests(cfg, host)
    columns, rows, failing = secret_rows(cfg, live)
    ui.table(f"secrets of {cfg.app.name}", columns, rows)
    if failing:
        raise DeployError(
            f"{failing} of {len(rows)} secret sources do not resolve on this machine",
            hint="the table says why for each; a deploy stops before touching any host until "
            "they do",
        )
