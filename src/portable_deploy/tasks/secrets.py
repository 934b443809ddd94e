"""`invoke secrets`: what deploy.toml's [secrets] name, and whether each source resolves here.

Values are read to check them, never shown.
"""

from __future__ import annotations

from collections.abc import Mapping

from invoke.context import Context
from invoke.tasks import task
from rich.markup import escape

from .. import ui
from ..config import Config
from ..errors import DeployError
from ..secrets import COMMAND_TIMEOUT, problem
from .common import config, user_errors

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


@task
@user_errors
def secrets(c: Context) -> None:
    """List the secrets in deploy.toml: source, delivery, units, and whether each resolves here."""
    cfg = config()
    if not cfg.secrets:
        ui.console.print(
            escape(f"no secrets: {cfg.path} has no [secrets.NAME] table"), soft_wrap=True
        )
        return
    columns, rows, failing = secret_rows(cfg)
    ui.table(f"secrets of {cfg.app.name}", columns, rows)
    if failing:
        raise DeployError(
            f"{failing} of {len(rows)} secret sources do not resolve on this machine",
            hint="the table says why for each; a deploy stops before touching any host until "
            "they do",
        )
