"""A release the host refuses: stopped before any portablectl, staging cleaned, audited, one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from portable_deploy import pipeline, ui
from portable_deploy.commands import delta, files, trust
from portable_deploy.errors import DeployError
from portable_deploy.host import Result
from portable_deploy.release import Options

from .conftest import FakeHost, config, manifest, signed

V2 = manifest("2", app="e")
INCOMING = "/var/lib/portable-deploy/scoreboard/incoming"
UPLOADED = [
    "lock.acquire",
    "state",
    "inventory",
    "delta.prepare",
    f"put {INCOMING}/scoreboard_2.manifest.json",
    f"put {INCOMING}/scoreboard_2.manifest.json.sig",
    "put /var/lib/portable-deploy/scoreboard/partial/scoreboard_2.delta",
    "delta.assemble",  # with the host-side check (trust.check_release) in the same command
]
#: After an assembled image that is not the signed one: the whole image, checked again.
RESENT = [f"put {INCOMING}/scoreboard_2.raw", f"put {INCOMING}/scoreboard_2.index", "check-release"]
CLEANED = (
    f"rm -f {INCOMING}/scoreboard_2.manifest.json {INCOMING}/scoreboard_2.manifest.json.sig "
    f"{INCOMING}/scoreboard_2.raw {INCOMING}/scoreboard_2.index"
)


def refuse_signature(host: FakeHost) -> None:
    host.fail(
        trust.check_release,
        Result("", "Good try\nCould not verify signature.\n", trust.BAD_SIGNATURE),
    )


def refuse_image_hash(host: FakeHost) -> None:
    host.fail(trust.check_release, Result("f" * 64 + "\n", "", 1))


def damage_in_transit(host: FakeHost) -> None:
    """The assembly fails, and the whole image sent then arrives damaged too."""
    host.fail(trust.check_release, Result("0" * 64 + "\n", "", trust.NOT_SIGNED_IMAGE))
    host.fail(delta.assemble, Result("", "dd: short read\n", delta.MISMATCH))


class Refusal(NamedTuple):
    make: Callable[[FakeHost], None]
    #: What runs after the delta's assembly and check, up to the refusal.
    checks: list[str]
    message: str
    hint: str


REFUSALS = {
    "signature": Refusal(
        refuse_signature,
        [],
        "[fake] refused scoreboard_2: signature check failed (Could not verify signature.)",
        "sign with a key listed in the host's /etc/portable-deploy/scoreboard/allowed_signers "
        "(invoke host.setup installs it)",
    ),
    # This machine checked its image against the manifest: another sha256 on the host is
    # damage in transit (or a damaged kept image a delta copied from): sent whole once more.
    "image-hash": Refusal(
        refuse_image_hash,
        RESENT,
        f"[fake] upload of scoreboard_2.raw arrived damaged (sha256 {'f' * 64})",
        "retry the deploy",
    ),
    "damaged-arrival": Refusal(
        damage_in_transit,
        RESENT,
        f"[fake] upload of scoreboard_2.raw arrived damaged (sha256 {'0' * 64})",
        "retry the deploy",
    ),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refused_release_changes_nothing_cleans_staging_and_is_audited(
    tmp_path: Path, live_v1: FakeHost, refusal: str
) -> None:
    """Refused or damaged: no portablectl, staged files deleted, one "refused" audit line, lock released."""
    refuse, checks, message, _ = REFUSALS[refusal]
    refuse(live_v1)
    with pytest.raises(DeployError):
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    [audit_line] = live_v1.audit_lines()
    assert live_v1.verbs() == [*UPLOADED, *checks, CLEANED, audit_line, "lock.release"]
    [record] = live_v1.audited()
    assert (record.event, record.release, record.live, record.result, record.message) == (
        "deploy",
        "scoreboard_2",
        "scoreboard_1",
        "refused",
        message,
    )


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_is_one_line_with_a_hint(tmp_path: Path, live_v1: FakeHost, refusal: str) -> None:
    """The DeployError of a refusal is the audited message on one line, plus a hint."""
    refuse, _, message, hint = REFUSALS[refusal]
    refuse(live_v1)
    with pytest.raises(DeployError) as refused:
        pipeline.deploy_to(live_v1, config(tmp_path), signed(V2), Options(), ui.Steps())
    assert str(refused.value) == f"{message} (hint: {hint})"
    assert "\n" not in str(refused.value)


def test_fake_host_fails_a_command_by_its_builder_not_its_text(live_v1: FakeHost) -> None:
    """fail(trust.check_release, ...) fails that builder's commands, not look-alike text."""
    refuse_signature(live_v1)
    assert live_v1.run(files.cat("ssh-keygen -Y verify"), check=False).ok
    assert not live_v1.run(trust.check_release("m", "s", "p", "/a", "i", "r"), check=False).ok
