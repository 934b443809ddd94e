"""Fleet logic that needs no host: batches, the bounded runner, host selection, the merged log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portable_deploy import journal
from portable_deploy.config import HostConfig, load_config
from portable_deploy.errors import ConfigError, DeployError
from portable_deploy.fleet import batch_sizes, each, in_batches
from portable_deploy.targets import select
from tests.unit.test_config import APP, write


@pytest.mark.parametrize(
    ("total", "batches", "sizes"),
    [
        (3, (1, "100%"), [1, 2]),
        (1, (1, "100%"), [1]),
        (10, (1, "25%", "100%"), [1, 3, 6]),
        (10, (1, "25%"), [1, 3, 3, 3]),  # the last entry repeats (Ansible's serial)
        (3, (1, 1, 1), [1, 1, 1]),
        (3, (2,), [2, 1]),
        (5, ("50%",), [3, 2]),
        (2, (5,), [2]),
        (0, (1, "100%"), []),
    ],
)
def test_batch_sizes(total: int, batches: tuple[int | str, ...], sizes: list[int]) -> None:
    assert batch_sizes(total, batches) == sizes


@given(
    st.integers(0, 200),
    st.lists(st.one_of(st.integers(1, 50), st.integers(1, 100).map(lambda p: f"{p}%")), min_size=1),
)
def test_batches_cover_every_host_once_in_order(total: int, batches: list[int | str]) -> None:
    hosts = list(range(total))
    split = in_batches(hosts, batches)
    assert [h for batch in split for h in batch] == hosts
    assert all(batch for batch in split)


def test_each_bounds_its_threads_and_keeps_errors_in_place() -> None:
    running, most = 0, 0
    guard = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with guard:
            running -= 1
        if n == 3:
            raise DeployError(f"host {n} failed")
        return n * 10

    results = each(list(range(8)), work, limit=3)
    assert most <= 3
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        0, 10, 20, "host 3 failed", 40, 50, 60, 70,
    ]  # fmt: skip


def test_each_runs_one_item_in_this_thread() -> None:
    seen = []
    each([1], lambda n: seen.append(threading.current_thread()), limit=8)
    assert seen == [threading.main_thread()]


def test_each_lets_other_exceptions_through() -> None:
    def work(n: int) -> None:
        if n == 1:
            raise ValueError("a bug, not a host's failure")

    with pytest.raises(ValueError):
        each([0, 1, 2], work, limit=2)


FLEET = APP + (
    '[hosts.a]\naddress = "a.example"\nroles = ["web", "canary"]\n'
    '[hosts.b]\naddress = "b.example"\nroles = ["web"]\n'
    '[hosts.c]\naddress = "c.example"\nroles = ["worker"]\n'
)


def test_roles_select_hosts_in_config_order(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FLEET))
    assert cfg.hosts["a"].roles == ("web", "canary")
    names = lambda hosts: [h.name for h in hosts]  # noqa: E731
    assert names(select(cfg, None)) == ["a", "b", "c"]
    assert names(select(cfg, None, ["web"])) == ["a", "b"]
    assert names(select(cfg, None, ["worker", "canary"])) == ["a", "c"]
    assert names(select(cfg, ["b", "c"], ["web"])) == ["b"]
    assert names(select(cfg, ["c", "a"])) == ["a", "c"]


def test_unknown_role_is_one_error_naming_the_known_ones(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FLEET))
    with pytest.raises(DeployError) as info:
        select(cfg, None, ["db"])
    assert "no host has the role db" in info.value.message
    assert info.value.hint == "roles in it: canary, web, worker"
    with pytest.raises(DeployError, match="none of the hosts c has the role web"):
        select(cfg, ["c"], ["web"])


def test_fleet_table_defaults_and_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FLEET))
    f = cfg.fleet
    assert (f.parallel, f.batches, f.pause, f.on_failure, f.max_failures) == (
        8, (1, "100%"), 0.0, "stop", 0,
    )  # fmt: skip
    text = FLEET + (
        '[fleet]\nparallel = 2\nbatches = [1, "25%", "100%"]\npause = 1.5\n'
        'on_failure = "rollback-all"\nmax_failures = 1\n'
    )
    (tmp_path / "set").mkdir()
    f = load_config(write(tmp_path / "set", text)).fleet
    assert (f.parallel, f.batches, f.pause, f.on_failure, f.max_failures) == (
        2, (1, "25%", "100%"), 1.5, "rollback-all", 1,
    )  # fmt: skip
    assert HostConfig(name="x").roles == ()


@pytest.mark.parametrize(
    ("line", "where", "found"),
    [
        ("batches = []", "[fleet] batches", "[]"),
        ("batches = [0]", "[fleet] batches[0]", "0"),
        ('batches = [1, "150%"]', "[fleet] batches[1]", '"150%"'),
        ('batches = [1, "half"]', "[fleet] batches[1]", '"half"'),
        ("parallel = 0", "[fleet] parallel", "0"),
        ('on_failure = "continue"', "[fleet] on_failure", '"continue"'),
        ("max_failures = -1", "[fleet] max_failures", "-1"),
        ("pause = -2", "[fleet] pause", "-2"),
        ("canary = 1", "[fleet] canary", ""),
    ],
)
def test_bad_fleet_values_are_one_error_with_the_key(
    tmp_path: Path, line: str, where: str, found: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, FLEET + f"[fleet]\n{line}\n"))
    assert where in str(info.value)
    assert found in str(info.value)
    assert info.value.hint


def test_bad_roles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[hosts\.a\] roles"):
        load_config(write(tmp_path, APP + '[hosts.a]\naddress = "a"\nroles = "web"\n'))


def _line(usec: int, message: object, unit: str = "scoreboard") -> str:
    return json.dumps(
        {"__REALTIME_TIMESTAMP": str(usec), "MESSAGE": message, "SYSLOG_IDENTIFIER": unit,
         "_PID": "42"}
    )  # fmt: skip


def test_journal_lines_of_several_hosts_merge_in_time_order() -> None:
    a = journal.entries("a", "\n".join([_line(1_000, "a1"), _line(3_000, "a3"), "not json"]))
    b = journal.entries("b", "\n".join([_line(2_000, "b2"), _line(4_000, [104, 105])]))
    merged = journal.merged([a, b])
    assert [(e.host, e.message) for e in merged] == [
        ("a", "a1"), ("b", "b2"), ("a", "a3"), ("b", "hi"),
    ]  # fmt: skip
    assert merged[0].render() == "1970-01-01T00:00:00.001000Z [a] scoreboard[42]: a1"


def test_journal_parse_skips_what_is_not_an_entry() -> None:
    assert journal.parse("a", "") is None
    assert journal.parse("a", "[1, 2]") is None
    assert journal.parse("a", json.dumps({"MESSAGE": "no time"})) is None


def test_followed_output_is_handed_on_in_whole_lines() -> None:
    from portable_deploy.host import whole_lines

    done, rest = whole_lines(b"", b'{"a"')
    assert (done, rest) == ([], b'{"a"')
    done, rest = whole_lines(rest, b': "\xc3')  # a character split between two reads
    done, rest = whole_lines(rest, b'\xa9"}\n{"b": 2}\n\n{"c"')
    assert (done, rest) == (['{"a": "\u00e9"}', '{"b": 2}', ""], b'{"c"')
    assert whole_lines(b"", b"x\r\ny\r\n") == (["x", "y"], b"")  # on a terminal: CR LF


def test_the_board_is_a_live_table_on_a_terminal_and_plain_lines_elsewhere() -> None:
    import io

    from rich.console import Console

    from portable_deploy.board import Board

    plain = io.StringIO()
    board = Board(["a", "b"], Console(file=plain, width=100))
    assert not board.live
    with board:
        steps = board.steps("a", "upload")
        with steps.step("upload scoreboard_2.raw to a"), steps.transfer("x", 2_000_000) as sent:
            sent(1_000_000, 2_000_000)
        board.update("b", "unreachable", "[b] cannot reach b:22", failed=True)
    assert plain.getvalue().splitlines() == [
        "· [a] upload scoreboard_2.raw",
        "✗ [b] unreachable [b] cannot reach b:22",
    ]
    shown = io.StringIO()
    term = Board(["a", "b"], Console(file=shown, width=100, force_terminal=True))
    assert term.live
    with term:
        term.sent("a", 1_000_000, 2_000_000)
        term.update("a", "upload scoreboard_2.raw")
    text = shown.getvalue()
    assert "upload scoreboard_2.raw" in text and "1.0 MB / 2.0 MB" in text
