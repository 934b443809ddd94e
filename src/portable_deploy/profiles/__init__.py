"""The portable profiles portable-deploy ships, and where portablectl looks for a profile.

A profile is the drop-in portablectl adds to every service of an image (``10-profile.conf``).
The stock ``default`` profile grants back a broad capability set and AF_INET/AF_NETLINK to any
unit, so a hardened unit scores worse under it; ``pd-hardened`` grants nothing back. The text
lives next to this module as PROFILE/service.conf, the layout portablectl reads on the host.
"""

from __future__ import annotations

import hashlib
from importlib import resources

#: The profile deploys attach with unless [deploy] profile says otherwise.
DEFAULT = "pd-hardened"
#: Profiles whose text ships with portable-deploy: host.setup and deploy install them.
OWN = ("pd-hardened",)
#: Where a deploy installs the tool's profiles (portablectl searches /etc first).
HOST_DIR = "/etc/systemd/portable/profile"
#: portablectl's search path for a profile named on the command line, first match wins.
SEARCH_DIRS = (
    HOST_DIR,
    "/run/systemd/portable/profile",
    "/usr/local/lib/systemd/portable/profile",
    "/usr/lib/systemd/portable/profile",
)


def is_own(name: str) -> bool:
    return name in OWN


def text(name: str) -> str:
    """The service.conf of one of the tool's own profiles."""
    if not is_own(name):
        raise KeyError(name)
    return (resources.files(__package__) / name / "service.conf").read_text()


def host_path(name: str) -> str:
    """Where the tool installs its own profile NAME on a host."""
    return f"{HOST_DIR}/{name}/service.conf"


def digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()
