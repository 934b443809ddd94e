"""The lock's shell scripts in a real `sh`: a host that was never set up is named, and removing
a lock is atomic (rename, check, put back) so two operators never remove each other's lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

from portable_deploy.command import Command
from portable_deploy.commands import lock


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)


def test_acquire_on_a_host_never_set_up_exits_not_set_up(tmp_path: Path) -> None:
    """No state directory: `acquire` exits NOT_SET_UP instead of failing to write the lock."""
    path = str(tmp_path / "missing" / "deploy.lock")
    assert (
        _sh(lock.acquire(path, '{"token":"t1"}', str(tmp_path / "incoming")).render()).returncode
        == lock.NOT_SET_UP
    )


def test_break_removes_only_the_lock_that_was_judged_stale(tmp_path: Path) -> None:
    """A lock taken by someone else since it was judged stale survives a break, unchanged."""
    path = tmp_path / "deploy.lock"
    assert (
        _sh(
            lock.acquire(str(path), '{"token":"newer"}', str(tmp_path / "incoming")).render()
        ).returncode
        == 0
    )
    assert _sh(lock.break_(str(path), "stale-token").render()).returncode == 0
    assert path.read_text() == '{"token":"newer"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.lock"]
    _sh(lock.break_(str(path), "newer").render())
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_release_of_a_lock_already_gone_succeeds(tmp_path: Path) -> None:
    """Releasing when the lock was broken by someone else is not an error and creates nothing."""
    path = tmp_path / "deploy.lock"
    assert _sh(lock.release(str(path), "t1").render()).returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_taking_the_lock_empties_staging_and_a_held_lock_does_not(tmp_path: Path) -> None:
    """What staging holds when the lock is taken is a dead deploy's leftover: it is deleted;
    a deploy that finds the lock held touches nothing there."""
    staging = tmp_path / "incoming"
    staging.mkdir()
    (staging / "app_2.raw").write_bytes(b"partial upload")
    path = str(tmp_path / "deploy.lock")
    assert _sh(lock.acquire(path, '{"token":"t1"}', str(staging)).render()).returncode == 0
    assert list(staging.iterdir()) == []
    (staging / "app_3.raw").write_bytes(b"being uploaded by t1")
    held = _sh(lock.acquire(path, '{"token":"t2"}', str(staging)).render())
    assert held.returncode == lock.HELD
    assert [p.name for p in staging.iterdir()] == ["app_3.raw"]


def test_an_empty_lock_left_by_a_power_cut_holds_nobody(tmp_path: Path) -> None:
    """A lock file with no record (what a power cut leaves of an unsynced write) is replaced;
    a lock with a record is held."""
    path = tmp_path / "deploy.lock"
    path.touch()
    taken = _sh(lock.acquire(str(path), '{"token":"t1"}', str(tmp_path / "incoming")).render())
    assert taken.returncode == 0 and path.read_text() == '{"token":"t1"}\n'
    held = _sh(lock.acquire(str(path), '{"token":"t2"}', str(tmp_path / "incoming")).render())
    assert held.returncode == lock.HELD and '"t1"' in held.stdout


def test_the_new_holder_runs_its_first_command_only_once_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    """THEN (the dead-man switch of a deploy that is gone) runs after the lock is taken, and
    not for a contender that finds it held."""
    path, mark = tmp_path / "deploy.lock", tmp_path / "ran"
    then = Command(("sh", "-c", f"echo x >> {mark}"))
    incoming = str(tmp_path / "incoming")
    assert _sh(lock.acquire(str(path), '{"token":"t1"}', incoming, then).render()).returncode == 0
    assert mark.read_text() == "x\n"
    held = _sh(lock.acquire(str(path), '{"token":"t2"}', incoming, then).render())
    assert held.returncode == lock.HELD and mark.read_text() == "x\n"
