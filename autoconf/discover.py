"""Find the OAR Live server a node registers with: oar.server, DHCP next-server, beacon, prompt.

The sources, in order:
1. `oar.server` from the effective configuration (kernel command line, boot medium YAML).
2. The DHCP "next-server" (siaddr) of this boot: the server that PXE-booted the machine runs the
   DHCP service and names itself there. Read through a root prefix from what the DHCP clients of
   Debian bookworm write:
   - the initramfs (`ipconfig` of klibc, run by live-boot for a network boot):
     /run/net-IFACE.conf, shell assignments `ROOTSERVER='10.0.0.1'` (siaddr), `IPV4ADDR=...`;
   - systemd-networkd: /run/systemd/netif/leases/IFINDEX, `NEXT_SERVER=10.0.0.1`;
   - ISC dhclient (ifupdown): /var/lib/dhcp/dhclient*.leases, `next-server 10.0.0.1;`.
   A DHCP server is not always ours (a site DHCP, qemu's user network), so a next-server is only
   taken when its registration port answers.
3. The discovery beacon (see beacon.py).
4. A timed question on the console (autoconf.prompt, imported only when needed).
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from autoconf import beacon, prompt
from autoconf.config import REGISTRY_PORT, Config
from boot import console

__all__ = [
    "Server",
    "Source",
    "dhcp_next_servers",
    "find_server",
    "parse_server",
    "registry_answers",
]

BEACON_MIN_WAIT = 6.0  # three beacon periods: a server that is up is heard in this time


class Source(StrEnum):
    CONFIG = "oar.server"
    DHCP = "DHCP next-server"
    BEACON = "beacon"
    PROMPT = "prompt"


@dataclass(frozen=True)
class Server:
    """Where the registration service is, and how we learnt it."""

    host: str
    port: int
    source: Source
    origin: str = ""  # the file or datagram it came from, for the console message

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        where = f" ({self.origin})" if self.origin else ""
        return f"{self.address} from {self.source}{where}"


def parse_server(text: str, default_port: int = REGISTRY_PORT) -> tuple[str, int]:
    """Split "IP" or "IP:PORT" into (IP, port); ValueError with a readable message otherwise."""
    host, sep, port_text = text.strip().partition(":")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address (IP or IP:PORT)") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r} is not a usable server address")
    port = default_port
    if sep:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return str(address), port


def _usable(value: str) -> str | None:
    """An IPv4 unicast address from a lease value, or None (0.0.0.0 means 'none')."""
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        return None
    return str(address)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _initramfs_next_servers(root: Path) -> Iterator[tuple[str, str]]:
    """ROOTSERVER of klibc ipconfig's /run/net-*.conf (values are shell-quoted)."""
    for path in sorted((root / "run").glob("net-*.conf")):
        values: dict[str, str] = {}
        for line in _read(path).splitlines():
            key, sep, raw = line.partition("=")
            if not sep or not key.strip().isidentifier():
                continue
            try:
                words = shlex.split(raw)
            except ValueError:
                continue
            values[key.strip()] = words[0] if words else ""
        if _usable(values.get("IPV4ADDR", "")) is None:
            continue  # this interface got no address: its siaddr means nothing
        server = _usable(values.get("ROOTSERVER", ""))
        if server:
            yield server, f"/run/{path.name}"


def _networkd_next_servers(root: Path) -> Iterator[tuple[str, str]]:
    """NEXT_SERVER of systemd-networkd's lease files (KEY=value lines)."""
    leases = root / "run/systemd/netif/leases"
    for path in sorted(leases.glob("*")):
        for line in _read(path).splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "NEXT_SERVER" and (server := _usable(value)):
                yield server, f"/run/systemd/netif/leases/{path.name}"


def _dhclient_next_servers(root: Path) -> Iterator[tuple[str, str]]:
    """`next-server` of ISC dhclient's leases, newest lease (last in the file) first."""
    for path in sorted((root / "var/lib/dhcp").glob("dhclient*.leases")):
        found: list[str] = []
        for line in _read(path).splitlines():
            words = line.strip().rstrip(";").split()
            if len(words) == 2 and words[0] == "next-server" and (server := _usable(words[1])):
                found.append(server)
        for server in reversed(found):
            yield server, f"/var/lib/dhcp/{path.name}"


def dhcp_next_servers(root: Path = Path("/")) -> list[tuple[str, str]]:
    """Every DHCP next-server this boot's leases name, as (address, file), duplicates removed."""
    seen: dict[str, str] = {}
    for reader in (_initramfs_next_servers, _networkd_next_servers, _dhclient_next_servers):
        for server, origin in reader(root):
            seen.setdefault(server, origin)
    return list(seen.items())


def registry_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _say(message: str) -> None:
    print(console.info(message), flush=True)


def _refusal(answer: str) -> str | None:
    """Why a typed server address is refused, or None (empty means: no server)."""
    if not answer:
        return None
    try:
        parse_server(answer)
    except ValueError as exc:
        return str(exc)
    return None


def _ask(config: Config) -> Server | None:
    answer = prompt.ask(
        "OAR server address",
        "",
        validate=_refusal,
        hint="IP or IP:PORT; empty: none",
        timeout=config.timeout,
    )
    if not answer.value:
        return None
    host, port = parse_server(answer.value)
    return Server(host, port, Source.PROMPT)


def find_server(
    config: Config,
    root: Path = Path("/"),
    *,
    beacon_timeout: float | None = None,
    ask: bool = True,
    port: int = REGISTRY_PORT,
    beacon_port: int = beacon.BEACON_PORT,
    beacon_bind: str = "0.0.0.0",
    probe: Callable[[str, int], bool] = registry_answers,
) -> Server | None:
    """The first source that names a server, or None when none does (and the prompt timed out).

    `beacon_timeout` defaults to the prompt timeout, at least three beacon periods. `ask=False`
    skips the console question (the background watcher has no console).
    """
    endpoint = config.server_endpoint()
    if endpoint is not None:
        return Server(endpoint[0], endpoint[1], Source.CONFIG, config.source("server"))

    for host, origin in dhcp_next_servers(root):
        if probe(host, port):
            return Server(host, port, Source.DHCP, origin)
        _say(f"DHCP next-server {host} ({origin}) does not answer on port {port}; not ours")

    wait = beacon_timeout if beacon_timeout is not None else max(config.timeout, BEACON_MIN_WAIT)
    if wait > 0:
        _say(f"listening for an OAR Live server's beacon on UDP port {beacon_port} ({wait:g} s)")
        try:
            registry = beacon.listen(
                beacon.cluster_id(config.token), wait, bind=beacon_bind, port=beacon_port
            )
        except OSError as exc:
            _say(f"cannot listen for the beacon: {exc.strerror or exc}")
            registry = None
        if registry:
            host, server_port = parse_server(registry)
            return Server(host, server_port, Source.BEACON, "UDP broadcast")

    if ask and config.timeout > 0:
        return _ask(config)
    return None
