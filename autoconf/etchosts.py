"""The block of /etc/hosts that OAR Live manages: the server and every registered node.

Every machine of the cluster must resolve every other by its OAR name (the server connects to
nodes by name, jobs span nodes). OAR Live keeps those names between two marker lines
(autoconf.block) and never touches the rest of the file:

    # BEGIN oar-live (managed by oar-autoconf)
    10.0.0.1 oar-server
    10.0.0.5 node-5254000a0b0c
    # END oar-live
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from autoconf.block import BEGIN, END, find_block

__all__ = ["BEGIN", "END", "HOSTS", "merge", "parse_block", "render_block", "write_block"]

HOSTS = Path("etc/hosts")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def render_block(entries: Mapping[str, str]) -> str:
    """The managed lines (markers included) for `entries`, a mapping hostname -> IPv4 address."""
    lines = [BEGIN]
    for name, address in sorted(entries.items()):
        if not _NAME.match(name):
            raise ValueError(f"/etc/hosts: {name!r} is not a valid host name")
        ipaddress.IPv4Address(address)
        lines.append(f"{address} {name}")
    lines.append(END)
    return "\n".join(lines) + "\n"


def parse_block(text: str) -> dict[str, str]:
    """The hostname -> address entries inside the managed block of `text` (empty if none)."""
    entries: dict[str, str] = {}
    for line in find_block(text).inside:
        if line.strip() and not line.lstrip().startswith("#"):
            address, *names = line.split()
            for name in names:
                entries[name] = address
    return entries


def merge(text: str, entries: Mapping[str, str]) -> str:
    """`text` with its managed block replaced by one for `entries` (appended if it had none)."""
    block = find_block(text)

    def unmanaged(lines: tuple[str, ...]) -> tuple[str, ...]:
        # A name we manage must not also resolve elsewhere (e.g. Debian's 127.0.1.1 line).
        kept = []
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and any(name in entries for name in fields[1:]):
                remaining = [name for name in fields[1:] if name not in entries]
                if not remaining:
                    continue
                line = " ".join([fields[0], *remaining])
            kept.append(line)
        return tuple(kept)

    lines = render_block(entries).splitlines()[1:-1]
    cleaned = replace(block, before=unmanaged(block.before), after=unmanaged(block.after))
    return cleaned.replaced(lines)


def write_block(entries: Mapping[str, str], path: Path = Path("/") / HOSTS) -> bool:
    """Make the managed block of `path` list exactly `entries`; True when the file changed."""
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = ""
    wanted = merge(current, entries)
    if wanted == current:
        return False
    # /etc/hosts may be a bind mount (containers): rewrite in place rather than rename over it.
    with open(path, "w") as handle:
        handle.write(wanted)
    os.chmod(path, 0o644)
    return True
