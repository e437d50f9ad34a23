"""Can OAR use a node? The check OAR's node checker makes, before the node is made Alive.

OAR reaches a node through oar-node's sshd (port 6667) as the user oar, with oar.conf's
OPENSSH_CMD: its checker (sentinelle) runs a command there, and a node that does not answer is
Suspected. `check` does the same from the server, as oar, and also reads the free space of
the directories a job needs (a full disk passes ssh but fails every job). It returns None when
the node is usable, else the reason in one line.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from autoconf.oarconf import parse
from boot import proc

__all__ = ["CHECK_SECONDS", "MIN_FREE_KIB", "Checker", "free_space_problem"]

CHECK_SECONDS = 10  # ssh's connection timeout; the whole check is cut off at twice this
MIN_FREE_KIB = 1024  # below this a job cannot write its files
OAR_PORT = 6667
DEFAULT_OPENSSH = "/usr/bin/ssh -p 6667"  # OAR's own default (OAR::Tools)
DISK_COMMAND = "df -Pk /tmp /var/lib/oar"

Runner = Callable[..., object]


def free_space_problem(df_output: str, host: str) -> str | None:
    """None when every file system `df -Pk` lists has MIN_FREE_KIB free, else why not."""
    for line in df_output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit() and int(fields[3]) < MIN_FREE_KIB:
            return f"{host}: disk full ({fields[5]} has {fields[3]} KiB free)"
    return None


class Checker:
    """The reachability check, with the ssh command of the cluster's oar.conf."""

    def __init__(self, conf: Path, run: Runner = proc.run, timeout: float = CHECK_SECONDS):
        self.conf = conf
        self.run = run
        self.timeout = timeout

    def argv(self, host: str, address: str) -> list[str]:
        try:
            openssh = parse(self.conf.read_text()).get("OPENSSH_CMD") or DEFAULT_OPENSSH
        except OSError:
            openssh = DEFAULT_OPENSSH
        # HostKeyAlias: the node is known under its name (what OAR's checker connects to)
        # while the address is the one it registered from.
        return ["runuser", "-u", "oar", "--", *shlex.split(openssh),
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.timeout:g}",
                "-o", f"HostKeyAlias={host}", address, DISK_COMMAND]  # fmt: skip

    def check(self, host: str, address: str) -> str | None:
        """None when OAR can use `host` at `address`, else the reason in one line."""
        try:
            result = self.run(self.argv(host, address), check=False, timeout=2 * self.timeout)
        except proc.CommandError as exc:
            return f"{host}: the check did not finish ({exc})"
        status = getattr(result, "returncode", 1)
        if status == 0:
            return free_space_problem(getattr(result, "stdout", ""), host)
        lines = [line for line in str(getattr(result, "stderr", "")).splitlines()
                 if line.strip() and not line.startswith("Warning: Permanently added")]
        detail = lines[-1].strip() if lines else f"exit status {status}"
        if status == 255:
            return (f"{host}: oar-node's sshd at {address}:{OAR_PORT} does not let oar in "
                    f"({detail[:200]})")
        return f"{host}: a command as oar on the node failed ({detail[:200]})"
