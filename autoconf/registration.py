"""What a registration request must be: the registry's settings, the token, every field checked.

A request is refused before anything is written: 401 unless it carries the cluster token
(compared in constant time), 400 when any field is missing, of the wrong type, out of range or
inconsistent (a cpuset id given twice, two CPUs in the same place of the topology, an address
outside the cluster network). The detection part is checked by `Detection.from_json`
(autoconf.detect holds the limits); this module checks the request around it.
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
from autoconf.detect import HOSTNAME_RE, Detection
from autoconf.resources import Granularity

__all__ = [
    "CHECKS_FILE",
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
CHECKS_FILE = Path("run/oar-live/checks.json")  # each node's last check, by autoconf.registry

_REQUEST_KEYS = {"token", "detection", "address"}


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
    checks_file: Path | None = None  # where the last check of each node is written
    granularity: Granularity = Granularity.CPU  # what one resource is (the image's OAR)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.server.network, strict=False)



def is_oar_live_host(name: str, settings: RegistrySettings) -> bool:
    """A node name (node-<12 hex digits>) or the server's own name."""
    return bool(HOSTNAME_RE.match(name)) or name == settings.server.hostname


def _fail(message: str) -> BadRequest:
    return BadRequest(message)


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
    """(Detection, OAR hostname, address) of a well-formed registration, else BadRequest.

    The detection is checked by `Detection.from_json`, the one validator of that payload.
    """
    _keys(body, "request", _REQUEST_KEYS)
    try:
        detection = Detection.from_json(body["detection"])
    except ValueError as exc:
        raise _fail(str(exc)) from None

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

    server = settings.server
    name = detection.hostname
    if server.detection_hostname and name == server.detection_hostname:
        name = server.hostname  # solo: the server registers itself under its own name
    return detection, name, str(address)
