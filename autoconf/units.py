"""Which OAR systemd units a role runs; those of the other role are masked for this boot.

The image has every OAR unit disabled (the recipes' oar_services step): the agent starts
oar-server on a server and oar-node on a node, each bringing its timer (oar-accounting.timer is
wanted by oar-server.service, oar-nodecheck.timer by oar-node.service; OAR 2.5 has no timers).
So that nothing starts the other role's units later (a dependency, a package trigger, a
`systemctl start` typed by hand: a node must never run oar-server and its accounting against
the cluster's database), they are masked for this boot only (`systemctl mask --runtime`: a
symlink to /dev/null in /run/systemd/system, which a live system forgets at shutdown anyway),
before the role starts anything (none of them runs then: all are disabled in the image; and
a unit that does not exist, OAR 2.5's timers, can be masked but not stopped).
A solo machine is both and masks nothing. oar.target and oar-node-script.service are masked in
the image for every role.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoconf.config import Role
from boot import proc

Runner = Callable[..., Any]

SERVER_UNITS = ("oar-server.service", "oar-accounting.timer")
NODE_UNITS = ("oar-node.service", "oar-nodecheck.timer")
RUNTIME_UNITS = Path("run/systemd/system")  # where `systemctl mask --runtime` links


def unwanted(role: Role) -> tuple[str, ...]:
    """The OAR units a machine of `role` must not run."""
    if role is Role.SERVER:
        return NODE_UNITS
    if role is Role.NODE:
        return SERVER_UNITS
    return ()  # solo: server and node at once


def masked(unit: str, root: Path = Path("/")) -> bool:
    """Is `unit` masked for this boot (its /run/systemd/system link points to /dev/null)?"""
    link = root / RUNTIME_UNITS / unit
    try:
        return link.is_symlink() and str(link.readlink()) == "/dev/null"
    except OSError:
        return False


def mask_unwanted(role: Role, root: Path = Path("/"), run: Runner = proc.run) -> list[str]:
    """Mask the units `role` must not run; the ones this call masked.

    Nothing without systemd running (root/run/systemd/system absent: a chroot, a test tree).
    """
    if not (root / RUNTIME_UNITS).is_dir():
        return []
    todo = [unit for unit in unwanted(role) if not masked(unit, root)]
    if todo:
        run(["systemctl", "mask", "--runtime", *todo], timeout=120)
    return todo
