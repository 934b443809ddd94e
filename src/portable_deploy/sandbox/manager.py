"""``Sandbox``: the VMs of one state directory: up, status, ssh, down."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NoReturn

from portable_deploy.errors import DeployError

from . import base as base_image
from . import qemu
from .base import BaseImage
from .local import HINT_QEMU, HINT_SSH, Progress, locked, quiet, require, run, write_atomic
from .qemu import Accel, QemuSpec
from .vm import VM, VMFiles, console_tail, known_hosts_line, vm_name

_STOP_GRACE_SECONDS = 10.0


def _default_state_dir() -> Path:
    explicit = os.environ.get("PORTABLE_DEPLOY_SANDBOX_DIR")
    if explicit:
        return Path(explicit)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "portable-deploy" / "sandbox"


def _default_cache_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "portable-deploy"


class Sandbox:
    """The VMs of one state directory, booted from the base image in one cache directory."""

    def __init__(
        self, state_dir: Path | None = None, cache_dir: Path | None = None, cores: int | None = None
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else _default_state_dir()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        #: The host cores these VMs may count on (None: all of them). Where other work runs beside
        #: them (the test suite's other xdist worker and its VMs), a smaller share gives each VM
        #: fewer vCPUs, which is faster (``qemu.vcpus``).
        self.cores = cores

    # -- base image and accelerator --

    @property
    def base_dir(self) -> Path:
        return base_image.base_dir(self.cache_dir)

    def ensure_base(self, progress: Progress | None = None) -> BaseImage:
        """Return the cached base image, rebuilding the disk (or everything) if it fails checks."""
        return base_image.ensure_base(self.cache_dir, progress or quiet)

    def accel(self, base: BaseImage) -> Accel:
        """``kvm`` if /dev/kvm really boots a kernel (probed once per host boot), else ``tcg``."""
        return qemu.choose_accel(self.cache_dir, base.kernel)

    # -- reading the state directory --

    def status(self) -> list[VM]:
        """The VMs of this state dir whose QEMU process is alive."""
        found = (self._read_vm(name) for name in self._names())
        return [vm for vm in found if vm is not None and qemu.is_our_qemu(vm.pid, vm.overlay)]

    def ssh_argv(self, name: str | None = None, command: Sequence[str] = ()) -> list[str]:
        """The ssh command line for root on a VM (the first running one if NAME is None)."""
        if name is None:
            running = self.status()
            if not running:
                raise DeployError("no sandbox VM is running", hint="start one: invoke sandbox.up")
            return running[0].ssh_argv(command)
        vm = self._read_vm(name)
        if vm is None or not qemu.is_our_qemu(vm.pid, vm.overlay):
            raise DeployError(
                f"no sandbox VM named {name!r} is running (state dir {self.state_dir})",
                hint="see `invoke sandbox.status`, or start it with `invoke sandbox.up`",
            )
        return vm.ssh_argv(command)

    def _files(self, name: str) -> VMFiles:
        return VMFiles(self.state_dir / name)

    def _read_vm(self, name: str) -> VM | None:
        try:
            return VM.from_json(self._files(name).record.read_text())
        except (OSError, ValueError):
            return None

    def _names(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        names = [p.name for p in self.state_dir.iterdir() if p.name.startswith("sandbox-")]
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]) if n[8:].isdigit() else 0)

    # -- up --

    def up(
        self, count: int = 1, progress: Progress | None = None, timeout: float = 300
    ) -> list[VM]:
        """Make sandbox-1..COUNT run and answer SSH; running ones are reused, others booted."""
        if count < 1:
            raise DeployError(
                f"count must be at least 1, not {count}", hint="use --count 1 or more"
            )
        lock = threading.Lock()

        def say(line: str) -> None:
            if progress is not None:
                with lock:
                    progress(line)

        require("qemu-system-x86_64", HINT_QEMU)
        require("qemu-img", HINT_QEMU)
        require("ssh", HINT_SSH)
        require("ssh-keygen", HINT_SSH)
        base = self.ensure_base(say)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.state_dir / ".lock"):
            running = {vm.name: vm for vm in self.status()}
            names = [vm_name(i) for i in range(1, count + 1)]
            missing = [n for n in names if n not in running]
            accel = self.accel(base) if missing else Accel.TCG
            cpus = qemu.vcpus(len(missing), self.cores)
            for name in names:
                if name in running:
                    say(f"{name}: already running (pid {running[name].pid})")

            def start(name: str, cancel: threading.Event) -> VM:
                started = time.monotonic()
                reused = name in running
                vm = running[name] if reused else self._boot(name, base, accel, cpus, say)
                self._wait_ssh(vm, started, timeout, say, cancel, quiet=reused)
                self._wait_system(vm, started, timeout, say, quiet=reused)
                return vm

            return _in_parallel(names, start)

    def _boot(self, name: str, base: BaseImage, accel: Accel, cpus: int, say: Progress) -> VM:
        """Start NAME's QEMU on a fresh overlay with a fresh key; return it once QEMU runs."""
        files = self._fresh_files(name)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"portable-deploy-{name}",
             "-f", str(files.key)],
            f"generating the SSH key of {name}",
        )  # fmt: skip
        run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.disk), "-F", "raw",
             str(files.overlay)],
            f"creating the disk overlay of {name}",
        )  # fmt: skip
        append = qemu.kernel_cmdline(name, secrets.token_hex(16), files.key_pub.read_bytes())
        spec = QemuSpec(
            name=name,
            accel=accel,
            cpus=cpus,
            kernel=base.kernel,
            initrd=base.initrd,
            append=append,
            overlay=files.overlay,
            console=files.console,
            pidfile=files.pidfile,
        )
        ports = qemu.start(spec)
        files.known_hosts.write_text(known_hosts_line(ports.ssh, base.host_key()))
        vm = VM(
            name=name,
            pid=int(files.pidfile.read_text().strip()),
            ssh_port=ports.ssh,
            http_port=ports.http,
            https_port=ports.https,
            key=files.key,
            known_hosts=files.known_hosts,
            overlay=files.overlay,
            base=base.dir,
            accel=accel.value,
            cpus=cpus,
            started_at=time.time(),
        )
        write_atomic(files.record, vm.to_json())
        say(
            f"{name}: booting ({accel}, {cpus} vCPU), ssh on 127.0.0.1:{ports.ssh}, http on :{ports.http}"
        )
        return vm

    def _fresh_files(self, name: str) -> VMFiles:
        """NAME's directory, emptied; refused while a QEMU of NAME still runs from it."""
        files = self._files(name)
        stale = self._read_vm(name)
        if stale is not None and qemu.is_our_qemu(stale.pid, stale.overlay):
            raise DeployError(f"{name} is already running", hint="invoke sandbox.down first")
        shutil.rmtree(files.dir, ignore_errors=True)
        files.dir.mkdir(parents=True, mode=0o700)
        return files

    def _wait_ssh(
        self,
        vm: VM,
        started: float,
        timeout: float,
        say: Progress,
        cancel: threading.Event,
        quiet: bool,
    ) -> None:
        """Wait until VM answers SSH; stop it and raise with its console tail if it never does."""
        deadline = started + timeout
        probe = vm.ssh_argv(["true"], batch=True)
        while True:
            if cancel.is_set():
                raise DeployError(f"{vm.name}: waiting for SSH was cancelled")
            if not qemu.is_our_qemu(vm.pid, vm.overlay):
                self._fail(vm, f"{vm.name}: QEMU (pid {vm.pid}) exited while booting")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(vm, f"{vm.name} did not answer SSH within {timeout:.0f} s")
            try:
                proc = subprocess.run(
                    probe, capture_output=True, timeout=min(remaining, 20), check=False
                )
                if proc.returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            cancel.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        if not quiet:
            say(f"{vm.name}: ssh up after {time.monotonic() - started:.1f} s")

    def _wait_system(
        self, vm: VM, started: float, timeout: float, say: Progress, quiet: bool
    ) -> None:
        """Wait for ``systemctl is-system-running`` to say running or degraded, within TIMEOUT."""
        remaining = max(1.0, started + timeout - time.monotonic())
        settle = vm.ssh_argv(
            ["timeout", str(int(remaining)), "systemctl", "is-system-running", "--wait"],
            batch=True,
        )
        try:
            answer = subprocess.run(
                settle, capture_output=True, text=True, timeout=remaining + 10, check=False
            )
            lines = answer.stdout.split()
            state = lines[-1] if lines else "unknown"
        except subprocess.TimeoutExpired:
            state = "timeout"
        if state not in ("running", "degraded"):
            self._fail(vm, f"{vm.name}: systemd did not finish booting (state: {state})")
        if not quiet:
            say(f"{vm.name}: system {state} after {time.monotonic() - started:.1f} s")

    def _fail(self, vm: VM, message: str) -> NoReturn:
        """Stop VM (keeping its console log) and raise MESSAGE with the console's last lines."""
        console = self._files(vm.name).console
        try:
            tail = console_tail(console.read_text(errors="replace"))
        except OSError:
            tail = "(no console output)"
        self._stop(vm.name, keep=("console.log",))
        raise DeployError(
            f"{message}; last lines of its console ({console}):\n{tail}",
            hint="rerun with a longer timeout, or read the whole console log",
        )

    # -- down --

    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop every VM of this state dir and delete its overlay; return the names stopped."""
        say = progress or quiet
        if not self.state_dir.is_dir():
            return []
        with locked(self.state_dir / ".lock"):
            stopped = []
            for name in self._names():
                if self._stop(name):
                    stopped.append(name)
                    say(f"{name}: stopped")
            return stopped

    def _stop(self, name: str, keep: Sequence[str] = ()) -> bool:
        """Stop NAME's QEMU (TERM, then KILL) if it is ours and alive; remove its files but KEEP."""
        files = self._files(name)
        pids: set[int] = set()
        found = self._read_vm(name)
        if found is not None:
            pids.add(found.pid)
        # QEMU writes its pidfile before vm.json exists: a boot cut short leaves only the pidfile.
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(files.pidfile.read_text().strip()))
        ours = [pid for pid in pids if qemu.is_our_qemu(pid, files.overlay)]
        _signal_and_wait(ours, files.overlay, signal.SIGTERM, _STOP_GRACE_SECONDS)
        _signal_and_wait(ours, files.overlay, signal.SIGKILL, 5)
        if keep and files.dir.is_dir():
            for path in files.dir.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        else:
            shutil.rmtree(files.dir, ignore_errors=True)
        return bool(ours)


def _signal_and_wait(pids: list[int], overlay: Path, sig: signal.Signals, seconds: float) -> None:
    """Send SIG to those PIDS still running QEMU on OVERLAY; wait up to SECONDS for them to go."""
    for pid in pids:
        if qemu.is_our_qemu(pid, overlay):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + seconds
    while any(qemu.is_our_qemu(p, overlay) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def _in_parallel(names: list[str], start: Callable[[str, threading.Event], VM]) -> list[VM]:
    """START every name in its own thread; the first failure cancels the others and is raised."""
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = [pool.submit(start, name, cancel) for name in names]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    future.result()
            return [future.result() for future in futures]
        except BaseException:
            # Ctrl-C or a failed VM: the other workers stop waiting now.
            cancel.set()
            raise
