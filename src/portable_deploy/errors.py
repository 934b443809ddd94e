"""The one error type a user sees: a message that says what is wrong and a hint that says what to do."""

from __future__ import annotations


class DeployError(Exception):
    """A failure the user can act on; ``tasks.py`` turns it into one line and exit code 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ConfigError(DeployError):
    """deploy.toml is wrong: the message names the file and the key path."""


class LockHeld(DeployError):
    """Someone else holds the app's deploy lock on a host: nothing was changed there."""


class Refused(DeployError):
    """The release was refused before anything changed (damaged, unsigned, or not the signed
    image); its staged files are deleted. The pipeline audits it as refused."""
