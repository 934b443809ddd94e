"""Failpoints: the step boundaries of a deploy where the fault suite (tests/faults) stops the
deployer, so that it can kill it or cut its connection exactly there and not somewhere near.

Inert unless the environment variable ``PORTABLE_DEPLOY_FAILPOINT`` names one (the idea of
FreeBSD's fail(9) and etcd's gofail, with one kind of action: stop and wait):

- a local boundary (``reach``) stops the ``invoke`` process itself with SIGSTOP; the suite sees
  the stopped state in /proc, does its fault, and sends SIGKILL or SIGCONT;
- a boundary inside a host command (``host_pause``) is a wait in that command, on the host,
  while the flag file ``HOST_FLAG`` exists; the suite removes the flag to let it go on. The wait
  gives up by itself after ``HOST_WAIT`` seconds, so a failed test never leaves a host stuck.
"""

from __future__ import annotations

import os
import signal

from .command import Command, builder, sh_args

ENV = "PORTABLE_DEPLOY_FAILPOINT"

#: The boundaries, in the order a deploy passes them. "upload": half of the image sent;
#: "uploaded": before the host-side check; "checked": after it, before anything is installed or
#: switched; "reattached": on the host, after the image swap and before the restarts (host side);
#: "overlapping": on the host, in an overlapped restart, while the app and its twin both serve;
#: "verifying": after verify's first health check passed; "rolling-back": in the automatic
#: rollback, before its reattach.
LOCAL = ("upload", "uploaded", "checked", "verifying", "rolling-back")
ON_HOST = ("reattached", "overlapping")

HOST_FLAG = "/run/portable-deploy-failpoint"
HOST_WAIT = 120


def armed(name: str) -> bool:
    return os.environ.get(ENV) == name


_reached: set[str] = set()


def reach(name: str) -> None:
    """Stop this process here the first time it passes NAME, if NAME is armed."""
    if armed(name) and name not in _reached:
        _reached.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)


@builder
def _wait_on_host() -> Command:
    return sh_args(
        'touch "$1"; n=0; while [ -e "$1" ] && [ "$n" -lt "$2" ]; do sleep 0.2; n=$((n + 1)); '
        'done; rm -f "$1"',
        HOST_FLAG,
        str(HOST_WAIT * 5),
        mutates=True,
    )


def host_pause(name: str) -> Command | None:
    """The command that waits on the host at NAME the first time it is asked for, when NAME is
    armed (a rollback's own reattach does not stop again); else None."""
    if not armed(name) or name in _reached:
        return None
    _reached.add(name)
    return _wait_on_host()
