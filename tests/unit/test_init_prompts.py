"""`init` on a terminal: the questions it asks for what the flags left open, and that it asks
them only on a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portable_deploy.scaffold import Port
from portable_deploy.tasks import init as module

SRC = Path(__file__).resolve().parents[2] / "src"


def _scripted(monkeypatch: pytest.MonkeyPatch, replies: dict[str, object]) -> list[str]:
    """Prompt.ask and Confirm.ask answer by the start of their question; the asked questions
    are recorded in order."""
    asked: list[str] = []

    def ask(question: str, *args: object, **kwargs: object) -> object:
        asked.append(str(question))
        for start, reply in replies.items():
            if str(question).startswith(start):
                return reply
        raise AssertionError(f"unexpected question: {question}")

    monkeypatch.setattr(module.Prompt, "ask", staticmethod(ask))
    monkeypatch.setattr(module.Confirm, "ask", staticmethod(ask))
    return asked


def test_on_a_terminal_every_open_answer_is_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no flags, init asks the name, the build command, the binary, the ports, Litestream,
    TLS (then the domain and e-mail) and the host, and takes the replies."""
    asked = _scripted(
        monkeypatch,
        {
            "App name": "shop",
            "Command that builds": "make",
            "Binary it writes": "out/shop",
            "Ports systemd holds": "8080/web",
            "Does the app keep SQLite": True,
            "Does the app serve HTTPS": True,
            "Public name": "shop.example.org",
            "ACME contact": "ops@example.org",
            "SSH host": "prod",
        },
    )
    answers = module._answers(
        tmp_path, True, name="", binary="", build="", ports=[], litestream=None, tls=None,
        domain="", email="", host="",
    )  # fmt: skip
    assert [q.split()[0] for q in asked] == [
        "App", "Command", "Binary", "Ports", "Does", "Does", "Public", "ACME", "SSH",
    ]  # fmt: skip
    assert (answers.name, answers.build, answers.binary) == ("shop", "make", "out/shop")
    assert answers.ports[0] == Port(8080, "web") and answers.litestream
    assert (answers.domain, answers.email, answers.host) == (
        "shop.example.org",
        "ops@example.org",
        "prod",
    )


def test_flags_leave_nothing_to_ask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the flags answered is not asked again, even on a terminal."""
    asked = _scripted(monkeypatch, {})
    answers = module._answers(
        tmp_path, True, name="shop", binary="bin/shop", build="", ports=["80/http"],
        litestream=False, tls=False, domain="", email="", host="prod",
    )  # fmt: skip
    assert asked == [] and answers.binary == "bin/shop"


def _read_until(fd: int, text: bytes, seen: bytearray, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {text!r}: {bytes(seen)!r}"
            seen += chunk


def test_a_real_terminal_gets_the_questions(tmp_path: Path) -> None:
    """`portable-deploy init` on a terminal asks, takes typed replies, and writes the set-up."""
    main, sub = pty.openpty()
    root = tmp_path / "shop"
    root.mkdir()
    env = dict(os.environ, PYTHONPATH=str(SRC), TERM="dumb", COLUMNS="200")
    for name in ("DEPLOY_TOML", "MUTANT_UNDER_TEST"):  # see test_scaffold._child_env
        env.pop(name, None)
    child = subprocess.Popen(
        [sys.executable, "-m", "portable_deploy", "init", "--binary", "bin/shop"],
        cwd=root, env=env, stdin=sub, stdout=sub, stderr=sub, close_fds=True,
    )  # fmt: skip
    os.close(sub)
    seen = bytearray()
    try:
        for question, reply in (
            (b"App name", b"\n"),  # the default: the directory's name
            (b"Ports systemd holds", b"\n"),
            (b"keep SQLite", b"y\n"),
            (b"HTTPS", b"n\n"),
            (b"SSH host", b"\n"),
        ):
            _read_until(main, question, seen)
            os.write(main, reply)
        _read_until(main, b"is set up", seen)
        assert child.wait(timeout=60) == 0, bytes(seen)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(main)
    text = (root / "deploy.toml").read_text()
    assert 'name = "shop"' in text
    assert (root / "units/shop-litestream.service").is_file()
