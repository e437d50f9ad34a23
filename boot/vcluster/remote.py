"""Commands on the virtual cluster's VMs: ssh from inside its network namespace, OAR jobs.

Why ssh: every VM runs sshd on the private LAN and the image lets its job account log in with
this build's password (build-iso writes it beside the ISO, in IMAGE.credentials), so the
launcher needs no agent of its own in the guest and gets a clean stdout, stderr and exit status
per command. The password is handed to ssh through SSH_ASKPASS (no sshpass, no terminal); host
keys change every boot, so they are neither checked nor remembered — the LAN is private to this
machine. A node netbooted from the server has the address the server's DHCP gave it: the
server's /etc/hosts, which its registration service keeps, tells it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from boot.proc import CommandError, run
from boot.vcluster.net import VirtualNetwork
from boot.vcluster.state import ClusterState, Machine

CREDENTIALS_SUFFIX = ".credentials"  # out/oar-live.iso -> out/oar-live.credentials
SSH_OPTIONS = (
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "PubkeyAuthentication=no",
    "-o", "PreferredAuthentications=password,keyboard-interactive",
    "-o", "NumberOfPasswordPrompts=1", "-o", "ServerAliveInterval=15",
)  # fmt: skip
SSH_FAILED = 255  # ssh's own status: could not connect or authenticate
JOB_ID = re.compile(r"OAR_JOB_ID=(\d+)")
JOB_END = re.compile(r"\b(Terminated|Error)\s*$")


class RemoteError(Exception):
    """A VM could not be reached, or a command on it failed."""


@dataclass(frozen=True)
class Credentials:
    """The job account of one build: what build-iso wrote in IMAGE.credentials."""

    user: str
    password: str


def credentials_path(image: Path) -> Path:
    return image.with_suffix(CREDENTIALS_SUFFIX)


def read_credentials(image: Path) -> Credentials:
    """The job account of the build that wrote `image` (`user:` and `password:` lines)."""
    path = credentials_path(image)
    try:
        lines = path.read_text(errors="replace").splitlines()[:16]
    except OSError as exc:
        raise RemoteError(f"{path}: cannot read the image's credentials ({exc.strerror or exc}); "
                          "build-iso writes them beside the ISO") from None
    values = dict(line.split(": ", 1) for line in lines if ": " in line and line[:1] != "#")
    if not values.get("user") or not values.get("password"):
        raise RemoteError(f"{path}: expected a `user:` and a `password:` line")
    return Credentials(values["user"], values["password"])


@dataclass(frozen=True)
class Remote:
    """ssh to the VMs of one cluster; the password by default from the ISO's credentials."""

    state: ClusterState
    password: str | None = None

    @property
    def askpass(self) -> Path:
        return self.state.state_dir / "askpass"

    def _ensure_askpass(self) -> None:
        if not self.askpass.exists():
            password = self.password or read_credentials(Path(self.state.iso)).password
            self.askpass.touch(mode=0o700)
            self.askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' {shlex.quote(password)}\n")

    def argv(self, machine: Machine, command: str, address: str | None = None) -> list[str]:
        """ssh to `machine` (at `address`, default its recorded one) as the job user, run in
        the cluster's namespace."""
        net = VirtualNetwork(self.state.netns, self.state.state_dir)
        target = address or machine.address
        return net.inside(["ssh", *SSH_OPTIONS, f"{self.state.user}@{target}", command])

    def address(self, machine: Machine) -> str:
        """Where `machine` answers: its fixed lease, or what the server registered it at."""
        if machine.address:
            return machine.address
        name = machine.oar_hostname or machine.name
        result = self.run(f"getent ahostsv4 {shlex.quote(name)}", timeout=60, check=False)
        words = result.stdout.split()
        try:
            return str(ipaddress.IPv4Address(words[0]))
        except (IndexError, ValueError):
            raise RemoteError(f"{machine.name}: the server gave it its address and has not "
                              f"registered {name} yet: try again once it is registered") from None

    @property
    def env(self) -> dict[str, str]:
        return {"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0"}

    def run(self, command: str, machine: Machine | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command line on `machine` (default: the server) as the job user."""
        self._ensure_askpass()
        target = machine or self.state.server
        argv = self.argv(target, command, self.address(target))
        try:
            result = run(argv, check=False, env=self.env, timeout=timeout)
        except CommandError as exc:
            raise RemoteError(f"{target.name}: {exc}") from None
        if check and result.returncode != 0:
            why = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
            raise RemoteError(f"{target.name}: `{command}` failed: {why[0]}")
        return result

    def reachable(self, machine: Machine | None = None) -> bool:
        try:
            return self.run("true", machine, timeout=30, check=False).returncode == 0
        except RemoteError:
            return False

    # ---- OAR ------------------------------------------------------------------------------

    def cluster_status(self) -> dict | None:
        """`oar-autoconf status --json` of the server; None when it cannot answer yet."""
        try:
            result = self.run("sudo -n oar-autoconf status --json", timeout=90, check=False)
        except RemoteError:
            return None
        if result.returncode not in (0, 1):
            return None
        try:
            return json.loads(result.stdout)
        except ValueError:
            return None

    def submit(self, command: str, resources: str) -> int:
        """`oarsub -l RESOURCES COMMAND` as the job user, from their home; the job id."""
        line = f"cd && oarsub -l {shlex.quote(resources)} {shlex.quote(command)}"
        out = self.run(line, timeout=180).stdout
        found = JOB_ID.search(out)
        if not found:
            raise RemoteError(f"oarsub printed no job id:\n{out}")
        return int(found.group(1))

    def wait_job(self, job: int, timeout: float = 600, poll: float = 5) -> str:
        """Poll `oarstat -s` until the job ended; its final state (Terminated, Error)."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run(f"oarstat -s -j {job}", timeout=90, check=False).stdout.strip()
            ended = JOB_END.search(state)
            if ended:
                return ended.group(1)
            time.sleep(poll)
        raise RemoteError(f"job {job} did not end within {timeout:.0f} s (last: {state!r})")

    def job_output(self, job: int) -> str:
        """The job's stdout, read on the server: OAR writes it in the folder the job was
        submitted from (the job user's home, shared by every node)."""
        result = self.run(f"cat ~/OAR.{job}.stdout", timeout=60, check=False)
        if result.returncode != 0:
            raise RemoteError(f"no OAR.{job}.stdout in the server's home of {self.state.user}")
        return result.stdout
