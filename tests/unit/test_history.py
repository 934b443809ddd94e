"""The deploy history: which release rollback picks, and which releases pruning deletes."""

from __future__ import annotations

import dataclasses
import getpass
import re
import socket

from portable_deploy.commands.layout import Layout
from portable_deploy.facts import AuditRecord, previous_release
from portable_deploy.history import ReleaseRow, prunable, record, release_rows

from ..flow.conftest import FakeHost


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


# --- pruning ----------------------------------------------------------------------------------


def apps(*versions: str) -> list[str]:
    return [f"app_{v}" for v in versions]


def test_prune_keeps_the_live_release_and_rollback_target_though_oldest() -> None:
    """keep=2, kept 1, 2, 8, 9; 2 is new, 1 was live: 8 and 9 go, though newer by version."""
    audit = [*deploys("1", "8", "9"), rec("rollback", "1", "1")]
    assert prunable(apps("1", "2", "8", "9"), 2, set(apps("1", "2")), audit) == apps("9", "8")


def test_prune_never_deletes_a_protected_release_even_beyond_keep() -> None:
    """Three protected releases and keep=2: all three stay, every other one goes."""
    audit = deploys("1", "2", "3", "4")
    protect = set(apps("1", "2", "3"))
    assert prunable(apps("1", "2", "3", "4"), 2, protect, audit) == apps("4")


def test_prune_deletes_the_least_recently_live_first_not_the_lowest_version() -> None:
    """Deployed 2, 4, 1, 3, 5 (protected), keep=3: 1 and 3 stay (live most recently), 4 and 2 go."""
    audit = deploys("2", "4", "1", "3", "5")
    assert prunable(apps("1", "2", "3", "4", "5"), 3, set(apps("5")), audit) == apps("4", "2")


def test_prune_deletes_a_release_never_live_before_one_that_was() -> None:
    """Kept 1, 2, 3; 1 then 2 (protected) were live, 3 was only uploaded: keep=2 deletes 3."""
    assert prunable(apps("1", "2", "3"), 2, set(apps("2")), deploys("1", "2")) == apps("3")


def test_prune_deletes_nothing_within_keep() -> None:
    """As many releases as keep_releases: none is deleted."""
    assert prunable(apps("1", "2"), 2, set(), deploys("1", "2")) == []


# --- the audit record and the releases table --------------------------------------------------


def test_record_appends_one_json_line_stamped_in_utc() -> None:
    """One audit line: the event, who and where from, no message unless given, time in UTC."""
    host = FakeHost()
    record(host, Layout("scoreboard"), "deploy", "app_2", "app_2", "ok")
    [line] = host.audited()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", line.at), line.at
    assert dataclasses.replace(line, at="") == AuditRecord(
        "", "deploy", "app_2", "app_2", "ok", getpass.getuser(), socket.gethostname(), ""
    )


def test_release_rows_show_the_last_deploy_that_left_each_release_live() -> None:
    """Newest first, by the last ok or rolled-back record leaving it live; none: empty columns."""
    audit = [
        AuditRecord("2024-01-01T10:00:00+00:00", "deploy", "app_1", "app_1", "ok", "al", "lap"),
        AuditRecord("2024-01-01T11:00:00+00:00", "deploy", "app_2", "app_2", "ok", "bo", "ci"),
        AuditRecord(
            "2024-01-01T12:00:00+00:00", "deploy", "app_3", "app_2", "rolled-back", "cy", "d"
        ),
        AuditRecord("2024-01-01T13:00:00+00:00", "deploy", "app_4", "app_2", "refused", "di", "e"),
    ]
    rows = release_rows(apps("1", "2", "9"), "app_2", "app_1", audit)
    assert rows == [
        ReleaseRow("app_2", True, False, "2024-01-01T12:00:00+00:00", "cy@d", "rolled-back"),
        ReleaseRow("app_1", False, True, "2024-01-01T10:00:00+00:00", "al@lap", "ok"),
        ReleaseRow("app_9", False, False, "", "", ""),
    ]


def _rec(live: str, result: str, secrets: str = "") -> AuditRecord:
    return AuditRecord("t", "deploy", live, live, result, "u", "o", "", secrets)


def test_the_secret_set_of_a_release_is_the_one_it_last_ran_with() -> None:
    """The newest record that left RELEASE live names its set; failed or refused records, and
    records of other releases, do not count; a release never live has none."""
    from portable_deploy.history import secret_set_of

    audit = [
        _rec("a", "ok", "s1"),
        _rec("b", "ok", "s2"),
        _rec("a", "rolled-back", "s3"),
        _rec("a", "failed", "s4"),
        _rec("a", "refused", "s5"),
    ]
    assert secret_set_of(audit, "a") == "s3"
    assert secret_set_of(audit, "b") == "s2"
    assert secret_set_of(audit, "c") is None
    assert secret_set_of([_rec("a", "unverified")], "a") == ""
