"""The lock's shell scripts in a real `sh`: a host that was never set up is named, and removing
a lock is atomic (rename, check, put back) so two operators never remove each other's lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
