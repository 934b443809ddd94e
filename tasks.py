"""Deploy tasks for the scoreboard reference app: `invoke --list`."""

from portable_deploy.tasks import ns  # noqa: F401
