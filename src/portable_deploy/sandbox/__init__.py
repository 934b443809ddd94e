"""The sandbox: real Debian 12 VMs under QEMU on the developer's machine.

Users rehearse deploys on them, and the end-to-end tests run against them. One base image is built
once per recipe and cached (``cache_dir/base-KEY/``, ``base.py``); each VM boots from its own qcow2
overlay of it (``qemu.py``), with a fresh SSH key, and ports forwarded on 127.0.0.1 only. Its
record is ``vm.json`` in the state directory (``vm.py``); ``Sandbox`` (``manager.py``) ties them
together.
"""

from __future__ import annotations

from . import mux
from .base import BaseImage, base_key
from .local import Progress
from .manager import Sandbox
from .qemu import Accel
from .vm import FIRST_VM, VM, vm_name

__all__ = [
    "FIRST_VM",
    "VM",
    "Accel",
    "BaseImage",
    "Progress",
    "Sandbox",
    "base_key",
    "mux",
    "vm_name",
]
