"""Commands on the virtual cluster's VMs: ssh from inside its network namespace, OAR jobs.

Why ssh: every VM runs sshd on the private LAN and the image lets its job account log in with
this build's password (build-iso writes it beside the ISO, in IMAGE.credentials), so the
launcher needs no agent of its own in the guest and gets a clean stdout, stderr and exit status
per command. The password is handed to ssh through SSH_ASKPASS (no sshpass, no terminal); host
keys change every boot, so they are neither checked nor remembered — the LAN is private to this
machine. A node netbooted from the server has the address the server's DHCP gave it: the
server's /etc/hosts, which its registration service keeps, tells it.

One ssh connection per VM carries every command (OpenSSH's ControlMaster, its socket in the
state directory, kept for CONTROL_PERSIST seconds after the last command): a password login
costs a VM under emulation about 1.4 s of CPU, which the cluster's own work would wait for at
every poll. A master whose VM rebooted dies within SERVER_ALIVE seconds; the next command then
logs in again. `oar-vcluster down` stops the masters with the VMs.
"""

from __future__ import annotations

import contextlib
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
CONTROL_PERSIST = 120
SERVER_ALIVE = (10, 6)  # keepalive every 10 s, 6 unanswered: the connection is gone after 60 s
SSH_OPTIONS = (
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "PubkeyAuthentication=no",
    "-o", "PreferredAuthentications=password,keyboard-interactive",
    "-o", "NumberOfPasswordPrompts=1", "-o", f"ServerAliveInterval={SERVER_ALIVE[0]}",
    "-o", f"ServerAliveCountMax={SERVER_ALIVE[1]}",
)  # fmt: skip
# In the state directory, one per VM (%h: its address, at most 15 characters; the user and
# port are the same for every VM). The master binds "PATH.<16 random characters>" first, then
# renames it: that longer path must fit in sun_path (107 characters and a NUL).
CONTROL_SOCKET = "ssh-%h"
SOCKET_PATH_MAX = 107 - len(".") - 16
SSH_FAILED = 255  # ssh's own status: could not connect or authenticate
JOB_ID = re.compile(r"OAR_JOB_ID=(\d+)")


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
    # One connection per VM for every command; `up` polls a booting server with fresh logins
    # (twice in CI its polls stayed stuck behind a connection made while the server booted).
    share_connection: bool = True

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
        return net.inside(["ssh", *SSH_OPTIONS, *self.multiplexing(),
                           f"{self.state.user}@{target}", command])

    @property
    def shares(self) -> bool:
        """Commands share one connection per VM: asked for, and the socket's path fits."""
        longest = len(str(self.state.state_dir)) + len("/ssh-") + len("255.255.255.255")
        return self.share_connection and longest <= SOCKET_PATH_MAX

    def multiplexing(self) -> list[str]:
        """ssh options that share one connection per VM (none where it does not: every
        command then logs in)."""
        if not self.shares:
            return ["-o", "ControlMaster=no"]
        return ["-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.state.state_dir}/{CONTROL_SOCKET}",
                "-o", f"ControlPersist={CONTROL_PERSIST}"]

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
        address = self.address(target)
        argv = self.argv(target, command, address)
        try:
            result = run(argv, check=False, env=self.env, timeout=timeout)
        except CommandError as exc:
            self.drop_connection(address)
            raise RemoteError(f"{target.name}: {exc}") from None
        if result.returncode == SSH_FAILED:
            self.drop_connection(address)
        if check and result.returncode != 0:
            why = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
            raise RemoteError(f"{target.name}: `{command}` failed: {why[0]}")
        return result

    def drop_connection(self, address: str) -> None:
        """Stop the shared connection to `address` (`ssh -O exit`): after a command that timed
        out or could not get through, the next one logs in afresh rather than queue behind a
        connection that may be stuck (a VM that rebooted, a session hung while it booted)."""
        if not self.shares:
            return
        net = VirtualNetwork(self.state.netns, self.state.state_dir)
        with contextlib.suppress(CommandError):
            run(net.inside(["ssh", *self.multiplexing(), "-O", "exit",
                            f"{self.state.user}@{address}"]), check=False, timeout=15)

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

    def wait_job(self, job: int, timeout: float = 600) -> str:
        """Wait on the server (`oar-live wait`: one cheap database read every 2 s there, not
        one oarstat per poll) until the job ended; its final state (Terminated, Error)."""
        deadline = time.monotonic() + timeout
        while True:  # a lost connection (ssh's 255) is waited through again, to the deadline
            left = max(1, deadline - time.monotonic())
            result = self.run(f"sudo -n oar-live wait --timeout {left:.0f} {int(job)}",
                              timeout=left + 120, check=False)
            words = result.stdout.split()
            if result.returncode in (0, 1) and words[:1] == [str(job)] and len(words) == 2:
                return words[1]
            if result.returncode != SSH_FAILED or time.monotonic() >= deadline:
                break
            time.sleep(5)
        why = (result.stdout + result.stderr).strip().splitlines()[-1:] or [
            f"exit status {result.returncode}"]
        raise RemoteError(f"job {job} did not end within {timeout:.0f} s ({why[0]})")

    def job_output(self, job: int) -> str:
        """The job's stdout, read on the server: OAR writes it in the folder the job was
        submitted from (the job user's home, shared by every node)."""
        result = self.run(f"cat ~/OAR.{job}.stdout", timeout=60, check=False)
        if result.returncode != 0:
            raise RemoteError(f"no OAR.{job}.stdout in the server's home of {self.state.user}")
        return result.stdout

    def job_errors(self, job: int) -> str:
        """The job's stderr (what a job that went wrong said), '' when there is none."""
        return self.run(f"cat ~/OAR.{job}.stderr", timeout=60, check=False).stdout
