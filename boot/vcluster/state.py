"""What a virtual cluster left on this machine, recorded so `oar-vcluster down` removes all of it.

The state directory holds `state.json` (the network namespace, every VM with its pid, MAC,
address and files, the DHCP server's pid), the serial logs, qemu's sockets and the kernel and
initrd taken from the ISO. Each thing is recorded before it is made, so a launcher that crashed
half-way still leaves a state `down` can clean. A pid alone is not trusted (it may have been
reused): a process is ours when its command line names the state directory, and `down` also
finds our processes that never made it into the file that way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from boot import bounded
from boot.proc import stop_pids

STATE_FILE = "state.json"
MAX_STATE_BYTES = 1024 * 1024  # a 100-VM cluster records ~30 KiB
STOP_GRACE_SECONDS = 5.0  # qemu and dnsmasq exit at once on SIGTERM
LOG_SUFFIX = ".log"  # serial consoles, qemu's and dnsmasq's messages: kept by `down --keep-logs`


def default_state_dir() -> Path:
    """One cluster per user by default; /tmp goes with the reboot that ends its VMs too."""
    return Path(os.environ.get("OAR_VCLUSTER_STATE", f"/tmp/oar-vcluster-{os.getuid()}"))


@dataclass(frozen=True)
class Machine:
    name: str  # "server", "node-1", ...
    role: str  # "server" or "node"
    index: int  # 0 for the server, i for node i
    cpus: int
    memory_mib: int
    mac: str
    address: str
    pid: int | None = None
    firmware: str = "bios"  # or "uefi" (OVMF), "secure-boot" (OVMF enforcing it)

    @property
    def oar_hostname(self) -> str | None:
        """The OAR host name the agent gives this VM (the server keeps its own name)."""
        return None if self.role == "server" else "node-" + self.mac.replace(":", "")


@dataclass(frozen=True)
class ClusterState:
    state_dir: Path
    netns: str
    iso: str = ""
    accel: str = ""
    nbmin: int = 0
    user: str = "user"
    dhcp_pid: int | None = None
    web_port: int = 0  # the host's 127.0.0.1 port forwarded to the server's web port
    forward_pid: int | None = None
    machines: tuple[Machine, ...] = ()
    started: float = field(default_factory=time.time)

    def serial_log(self, machine: Machine) -> Path:
        return self.state_dir / f"{machine.name}.serial.log"  # where qemu.VMSpec puts it

    def machine(self, name: str) -> Machine:
        for m in self.machines:
            if m.name == name or m.oar_hostname == name:
                return m
        known = ", ".join(m.name for m in self.machines)
        raise KeyError(f"no VM named {name!r} in this cluster (VMs: {known})")

    @property
    def server(self) -> Machine:
        return next(m for m in self.machines if m.role == "server")

    @property
    def nodes(self) -> tuple[Machine, ...]:
        return tuple(m for m in self.machines if m.role == "node")

    def with_machine(self, machine: Machine) -> ClusterState:
        others = tuple(m for m in self.machines if m.name != machine.name)
        return replace(self, machines=tuple(sorted((*others, machine), key=lambda m: m.index)))

    def to_json(self) -> dict:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["machines"] = [asdict(m) for m in self.machines]
        return data

    @classmethod
    def from_json(cls, data: dict) -> ClusterState:
        machines = tuple(Machine(**m) for m in data.get("machines", []))
        fields = {k: v for k, v in data.items() if k not in ("machines", "state_dir")}
        return cls(state_dir=Path(data["state_dir"]), machines=machines, **fields)

    def save(self) -> None:
        """Write state.json atomically (a crash leaves the old or the new file, never half)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.state_dir / STATE_FILE)


def _well_typed(record: ClusterState | Machine) -> bool:
    """Whether every field of `record` holds a value of its declared type (int stands for float)."""
    hints = typing.get_type_hints(type(record))
    for item in fields(record):
        hint = hints[item.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(kind) or kind for kind in allowed)
        value = getattr(record, item.name)
        if float in kinds:
            kinds = (*kinds, int)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            return False
    return True


def load(state_dir: Path) -> ClusterState | None:
    """The recorded cluster, or None when there is none or `state.json` is torn or foreign
    (said in one line on stderr): `down` then still finds our processes by their command line."""
    path = state_dir / STATE_FILE
    try:
        data = bounded.load_json(bounded.read_bytes(path, MAX_STATE_BYTES), MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _ignored(path, f"cannot read it ({exc.strerror or exc})")
    except bounded.InputError as exc:
        return _ignored(path, exc.message)
    if not isinstance(data, dict) or not isinstance(data.get("machines", []), list):
        return _ignored(path, "not a cluster state")
    try:
        state = ClusterState.from_json(data)
    except (ValueError, KeyError, TypeError):
        return _ignored(path, "not a cluster state")
    if not all(_well_typed(record) for record in (state, *state.machines)):
        return _ignored(path, "a value of the wrong type")
    return state


def _ignored(path: Path, reason: str) -> None:
    print(f"oar-vcluster: {path}: {reason}; ignored", file=sys.stderr)
    return None


OUR_PROGRAMS = ("qemu-system-x86_64", "dnsmasq")  # what a cluster runs; never a user's shell
# An ssh master of boot.vcluster.remote retitles itself "ssh: SOCKET [mux]".
SSH_MASTER_TITLE = re.compile(r"^ssh: (/\S+) \[mux\]$")
FORWARDER = "boot.vcluster.forward"  # and `python3 -m` this


def _argv(pid: int, proc_root: Path) -> list[str]:
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def is_ours(pid: int | None, state_dir: Path, proc_root: Path = Path("/proc")) -> bool:
    """A live qemu, dnsmasq, ssh master or forwarder whose command line names a file of the
    state directory."""
    if pid is None:
        return False
    argv = _argv(pid, proc_root)
    title = [a for a in argv if a]
    master = SSH_MASTER_TITLE.match(title[0]) if len(title) == 1 else None
    if master:
        return master.group(1).startswith(str(state_dir) + "/")
    if argv[:3] == ["ip", "netns", "exec"]:
        argv = argv[4:]  # started a moment ago: `ip netns exec NS` has not exec'd qemu yet
    if argv[1:3] == ["-m", FORWARDER] and Path(argv[0]).name.startswith("python"):
        pass  # the web port's forwarder (boot.vcluster.forward)
    elif not argv or Path(argv[0]).name not in OUR_PROGRAMS:
        return False
    return any(str(state_dir) + "/" in arg for arg in argv[1:])


def our_processes(state_dir: Path, proc_root: Path = Path("/proc")) -> list[int]:
    """Every qemu and dnsmasq working for the cluster of `state_dir`, recorded or not."""
    found = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit() and is_ours(int(entry.name), state_dir, proc_root):
            found.append(int(entry.name))
    return sorted(found)


def running(state: ClusterState, proc_root: Path = Path("/proc")) -> list[Machine]:
    return [m for m in state.machines if is_ours(m.pid, state.state_dir, proc_root)]


def stop_ours(pids: list[int], state_dir: Path, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, the pids that are still ours."""
    stop_pids(pids, lambda pid: is_ours(pid, state_dir), grace=grace)


def remove_files(state_dir: Path, keep_logs: bool) -> None:
    """Everything of the state directory, or everything but its logs."""
    if not state_dir.exists():
        return
    if not keep_logs:
        shutil.rmtree(state_dir)
        return
    for entry in state_dir.iterdir():
        if entry.name.endswith(LOG_SUFFIX) and entry.is_file():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
