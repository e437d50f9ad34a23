"""The kernel command line: read once per boot, split as the kernel does, `key=value` words.

The boot menus (isolinux/menu.yaml) pre-answer the agent through `oar.*` keys (boot/cmdline.md);
the agent reads the line once and hands it down to every stage that needs it (settings,
boot-interface detection, the netboot menus a server serves).
"""

from __future__ import annotations

import shlex
from pathlib import Path

KERNEL_CMDLINE = Path("proc/cmdline")


def read_cmdline(root: Path = Path("/")) -> str:
    """The kernel command line of the machine under `root` ("" when unreadable)."""
    try:
        return (root / KERNEL_CMDLINE).read_text(errors="replace")
    except OSError:
        return ""


def cmdline_words(cmdline: str) -> list[str]:
    """Split a kernel command line like the kernel does (double quotes group words)."""
    try:
        return shlex.split(cmdline)
    except ValueError:  # an unbalanced quote: the kernel would still pass the words on
        return cmdline.split()


def cmdline_params(cmdline: str) -> dict[str, str | None]:
    """`key=value` words of a kernel command line (last one wins); bare words map to None."""
    params: dict[str, str | None] = {}
    for word in cmdline_words(cmdline):
        if word == "--":  # what follows belongs to init
            break
        key, sep, value = word.partition("=")
        params[key] = value if sep else None
    return params
