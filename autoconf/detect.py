"""What this machine is, read through a root prefix: CPUs, memory, interfaces, stable hostname.

Everything comes from files under `root` (root/sys, root/proc), so tests feed fake trees. The
one exception is interface addresses: the kernel exposes them through netlink, not files, so on
the real root ("/") they come from netifaces (psutil as a fallback), and in a fake root from
sys/class/net/<if>/test_addresses (one CIDR a line), a file that exists only in fake trees.

The result, `Detection`, is also the registration payload a node posts to the server, hence
`to_json()` / `from_json()`: the one validator of that payload, with the limits below, which
the registry (autoconf.registration) calls. The kernel command line (BOOTIF) comes from the
caller, which read it once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boot.cmdline import cmdline_params
from boot.netif import IFNAME_RE, MAC_RE, Interface, interfaces, normal_mac

CPU_DIR = Path("sys/devices/system/cpu")
MEMINFO = Path("proc/meminfo")
ROUTES = Path("proc/net/route")
PRODUCT_UUID = Path("sys/class/dmi/id/product_uuid")
MACHINE_ID = Path("etc/machine-id")

HOSTNAME_RE = re.compile(r"^node-[0-9a-f]{12}$")
UUID_RE = re.compile(r"^[0-9a-f-]{32,36}$")

# What a detection may hold, checked by Detection.from_json (a registration's payload).
MAX_CPUS = 4096  # logical CPUs of one machine
MAX_CPU_ID = 8191  # the kernel's highest CPU number (NR_CPUS is at most 8192)
MAX_TOPOLOGY_ID = 65535  # socket and core ids
MAX_THREADS_PER_CORE = 64
MAX_MEM_MIB = 64 * 1024 * 1024  # 64 TiB
MAX_INTERFACES = 64
MAX_ADDRESSES = 64
_DETECTION_KEYS = frozenset({
    "hostname", "mac", "product_uuid", "cpus", "mem_mib", "interfaces", "boot_interface",
})  # fmt: skip
_CPU_KEYS = frozenset({"cpu", "socket", "core", "thread"})
_INTERFACE_KEYS = frozenset({"name", "mac", "addresses"})
_BOGUS_UUIDS = {"0" * 32, "f" * 32, "03000200040005000006000700080009"}


class DetectionError(Exception):
    """The machine cannot be described (no CPU, no memory figure): nothing sensible to register."""


@dataclass(frozen=True)
class Cpu:
    cpu: int  # N of /sys/devices/system/cpu/cpuN (online only): what OAR cpusets list
    socket: int  # physical_package_id; -1 when the kernel does not know it
    core: int  # core_id, numbered within the socket (may have gaps)
    thread: int  # index of this logical CPU among its core's hyperthreads (0, 1, ...)


@dataclass(frozen=True)
class Detection:
    hostname: str
    mac: str | None
    product_uuid: str | None
    cpus: tuple[Cpu, ...]
    mem_mib: int
    interfaces: tuple[Interface, ...]
    boot_interface: str | None

    @property
    def sockets(self) -> int:
        return len({c.socket for c in self.cpus})

    @property
    def cores(self) -> int:
        return len({(c.socket, c.core) for c in self.cpus})

    def interface(self, name: str | None) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "mac": self.mac,
            "product_uuid": self.product_uuid,
            "cpus": [
                {"cpu": c.cpu, "socket": c.socket, "core": c.core, "thread": c.thread}
                for c in self.cpus
            ],
            "mem_mib": self.mem_mib,
            "interfaces": [
                {"name": i.name, "mac": i.mac, "addresses": list(i.addresses)}
                for i in self.interfaces
            ],
            "boot_interface": self.boot_interface,
        }

    @classmethod
    def from_json(cls, data: Any) -> Detection:
        """Rebuild a Detection sent by a peer, checking every field against the limits above.

        ValueError names the first field that is wrong (`detection.cpus[3].core: ...`): a
        missing or unknown field, a wrong type, a value out of range, a cpuset id or a place
        of the topology given twice, a boot interface that is not one of the interfaces.
        """
        obj = _fields(data, "detection", _DETECTION_KEYS)
        hostname = _text(obj["hostname"], "detection.hostname")
        if not HOSTNAME_RE.match(hostname):
            raise ValueError(f"detection.hostname must be node-<12 lowercase hex digits>, "
                             f"not {hostname[:80]!r}")
        mac = _optional(obj["mac"], "detection.mac", MAC_RE)
        uuid = _optional(obj["product_uuid"], "detection.product_uuid", UUID_RE)
        mem_mib = _integer(obj["mem_mib"], "detection.mem_mib", 1, MAX_MEM_MIB)
        cpus = _cpus(obj["cpus"])
        interfaces = _interfaces(obj["interfaces"])
        boot = _optional(obj["boot_interface"], "detection.boot_interface", IFNAME_RE)
        if boot is not None and boot not in {i.name for i in interfaces}:
            raise ValueError(f"detection.boot_interface {boot!r} is not one of the interfaces")
        return cls(hostname, mac, uuid, cpus, mem_mib, interfaces, boot)


def _cpus(value: Any) -> tuple[Cpu, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CPUS:
        raise ValueError(f"detection.cpus must be a list of 1 to {MAX_CPUS} processors")
    cpus: list[Cpu] = []
    seen_ids: set[int] = set()
    seen_places: set[tuple[int, int, int]] = set()
    for index, item in enumerate(value):
        where = f"detection.cpus[{index}]"
        raw = _fields(item, where, _CPU_KEYS)
        cpu = Cpu(
            cpu=_integer(raw["cpu"], f"{where}.cpu", 0, MAX_CPU_ID),
            socket=_integer(raw["socket"], f"{where}.socket", -1, MAX_TOPOLOGY_ID),  # -1: none
            core=_integer(raw["core"], f"{where}.core", 0, MAX_TOPOLOGY_ID),
            thread=_integer(raw["thread"], f"{where}.thread", 0, MAX_THREADS_PER_CORE - 1),
        )
        place = (cpu.socket, cpu.core, cpu.thread)
        if cpu.cpu in seen_ids:
            raise ValueError(f"{where}: cpuset id {cpu.cpu} appears twice")
        if place in seen_places:
            raise ValueError(f"{where}: socket {place[0]} core {place[1]} thread {place[2]} "
                             "appears twice")
        seen_ids.add(cpu.cpu)
        seen_places.add(place)
        cpus.append(cpu)
    return tuple(cpus)


def _interfaces(value: Any) -> tuple[Interface, ...]:
    if not isinstance(value, list) or len(value) > MAX_INTERFACES:
        raise ValueError(f"detection.interfaces must be a list of at most {MAX_INTERFACES}")
    found: list[Interface] = []
    for index, item in enumerate(value):
        where = f"detection.interfaces[{index}]"
        raw = _fields(item, where, _INTERFACE_KEYS)
        name = _text(raw["name"], f"{where}.name", IFNAME_RE)
        if any(i.name == name for i in found):
            raise ValueError(f"{where}: interface {name} appears twice")
        mac = _text(raw["mac"], f"{where}.mac", MAC_RE)
        addresses = raw["addresses"]
        if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
            raise ValueError(f"{where}.addresses must be a list of at most {MAX_ADDRESSES}")
        for position, text in enumerate(addresses):
            _text(text, f"{where}.addresses[{position}]")
            try:
                if "/" not in text:
                    raise ValueError
                ipaddress.ip_interface(text)
            except ValueError:
                raise ValueError(f"{where}.addresses[{position}] is not ADDRESS/PREFIX: "
                                 f"{text[:80]!r}") from None
        found.append(Interface(name, mac, tuple(addresses)))
    return tuple(found)


def _fields(value: Any, where: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object")
    missing = keys - value.keys()
    if missing:
        raise ValueError(f"{where}: missing field {sorted(missing)[0]}")
    unknown = value.keys() - keys
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]}")
    return value


def _text(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string")
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"{where} is not valid: {value[:80]!r}")
    return value


def _optional(value: Any, where: str, pattern: re.Pattern[str]) -> str | None:
    return None if value is None else _text(value, where, pattern)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise ValueError(f"{where} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{where} must be between {low} and {high}, not {value}")
    return value


# ---- reading the tree ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's CPU list format ("0-3,5,8-9") as sorted ids; "" gives []."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return sorted(ids)


def online_cpus(root: Path) -> list[int]:
    """Logical CPUs that are online (root/sys/devices/system/cpu/online, else each cpuN/online)."""
    text = _read(root / CPU_DIR / "online")
    if text is not None:
        try:
            return parse_cpu_list(text)
        except ValueError:
            pass
    ids = []
    for entry in (root / CPU_DIR).glob("cpu[0-9]*"):
        if entry.name[3:].isdigit() and _read(entry / "online") in (None, "1"):
            ids.append(int(entry.name[3:]))
    return sorted(ids)


def cpu_topology(root: Path = Path("/")) -> tuple[Cpu, ...]:
    """Online logical CPUs with their socket, core and hyperthread index, by CPU id."""
    cpus = []
    for n in online_cpus(root):
        topo = root / CPU_DIR / f"cpu{n}" / "topology"
        socket = _int_or(_read(topo / "physical_package_id"), -1)
        core = _int_or(_read(topo / "core_id"), n)
        siblings_text = _read(topo / "thread_siblings_list")
        try:
            siblings = parse_cpu_list(siblings_text) if siblings_text else [n]
        except ValueError:
            siblings = [n]
        thread = siblings.index(n) if n in siblings else 0
        cpus.append(Cpu(cpu=n, socket=socket, core=max(core, 0), thread=thread))
    if not cpus:
        raise DetectionError(f"no online CPU found under {root / CPU_DIR}")
    return tuple(cpus)


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def memory_mib(root: Path = Path("/")) -> int:
    """MemTotal in MiB (KiB // 1024, so OAR's GiB figure can be derived exactly)."""
    text = _read(root / MEMINFO) or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    if not match:
        raise DetectionError(f"no MemTotal line in {root / MEMINFO}")
    return int(match.group(1)) // 1024


def default_route_interface(root: Path = Path("/")) -> str | None:
    """The interface of the IPv4 default route with the lowest metric (root/proc/net/route)."""
    best: tuple[int, str] | None = None
    for line in (_read(root / ROUTES) or "").splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or cols[1] != "00000000" or cols[7] != "00000000":
            continue
        try:
            flags, metric = int(cols[3], 16), int(cols[6])
        except ValueError:
            continue
        if flags & 0x1 and (best is None or metric < best[0]):  # RTF_UP
            best = (metric, cols[0])
    return best[1] if best else None


def pxe_boot_mac(cmdline: str) -> str | None:
    """The MAC that PXE booted the machine (BOOTIF=01-aa-bb-cc-dd-ee-ff from pxelinux/iPXE)."""
    value = cmdline_params(cmdline).get("BOOTIF") or ""
    parts = value.lower().replace(":", "-").split("-")
    if len(parts) == 7 and parts[0] == "01":  # 01 = Ethernet hardware type
        parts = parts[1:]
    return normal_mac(":".join(parts)) if len(parts) == 6 else None


def _in_net(iface: Interface, net: str) -> bool:
    if "/" not in net:
        return iface.name == net
    network = ipaddress.ip_network(net, strict=False)
    return any(ipaddress.ip_interface(a).ip in network for a in iface.addresses
               if ipaddress.ip_interface(a).version == network.version)


def boot_interface(found: tuple[Interface, ...], cmdline: str, default_route: str | None,
                   net: str | None = None) -> str | None:
    """PXE's BOOTIF, else the cluster network (`oar.net`), else the default route, else the
    first interface (physical first)."""
    names = {i.name for i in found}
    mac = pxe_boot_mac(cmdline)
    for iface in found:
        if mac is not None and iface.mac == mac:
            return iface.name
    if net:
        for iface in found:
            if _in_net(iface, net):
                return iface.name
    if default_route in names:
        return default_route
    return found[0].name if found else None


def product_uuid(root: Path = Path("/")) -> str | None:
    """DMI product_uuid in lowercase, or None when absent or one of the known placeholders."""
    text = _read(root / PRODUCT_UUID)
    if not text:
        return None
    uuid = text.lower()
    if not UUID_RE.match(uuid) or uuid.replace("-", "") in _BOGUS_UUIDS:
        return None
    return uuid


def stable_hostname(mac: str | None, uuid: str | None, root: Path = Path("/")) -> str:
    """node- + the 12 hex digits of the boot MAC, else of the DMI UUID, else of machine-id.

    The machine-id of a live system is new at every boot: the last resort is not stable, which
    is why the MAC and the DMI UUID come first.
    """
    for key in (mac, uuid, _read(root / MACHINE_ID)):
        digits = re.sub(r"[^0-9a-f]", "", (key or "").lower())
        if len(digits) >= 12:
            return "node-" + digits[:12]
    raise DetectionError("no MAC address, DMI product_uuid or machine-id to name this machine")


def detect(root: Path = Path("/"), net: str | None = None, cmdline: str = "") -> Detection:
    """Describe the machine under `root`; `net` is `oar.net` (interface name or CIDR), `cmdline`
    the kernel command line its caller read (PXE's BOOTIF names the boot interface)."""
    cpus, mem_mib = cpu_topology(root), memory_mib(root)  # nothing to register without them
    found = interfaces(root)
    boot = boot_interface(found, cmdline, default_route_interface(root), net)
    boot_iface = next((i for i in found if i.name == boot), None)
    mac = boot_iface.mac if boot_iface else None
    uuid = product_uuid(root)
    return Detection(
        hostname=stable_hostname(mac, uuid, root),
        mac=mac,
        product_uuid=uuid,
        cpus=cpus,
        mem_mib=mem_mib,
        interfaces=found,
        boot_interface=boot,
    )


def cluster_address(d: Detection, net: str | None) -> str | None:
    """The IPv4 address this machine has on the cluster network (no prefix), or None.

    `net` as a CIDR picks the address inside it; as an interface name, that interface's;
    without it, the boot interface's, then any interface's.
    """
    def ipv4(iface: Interface | None) -> list[ipaddress.IPv4Interface]:
        if iface is None:
            return []
        return [a for a in map(ipaddress.ip_interface, iface.addresses)
                if isinstance(a, ipaddress.IPv4Interface)]

    if net and "/" in net:
        network = ipaddress.ip_network(net, strict=False)
        for iface in d.interfaces:
            for a in ipv4(iface):
                if a.ip in network:
                    return str(a.ip)
        return None
    if net:
        found = ipv4(d.interface(net))
        return str(found[0].ip) if found else None
    for iface in [d.interface(d.boot_interface), *d.interfaces]:
        found = ipv4(iface)
        if found:
            return str(found[0].ip)
    return None
