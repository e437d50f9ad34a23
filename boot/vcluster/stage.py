"""Where a virtual-cluster VM is in its boot, read from its serial console log.

Stages, in order: booting (kernel, live-boot, systemd) → agent (`oar-autoconf boot` started)
→ registered (a node registered with the server; the server's registration service is up)
→ Alive (the node is Alive in OAR; the server finished its set-up). `failed` when the log shows
why the VM cannot get there (the agent's error, a kernel panic, a live-boot failure). Only the
text after the last kernel start counts, so a rebooted VM starts again from `booting`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from boot import console


class Stage(StrEnum):
    BOOTING = "booting"
    AGENT = "agent"
    REGISTERED = "registered"
    ALIVE = "Alive"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return list(Stage).index(self)


KERNEL_START = re.compile(r"Linux version \d")
# The agent's lines are read with boot.console's patterns; these are the kernel's and systemd's.
FAILURES = (
    console.ERROR,
    re.compile(r"Kernel panic - not syncing.*"),
    re.compile(r"Unable to find a medium containing a live file system.*"),
    re.compile(r"Failed to start oar-live-a.*"),
)
# Lines worth showing when a VM does not get where it should (besides the log's tail).
NOTABLE = re.compile(r"error|fail|warning|panic|timed out|Alive", re.I)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass(frozen=True)
class Progress:
    stage: Stage
    detail: str = ""  # the OAR hostname once registered, or the failure's line


def current_boot(log: str) -> str:
    """The part of a serial log written since the kernel last started."""
    starts = [m.start() for m in KERNEL_START.finditer(log)]
    return log[starts[-1]:] if starts else log


def clean(text: str) -> str:
    return ANSI.sub("", text)


def _recovered(text: str, failure: re.Match, role: str) -> bool:
    """A node whose agent found no server yet is not lost: its watcher keeps looking and
    registers it when the server comes up (nodes boot alongside their server)."""
    if role == "server":
        return False
    return bool(console.REGISTERED.search(text[failure.end():])) or bool(
        console.EARLIER_WAITING.search(text))


def progress(log: str, role: str) -> Progress:
    """The stage of a VM of `role` (server/node) from its whole serial log."""
    text = clean(current_boot(log))
    for failure in FAILURES:
        found = failure.search(text)
        if found and not _recovered(text, found, role):
            return Progress(Stage.FAILED, found.group(0).strip())
    if role == "server":
        if console.READY.search(text):
            return Progress(Stage.ALIVE)
        if console.SERVING.search(text):
            return Progress(Stage.REGISTERED)
    else:
        registered = console.registered_hosts(text)
        alive = console.alive_hosts(text)
        if alive:
            return Progress(Stage.ALIVE, alive[-1])
        if registered:
            return Progress(Stage.REGISTERED, registered[-1])
    if console.AGENT_STARTED.search(text):
        return Progress(Stage.AGENT)
    return Progress(Stage.BOOTING)


def excerpt(log: str, lines: int = 25) -> str:
    """What explains a VM's state: the notable lines of its current boot, then the log's tail."""
    text = clean(current_boot(log))
    all_lines = [line for line in text.splitlines() if line.strip()]
    notable = [line for line in all_lines
               if console.ANY.search(line) or NOTABLE.search(line)][-lines:]
    tail = all_lines[-lines:]
    shown = notable + ["..."] + [line for line in tail if line not in notable] if notable else tail
    return "\n".join(shown)
