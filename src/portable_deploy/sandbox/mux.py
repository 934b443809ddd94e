"""One shared SSH connection per sandbox VM (an OpenSSH control master), for callers that run
many short commands on a VM (the tests, the benches).

Every ``VM.ssh_argv`` command names the VM's control socket: while a master runs, the command
rides on its connection (about 0.07 s instead of a 0.7 s handshake, most of it the TCG guest's
CPU); when none runs, ssh connects on its own, as before. The masters are this process's own
children, stopped by pid; a master also ends by itself when its VM goes away (keepalives).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .vm import VM

#: The masters this process started, by control socket.
_MASTERS: dict[Path, subprocess.Popen[bytes]] = {}
START_TIMEOUT = 60.0


def share(vm: VM, timeout: float = START_TIMEOUT) -> bool:
    """Start VM's shared connection unless one of ours runs; False if it did not come up (the
    VM's commands then connect on their own)."""
    path = vm.control_path
    running = _MASTERS.get(path)
    if running is not None and running.poll() is None and path.exists():
        return True
    stop(vm)
    path.unlink(missing_ok=True)  # a socket left by a master that was killed
    argv = vm.ssh_argv(batch=True)
    options = [
        "-M", "-N",
        "-o", "ControlMaster=yes",
        "-o", "ControlPersist=no",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
    ]  # fmt: skip
    master = subprocess.Popen(
        [*argv[:1], *options, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _MASTERS[path] = master
    deadline = time.monotonic() + timeout
    while not path.exists():
        if master.poll() is not None or time.monotonic() > deadline:
            stop(vm)
            return False
        time.sleep(0.05)
    return True


def stop(vm: VM) -> bool:
    """Stop VM's shared connection if this process started one; whether it had."""
    master = _MASTERS.pop(vm.control_path, None)
    if master is not None:
        _end(master)
    return master is not None


def stop_all() -> None:
    """Stop every shared connection this process started."""
    for path in list(_MASTERS):
        _end(_MASTERS.pop(path))


def _end(master: subprocess.Popen[bytes]) -> None:
    if master.poll() is None:
        master.terminate()
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
