"""The deploy history: which release rollback picks, and which releases pruning deletes."""

from __future__ import annotations

from portable_deploy.facts import AuditRecord, previous_release


def rec(event: str, release: str, live: str | None, result: str = "ok") -> AuditRecord:
    return AuditRecord(
        "t", event, f"app_{release}", f"app_{live}" if live else None, result, "u", "o"
    )


def deploys(*versions: str) -> list[AuditRecord]:
    """Successful deploys of VERSIONS, in that order."""
    return [rec("deploy", v, v) for v in versions]


# --- rollback target --------------------------------------------------------------------------


def test_previous_is_the_one_live_before_not_the_next_lower_version() -> None:
    """Deployed 1, then 3, then 2 (live): rollback goes to 3."""
    assert previous_release(deploys("1", "3", "2"), "app_2") == "app_3"


def test_previous_is_not_the_highest_other_version() -> None:
    """Deployed 3, then 1, then 2 (live): rollback goes to 1, not to the highest version 3."""
    assert previous_release(deploys("3", "1", "2"), "app_2") == "app_1"


def test_after_a_rollback_the_previous_is_the_release_rolled_back_from() -> None:
    """Deployed 1, 3, 2, then rolled back to 3 (live): the next rollback goes to 2."""
    history = [*deploys("1", "3", "2"), rec("rollback", "3", "3")]
    assert previous_release(history, "app_3") == "app_2"


def test_refused_and_rolled_back_deploys_are_not_previous_releases() -> None:
    """A refused deploy of 4 and a rolled-back deploy of 5 never ran as live: rollback from 2 goes to 3."""
    history = [
        *deploys("1", "3"),
        rec("deploy", "4", "3", "refused"),
        *deploys("2"),
        rec("deploy", "5", "2", "rolled-back"),
    ]
    assert previous_release(history, "app_2") == "app_3"


def test_no_previous_release_after_one_deploy() -> None:
    """A single live release, deployed again or reattached, has nothing to roll back to."""
    history = [*deploys("1", "1"), rec("reattach", "1", "1", "unverified")]
    assert previous_release(history, "app_1") is None
