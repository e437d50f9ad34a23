"""What a registration request must be: the registry's settings, the token, every field checked.

A request is refused before anything is written: 401 unless it carries the cluster token
(compared in constant time), 400 when any field is missing, of the wrong type, out of range or
inconsistent (a cpuset id given twice, two CPUs in the same place of the topology, an address
outside the cluster network). The detection is then rebuilt with autoconf.detect's own checks.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoconf.config import ConfigError
from autoconf.detect import Detection

__all__ = [
    "SERVER_STATE",
    "BadRequest",
    "RegistrySettings",
    "ServerState",
    "Unauthorized",
    "check_token",
    "is_oar_live_host",
    "validate_registration",
]

SERVER_STATE = Path("run/oar-live/server.json")  # written by autoconf.server

MAX_CPUS = 4096
MAX_CPU_ID = 65535
MAX_TOPOLOGY_ID = 65535
MAX_THREADS_PER_CORE = 64
MAX_MEM_MIB = 64 * 1024 * 1024  # 64 TiB
MAX_INTERFACES = 64
MAX_ADDRESSES = 64

_NODE_NAME = re.compile(r"^node-[0-9a-f]{12}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_UUID = re.compile(r"^[0-9A-Fa-f-]{1,64}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$")
_REQUEST_KEYS = {"token", "detection", "address"}
_DETECTION_KEYS = {
    "hostname", "mac", "product_uuid", "cpus", "mem_mib", "interfaces", "boot_interface",
}  # fmt: skip
_CPU_KEYS = {"cpu", "socket", "core", "thread"}
_INTERFACE_KEYS = {"name", "mac", "addresses"}


class BadRequest(ValueError):
    """A registration request that is malformed; the message says which field and why."""


class Unauthorized(Exception):
    """A request without the cluster's token."""


@dataclass(frozen=True)
class ServerState:
    """What the server role decided, for the registry: written to /run/oar-live/server.json."""

    hostname: str  # the server's OAR/host name
    address: str  # its IPv4 address on the cluster network
    network: str  # the cluster network, CIDR
    detection_hostname: str | None = None  # the name detection gave this machine (solo)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, root: Path = Path("/")) -> ServerState:
        path = root / SERVER_STATE
        try:
            data = json.loads(path.read_text())
            return cls(
                hostname=str(data["hostname"]),
                address=str(ipaddress.IPv4Address(data["address"])),
                network=str(ipaddress.IPv4Network(data["network"], strict=False)),
                detection_hostname=data.get("detection_hostname"),
            )
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist: has the server role run?") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is unusable: {exc}") from None


@dataclass(frozen=True)
class RegistrySettings:
    token: str
    server: ServerState
    oar_conf: Path = Path("/etc/oar/oar.conf")
    hosts_file: Path = Path("/etc/hosts")
    state_timeout: float = 60.0  # how long oar-server may take to apply a state change

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.server.network, strict=False)



def is_oar_live_host(name: str, settings: RegistrySettings) -> bool:
    """A node name (node-<12 hex digits>) or the server's own name."""
    return bool(_NODE_NAME.match(name)) or name == settings.server.hostname


def _fail(message: str) -> BadRequest:
    return BadRequest(message)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise _fail(f"{name} must be an integer")
    if not low <= value <= high:
        raise _fail(f"{name} must be between {low} and {high}, not {value}")
    return value


def _str(value: Any, name: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be a string")
    if pattern is not None and not pattern.match(value):
        raise _fail(f"{name} is not valid: {value[:80]!r}")
    return value


def _keys(value: Any, name: str, required: set[str], optional: Iterable[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{name} must be a JSON object")
    missing = required - value.keys()
    if missing:
        raise _fail(f"{name}: missing field {sorted(missing)[0]}")
    unknown = value.keys() - required - set(optional)
    if unknown:
        raise _fail(f"{name}: unknown field {sorted(unknown)[0]}")
    return value


def check_token(body: Any, token: str) -> None:
    """Raise Unauthorized unless the body carries the cluster token (constant-time compare)."""
    given = body.get("token") if isinstance(body, dict) else None
    if not isinstance(given, str) or not token:
        raise Unauthorized
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized


def validate_registration(body: Any, settings: RegistrySettings) -> tuple[Detection, str, str]:
    """(Detection, OAR hostname, address) of a well-formed registration, else BadRequest."""
    _keys(body, "request", _REQUEST_KEYS)
    raw = _keys(body["detection"], "detection", _DETECTION_KEYS)
    server = settings.server
    hostname = _str(raw["hostname"], "detection.hostname")
    if not (_NODE_NAME.match(hostname) or hostname == server.hostname):
        raise _fail(f"detection.hostname must be node-<12 hex digits>, not {hostname[:80]!r}")
    if raw["mac"] is not None:
        _str(raw["mac"], "detection.mac", _MAC)
    if raw["product_uuid"] is not None:
        _str(raw["product_uuid"], "detection.product_uuid", _UUID)
    _int(raw["mem_mib"], "detection.mem_mib", 1, MAX_MEM_MIB)
    _validate_cpus(raw["cpus"])
    names = _validate_interfaces(raw["interfaces"])
    if raw["boot_interface"] is not None:
        boot = _str(raw["boot_interface"], "detection.boot_interface", _IFNAME)
        if boot not in names:
            raise _fail(f"detection.boot_interface {boot!r} is not one of the interfaces")

    address_text = _str(body["address"], "address")
    try:
        address = ipaddress.IPv4Address(address_text)
    except ValueError:
        raise _fail(f"address must be an IPv4 address, not {address_text[:80]!r}") from None
    network = settings.network
    if address not in network or (
        network.prefixlen < 31 and address in (network.network_address, network.broadcast_address)
    ):
        raise _fail(f"address {address} is not a host of the cluster network {network}")

    try:
        detection = Detection.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(f"detection: {exc}") from None
    name = hostname
    if server.detection_hostname and hostname == server.detection_hostname:
        name = server.hostname  # solo: the server registers itself under its own name
    return detection, name, str(address)


def _validate_cpus(cpus: Any) -> None:
    if not isinstance(cpus, list) or not 1 <= len(cpus) <= MAX_CPUS:
        raise _fail(f"detection.cpus must be a list of 1 to {MAX_CPUS} processors")
    seen_ids: set[int] = set()
    seen_places: set[tuple[int, int, int]] = set()
    for index, item in enumerate(cpus):
        where = f"detection.cpus[{index}]"
        cpu = _keys(item, where, _CPU_KEYS)
        number = _int(cpu["cpu"], f"{where}.cpu", 0, MAX_CPU_ID)
        place = (
            _int(cpu["socket"], f"{where}.socket", -1, MAX_TOPOLOGY_ID),  # -1: no socket id
            _int(cpu["core"], f"{where}.core", 0, MAX_TOPOLOGY_ID),
            _int(cpu["thread"], f"{where}.thread", 0, MAX_THREADS_PER_CORE - 1),
        )
        if number in seen_ids:
            raise _fail(f"{where}: cpuset id {number} appears twice")
        if place in seen_places:
            raise _fail(
                f"{where}: socket {place[0]} core {place[1]} thread {place[2]} appears twice"
            )
        seen_ids.add(number)
        seen_places.add(place)


def _validate_interfaces(interfaces: Any) -> set[str]:
    if not isinstance(interfaces, list) or len(interfaces) > MAX_INTERFACES:
        raise _fail(f"detection.interfaces must be a list of at most {MAX_INTERFACES}")
    names: set[str] = set()
    for index, item in enumerate(interfaces):
        where = f"detection.interfaces[{index}]"
        interface = _keys(item, where, _INTERFACE_KEYS)
        name = _str(interface["name"], f"{where}.name", _IFNAME)
        if name in names:
            raise _fail(f"{where}: interface {name} appears twice")
        names.add(name)
        if interface["mac"] is not None:
            _str(interface["mac"], f"{where}.mac", _MAC)
        addresses = interface["addresses"]
        if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
            raise _fail(f"{where}.addresses must be a list of at most {MAX_ADDRESSES}")
        for position, text in enumerate(addresses):
            _str(text, f"{where}.addresses[{position}]")
            try:
                ipaddress.ip_interface(text)
            except ValueError:
                raise _fail(
                    f"{where}.addresses[{position}] is not an address: {text[:80]!r}"
                ) from None
    return names
