"""`invoke secrets`: one row per secret with where it comes from and whether it resolves here,
never its value; exit code 1 when a source does not resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

from portable_deploy import ui
from portable_deploy.config import load_config
from portable_deploy.tasks.secrets import secret_rows, secrets

from .test_config import APP, HOST, write

VALUE = "s3cr3t-Value"
SECRETS = (
    '[secrets.api-token]\nfile = ".deploy/api-token"\nunits = ["scoreboard.service"]\n'
    '[secrets.litestream]\ncommand = "printf %s $PD_LS"\nenvironment = "LITESTREAM_KEY"\n'
    'units = ["scoreboard-litestream.service"]\n'
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """deploy.toml with a file secret (0600) and a command secret, named by $DEPLOY_TOML."""
    path = write(tmp_path, APP + HOST + SECRETS)
    (tmp_path / ".deploy").mkdir()
    token = tmp_path / ".deploy" / "api-token"
    token.write_text(VALUE + "\n")
    token.chmod(0o600)
    monkeypatch.setenv("DEPLOY_TOML", str(path))
    monkeypatch.setenv("PD_LS", VALUE + "-ls")
    monkeypatch.setenv("COLUMNS", "300")
    return tmp_path


def test_rows_name_source_delivery_units_and_state(project: Path) -> None:
    """Each row: name, source, credential or env VAR, units, ok; in name order."""
    columns, rows, failing = secret_rows(load_config(project / "deploy.toml"))
    assert columns == ["secret", "source", "delivery", "units", "here"]
    assert rows == [
        [
            "api-token",
            f"file {project / '.deploy' / 'api-token'}",
            "credential",
            "scoreboard.service",
            "ok",
        ],
        [
            "litestream",
            "command `printf %s $PD_LS`",
            "env LITESTREAM_KEY",
            "scoreboard-litestream.service",
            "ok",
        ],
    ]
    assert failing == 0


def test_a_source_that_does_not_resolve_shows_its_problem(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing source's cell is its one-line problem with hint; the others stay ok."""
    monkeypatch.setenv("PD_LS", "")
    _, rows, failing = secret_rows(load_config(project / "deploy.toml"))
    assert [row[4] for row in rows] == [
        "ok",
        "command `printf %s $PD_LS` printed nothing "
        "(hint: make it print the value, or change [secrets.litestream] command)",
    ]
    assert failing == 1


def test_live_digests_add_a_column_per_host(project: Path) -> None:
    """The host-side hook: each host given adds a "live on HOST" column, "-" where it has none."""
    columns, rows, _ = secret_rows(
        load_config(project / "deploy.toml"), {"prod": {"api-token": "ab12"}}
    )
    assert columns[-1] == "live on prod"
    assert [row[-1] for row in rows] == ["ab12", "-"]


def test_task_lists_secrets_without_their_values(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`invoke secrets` prints the table, exit 0, and no value anywhere in its output."""
    secrets(MockContext(), local=True)
    out, err = capsys.readouterr()
    assert "api-token" in out and "litestream" in out
    assert VALUE not in out + err


def test_task_exits_1_when_a_source_does_not_resolve(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable source: the table still prints, then one error line and exit code 1."""
    # Wide enough that the problem stays on one line of its cell, whatever the temp path's length.
    monkeypatch.setattr(ui.console, "_width", 400)
    (project / ".deploy" / "api-token").chmod(0o644)
    with pytest.raises(Exit) as info:
        secrets(MockContext(), local=True)
    assert info.value.code == 1
    assert str(info.value.message).startswith(
        "error: 1 of 2 secret sources do not resolve on this machine"
    )
    out, _ = capsys.readouterr()
    assert "is accessible to others (mode 0644)" in out
    assert VALUE not in out + str(info.value.message)


def test_task_without_secrets_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No [secrets]: one line saying there are none, exit 0."""
    monkeypatch.setenv("DEPLOY_TOML", str(write(tmp_path, APP + HOST)))
    secrets(MockContext(), local=True)
    assert "has no [secrets.NAME] table" in capsys.readouterr().out
