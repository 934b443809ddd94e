"""Local commands find the tools of the Python environment that runs the plugin."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from portable_deploy.config import AppConfig, BuildConfig, Config, ImageConfig, SignConfig
from portable_deploy.image import run_build_commands
from portable_deploy.localenv import env_bin_dir, tool_env


def test_env_bin_dir_is_the_interpreters_own_bin_not_the_resolved_one() -> None:
    """A venv's bin/ is found even though its python is a symlink to the system one."""
    assert env_bin_dir() == Path(sys.executable).parent


def test_tool_env_puts_the_env_bin_first_once() -> None:
    """The env's bin/ comes first on PATH and is not repeated further on."""
    first = str(env_bin_dir())
    env = tool_env({"PATH": f"/usr/bin:{first}:/bin"}, EXTRA="1")
    assert env["PATH"] == f"{first}:/usr/bin:/bin"
    assert env["EXTRA"] == "1"


def test_tool_env_without_path_uses_the_default_path() -> None:
    """With no PATH at all (env -i), the default search path follows the env's bin/."""
    assert tool_env({})["PATH"].startswith(str(env_bin_dir()) + ":")


def test_build_commands_find_the_env_tools_with_a_bare_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.venv/bin/invoke build` with PATH=/usr/bin:/bin: build commands see the venv's bin/ first."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    cfg = Config(
        path=tmp_path / "deploy.toml",
        app=AppConfig("demo", "1"),
        build=BuildConfig(commands=('echo "$PATH" > path.txt',)),
        image=ImageConfig(tree=None, units=tmp_path / "units"),
        sign=SignConfig(),
        hosts={},
    )
    run_build_commands(cfg, "1")
    assert (tmp_path / "path.txt").read_text().split(":")[0] == str(env_bin_dir())
