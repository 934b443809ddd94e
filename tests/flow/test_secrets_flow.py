"""Secrets through the pipeline against the recording fake host: delivered encrypted on the host
(values only on stdin), given to units by drop-ins written before the reattach, restarting only
the units whose secrets change, put back by a failed verify and by a rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from portable_deploy import pipeline, ui
from portable_deploy.command import Secret
from portable_deploy.credentials import SecretSet, dropin_path, dropin_text
from portable_deploy.host import Result
from portable_deploy.release import Options
from portable_deploy.secrets import SecretValue, digest

from .conftest import FakeHost, config, manifest, signed

TOKEN = "s3cr3t-token-v1"
V1 = manifest("1")
V2 = manifest("2", app="e")
SETS = "/var/lib/portable-deploy/scoreboard/secrets"
SALT = "0f" * 32


def value(name: str, secret: str, units: tuple[str, ...], env: str | None = None) -> SecretValue:
    return SecretValue(name, Secret(secret), units, env, digest(name, secret, SALT.encode()))


@pytest.fixture
def resolved(live_v1: FakeHost) -> list[SecretValue]:
    """The secrets a deploy was given (resolving sources is tested elsewhere); the live
    release's image is on the host, so deploying it again sends nothing."""
    live_v1.on(
        r"sha256sum.*portables/scoreboard_1\.raw$", Result(f"{V1.image_sha256}  /x\n", "", 0)
    )
    live_v1.version = "1"
    live_v1.secrets_salt = SALT
    return []


def _set(values: list[SecretValue]) -> SecretSet:
    from portable_deploy.credentials import Entry

    return SecretSet(
        tuple(
            sorted(
                (Entry(v.name, v.digest, v.units, v.environment) for v in values),
                key=lambda e: e.name,
            )
        )
    )


def test_a_secret_is_encrypted_on_the_host_from_stdin_and_never_shown(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """The value goes to systemd-creds on stdin; no logged line, echo or audit record has it;
    the app's drop-in is written before the reattach and the audit names the set."""
    resolved.append(value("api-token", TOKEN, ("scoreboard.service",)))
    sent: list[str] = []
    live_v1.on(r"systemd-creds encrypt", lambda line: Result("", "", 0))
    original = live_v1._execute

    def spy(command, timeout):  # type: ignore[no-untyped-def]
        if command.stdin is not None and "creds.encrypt" in command.sources:
            sent.append(command.stdin.value)
        return original(command, timeout)

    live_v1._execute = spy  # type: ignore[method-assign]
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps(), resolved)
    assert sent == [TOKEN]
    assert [line for line in live_v1.log if TOKEN in line] == []
    encrypt = next(i for i, line in enumerate(live_v1.log) if "systemd-creds encrypt" in line)
    dropin = next(
        i for i, line in enumerate(live_v1.log) if dropin_path("scoreboard.service") in line
    )
    # The drop-in is written in the same round trip as the swap, before it.
    line = live_v1.log[dropin]
    assert encrypt < dropin
    assert line.index(dropin_path("scoreboard.service")) < line.index("portablectl reattach")
    set_id = _set(list(resolved)).id
    assert (
        f"LoadCredentialEncrypted=api-token:{SETS}/{set_id}/api-token.cred" in live_v1.log[dropin]
    )
    assert [r.secrets for r in live_v1.audited()] == [set_id]


def test_a_secret_only_change_restarts_only_the_units_that_get_it(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """The live release again with a new Litestream secret: Litestream restarts, the app and the
    socket do not, and the set already on the host is not sent again."""
    old = [value("replica-key", "k1", ("scoreboard-litestream.service",))]
    old_set = _set(old)
    live_v1.secret_sets = {old_set.id}
    live_v1.secret_dropins = {
        "scoreboard-litestream.service": str(
            dropin_text(f"{SETS}/{old_set.id}", old_set, "scoreboard-litestream.service")
        )
    }
    resolved.append(value("replica-key", "k2", ("scoreboard-litestream.service",)))
    plan = pipeline.deploy_to(
        live_v1, config(tmp_path), signed(V1), Options(), ui.Steps(), resolved
    )
    assert plan.restart == ("scoreboard-litestream.service",)
    assert plan.reasons["scoreboard-litestream.service"] == "its secrets changed"

    live_v1.log.clear()
    live_v1.secret_sets = {old_set.id, _set(list(resolved)).id}
    resolved[:] = old
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V1), Options(), ui.Steps(), resolved)
    assert not any("systemd-creds encrypt" in line for line in live_v1.log)


def test_no_secret_change_restarts_nothing(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """The live release with the secrets it already runs with is already live."""
    values = [value("api-token", TOKEN, ("scoreboard.service",))]
    live_set = _set(values)
    live_v1.secret_sets = {live_set.id}
    live_v1.secret_dropins = {
        "scoreboard.service": str(
            dropin_text(f"{SETS}/{live_set.id}", live_set, "scoreboard.service")
        )
    }
    resolved.extend(values)
    plan = pipeline.deploy_to(
        live_v1, config(tmp_path), signed(V1), Options(), ui.Steps(), resolved
    )
    assert plan.action.value == "none"
    assert not any("portablectl reattach" in line for line in live_v1.log)


def test_a_failed_verify_puts_the_old_secrets_back(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """v2 with a new token fails verify: the app's drop-in goes back to v1's set before v1 is
    reattached, and the audit says rolled-back with v1's set."""
    old = [value("api-token", "t1", ("scoreboard.service",))]
    old_set = _set(old)
    old_text = str(dropin_text(f"{SETS}/{old_set.id}", old_set, "scoreboard.service"))
    live_v1.secret_sets = {old_set.id}
    live_v1.secret_dropins = {"scoreboard.service": old_text}
    resolved.append(value("api-token", "t2", ("scoreboard.service",)))
    live_v1.health = 500
    live_v1.version = "1"

    def back_to_v1(line: str) -> Result:
        live_v1.health = 200
        return Result("", "", 0)

    live_v1.on(r"portablectl reattach .*scoreboard_1\.raw", back_to_v1)
    with pytest.raises(Exception, match="rolled back"):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps(), resolved)
    writes = [line for line in live_v1.log if dropin_path("scoreboard.service") in line]
    assert len(writes) == 2 and old_set.id in writes[1] and old_set.id not in writes[0]
    back = next(
        i for i, line in enumerate(live_v1.log) if "scoreboard_1.raw" in line and "reattach" in line
    )
    assert live_v1.log.index(writes[1]) < back
    assert [(r.result, r.secrets) for r in live_v1.audited()] == [("rolled-back", old_set.id)]


def test_rollback_brings_back_the_secrets_the_target_ran_with(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """Rollback to v1 writes the drop-in of the set v1's last record names, read from the host."""
    v1_values = [value("api-token", "t1", ("scoreboard.service",))]
    v2_values = [value("api-token", "t2", ("scoreboard.service",))]
    s1, s2 = _set(v1_values), _set(v2_values)
    live_v1.live = "scoreboard_2"
    live_v1.manifests = {"scoreboard_1": V1, "scoreboard_2": V2}
    live_v1.on(r"releases/scoreboard_2\.manifest\.json$", Result(V2.to_json(), "", 0))
    live_v1.audit = (
        '{"at":"t1","event":"deploy","live":"scoreboard_1","release":"scoreboard_1",'
        f'"result":"ok","user":"u","origin":"o","secrets":"{s1.id}"}}\n'
        '{"at":"t2","event":"deploy","live":"scoreboard_2","release":"scoreboard_2",'
        f'"result":"ok","user":"u","origin":"o","secrets":"{s2.id}"}}\n'
    )
    live_v1.secret_sets = {s1.id, s2.id}
    live_v1.secret_dropins = {
        "scoreboard.service": str(dropin_text(f"{SETS}/{s2.id}", s2, "scoreboard.service"))
    }
    live_v1.on(rf"{s1.id}/set\.json", Result(s1.to_json() + "\n", "", 0))
    live_v1.version = "1"
    plan = pipeline.rollback_on(live_v1, config(tmp_path), None, Options(), ui.Steps())
    assert plan.release == "scoreboard_1"
    write = next(line for line in live_v1.log if dropin_path("scoreboard.service") in line)
    assert f"{SETS}/{s1.id}/api-token.cred" in write
    assert [r.secrets for r in live_v1.audited()] == [s1.id]


def test_the_first_secret_makes_the_hosts_salt_first(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """A host with no salt gets one (root-only, kept if present) before anything is encrypted;
    a deploy without secrets makes none."""
    live_v1.secrets_salt = None
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps(), [])
    assert not any("/secrets/salt" in line for line in live_v1.log)
    live_v1.log.clear()
    resolved.append(value("api-token", TOKEN, ("scoreboard.service",)))
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps(), resolved)
    salt = next(i for i, line in enumerate(live_v1.log) if "/secrets/salt" in line)
    encrypt = next(i for i, line in enumerate(live_v1.log) if "systemd-creds encrypt" in line)
    assert salt < encrypt


def test_sets_no_kept_release_ran_with_are_pruned(
    tmp_path: Path, live_v1: FakeHost, resolved: list[SecretValue]
) -> None:
    """After a deploy, a set whose releases are all gone is deleted; the live set and the sets
    of kept releases stay."""
    live_v1.audit = (
        '{"at":"t0","event":"deploy","live":"scoreboard_0","release":"scoreboard_0",'
        '"result":"ok","user":"u","origin":"o","secrets":"gone0000000000000000"}\n'
        '{"at":"t1","event":"deploy","live":"scoreboard_1","release":"scoreboard_1",'
        '"result":"ok","user":"u","origin":"o","secrets":"kept1111111111111111"}\n'
    )
    live_v1.secret_sets = {"gone0000000000000000", "kept1111111111111111"}
    resolved.append(value("api-token", TOKEN, ("scoreboard.service",)))
    live_v1.version = "2"
    pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps(), resolved)
    [removal] = [line for line in live_v1.log if line.startswith("rm -rf --")]
    assert f"{SETS}/gone0000000000000000" in removal
    assert "kept1111111111111111" not in removal and _set(resolved).id not in removal
