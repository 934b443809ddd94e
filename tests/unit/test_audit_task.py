"""`invoke audit --json` on several hosts: one JSON document on stdout, whatever a host does."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from invoke.context import MockContext
from invoke.exceptions import Exit

from portable_deploy.errors import DeployError
from portable_deploy.facts import AuditRecord
from portable_deploy.tasks import audit as module

RECORD = AuditRecord("2026-11-27T10:00:00+00:00", "deploy", "app_2", "app_2", "ok", "ann", "laptop")


def test_json_keeps_the_hosts_that_answered_when_one_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host that cannot be read is reported on stderr and makes exit code 1; stdout is still
    one JSON list, with the records of the hosts that answered."""
    hosts = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]

    @contextlib.contextmanager
    def opened(*_: object, **__: object) -> Iterator[list[SimpleNamespace]]:
        yield hosts

    def audit_on(h: SimpleNamespace, _cfg: object) -> list[AuditRecord]:
        if h.name == "b":
            raise DeployError("[b] cannot be reached", hint="check it")
        return [RECORD]

    monkeypatch.setattr(module, "config", lambda: SimpleNamespace(app=SimpleNamespace(name="app")))
    monkeypatch.setattr(module, "hosts", opened)
    monkeypatch.setattr(module.pipeline, "audit_on", audit_on)
    with pytest.raises(Exit) as exited:
        module.audit.body(MockContext(), json=True)
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [(r["host"], r["release"]) for r in records] == [("a", "app_2")]
    assert "[b] cannot be reached" in err
