"""Pure builders of the remote commands the tool runs: each returns a ``Command``, none runs it."""

from .layout import Layout

__all__ = ["Layout"]
