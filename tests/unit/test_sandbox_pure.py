"""The sandbox's pure parts: cache key, QEMU command line, VM records, console tail, vCPUs."""

from __future__ import annotations

from portable_deploy.sandbox import base_key

# The value base_key() had before the sandbox became a package. Users' base images are cached
# under ~/.cache/portable-deploy/base-KEY: changing the key silently invalidates every user's
# cache and costs each of them a root debootstrap. Change it only on purpose, with the recipe.
PINNED_BASE_KEY = "5b38c20c8821"


def test_base_key_is_pinned() -> None:
    """base_key() is the recorded value, so existing cached base images stay valid."""
    assert base_key() == PINNED_BASE_KEY
