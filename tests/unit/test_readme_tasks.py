"""README is the manual: every task of the collection has its row in the "Tasks" table, and the
row names every flag the task takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portable_deploy.tasks import ns

README = Path(__file__).resolve().parents[2] / "README.md"


def _task_rows() -> dict[str, str]:
    """Task name -> its row in the README's "## Tasks" section (the first row that names it)."""
    text = README.read_text()
    section = text.split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        m = re.match(r"\| `invoke ([a-z.]+)[^`]*` \|(.*)", line)
        if m:
            rows.setdefault(m.group(1), m.group(2))
    return rows


@pytest.mark.parametrize("name", sorted(ns.task_names))
def test_every_task_and_flag_is_in_the_readme(name: str) -> None:
    """The task has a row in "Tasks", and every one of its flags is named there."""
    rows = _task_rows()
    assert name in rows, f"`invoke {name}` has no row in the README's Tasks table"
    missing = [
        f"--{arg.name.replace('_', '-')}"
        for arg in ns[name].get_arguments()
        if f"--{arg.name.replace('_', '-')}" not in rows[name]
    ]
    assert not missing, f"`invoke {name}`: the README's row does not name {missing}"
