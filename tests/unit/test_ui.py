"""What the UI prints never shows a secret value registered with ui.hiding."""

from __future__ import annotations

import pytest

from portable_deploy import ui
from portable_deploy.errors import DeployError

VALUE = "s3cr3t-Value"


def test_echo_table_and_error_mask_hidden_values(capsys: pytest.CaptureFixture[str]) -> None:
    """Inside hiding(), echo, table cells and error lines show *** for the value."""
    with ui.hiding([VALUE]):
        ui.echo("h", f"printf {VALUE}", False)
        ui.table("t", ["a"], [[f"x{VALUE}"]])
        ui.error(f"bad {VALUE}", f"hint {VALUE}")
        ui.Steps().info(f"info {VALUE}")
    out = capsys.readouterr().out
    assert VALUE not in out
    assert "$ printf ***" in out


def test_hiding_ends_with_its_block(capsys: pytest.CaptureFixture[str]) -> None:
    """After the block the value is no longer masked (it is not a secret of the next task)."""
    with ui.hiding([VALUE]):
        pass
    assert ui.redact(VALUE) == VALUE


def test_error_leaving_hiding_is_masked() -> None:
    """A DeployError raised inside hiding() leaves it with message, hint and str masked."""
    with pytest.raises(DeployError) as info, ui.hiding([VALUE]):
        raise DeployError(f"remote said {VALUE}", hint=f"not {VALUE}")
    assert (info.value.message, info.value.hint) == ("remote said ***", "not ***")
    assert VALUE not in str(info.value) + repr(info.value)


def test_task_error_line_is_masked_while_hiding() -> None:
    """user_errors turns a DeployError into `error: ...` with hidden values masked."""
    from invoke.exceptions import Exit

    from portable_deploy.tasks.common import user_errors

    @user_errors
    def body() -> None:
        raise DeployError(f"got {VALUE}")

    with pytest.raises(Exit) as info, ui.hiding([VALUE]):
        body()
    assert info.value.message == "error: got ***"
