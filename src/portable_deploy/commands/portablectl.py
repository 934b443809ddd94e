"""portablectl: attach, reattach, detach and inspect portable service images."""

from __future__ import annotations

from ..command import Command, builder, cmd, sh


def _flags(now: bool, enable: bool) -> list[str]:
    return [*(["--now"] if now else []), *(["--enable"] if enable else [])]


def _profile(profile: str) -> list[str]:
    # --copy=copy: the units keep the profile text they were attached with, even if the file
    # under /etc/systemd/portable/profile changes later (a tool upgrade): that takes a deploy.
    return ["--profile", profile, "--copy=copy"]


@builder
def attach(image: str, profile: str, *, now: bool = True, enable: bool = True) -> Command:
    """First attach of an app: copy its units in, enable them, start them."""
    return cmd("portablectl", "attach", _profile(profile), _flags(now, enable), image, mutates=True)


@builder
def reattach(image: str, profile: str, *, now: bool = False, enable: bool = True) -> Command:
    """Swap the attached image; without --now running units keep running from the old one."""
    return cmd(
        "portablectl", "reattach", _profile(profile), _flags(now, enable), image, mutates=True
    )


@builder
def detach(image: str, *, now: bool = False, enable: bool = False) -> Command:
    return cmd("portablectl", "detach", _flags(now, enable), image, mutates=True)


@builder
def images_in_use() -> Command:
    """The backing files of the host's loop devices: the images units run from right now.

    Not ``portablectl list``: on systemd 252 it shows every image of a running app as
    "running", whichever one its units run from (seen on the sandbox).
    """
    return sh("cat /sys/block/loop*/loop/backing_file 2>/dev/null; true")


@builder
def is_attached(image: str) -> Command:
    return cmd("portablectl", "is-attached", image)


@builder
def inspect(image: str) -> Command:
    return cmd("portablectl", "inspect", "--no-pager", image)
