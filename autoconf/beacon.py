"""Discovery beacon: the server announces its registration service on the cluster network.

The server broadcasts one small JSON datagram every two seconds to UDP port BEACON_PORT on the
cluster network's broadcast address:

    {"service": "oar-live", "registry": "10.0.0.1:6680", "cluster": sha256(token)[:16],
     "hosts": "<tag of the cluster's /etc/hosts block>"}

A node that knows no server listens for it. The `cluster` field lets several OAR Live clusters
share one network: a node only follows a beacon whose cluster id matches its own token, and it
never learns the token itself from the wire. Anything else on the port is ignored.

A node that has its server listens too, for `hosts`: the tag of the hosts block (the registry's
ETag of GET /v1/hosts). The server sends a beacon at once when a node's name enters the block
(`BeaconSender.kick`), before it checks that node and makes it Alive, so every node fetches the
new block within a second instead of at its next poll: a job that starts on the new node and an
older one finds both names. The tag only says that the block changed; the block itself comes
over the authenticated registration service.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoconf.config import BEACON_PORT
from boot import bounded, console

__all__ = [
    "BEACON_INTERVAL",
    "BeaconSender",
    "broadcast_address",
    "cluster_id",
    "listen",
    "Beacon",
    "make_payload",
    "open_listener",
    "parse_beacon",
    "parse_payload",
]

SERVICE = "oar-live"
BEACON_INTERVAL = 2.0
KICK_SPACING = 0.5  # kicks in a burst (a room of machines registering) share one datagram
MAX_DATAGRAM = 2048
_TAG = re.compile(r"[0-9a-f]{8,64}")


def cluster_id(token: str) -> str:
    """The public name of a cluster: the first 16 hex digits of sha256(token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def broadcast_address(cidr: str) -> str:
    """The broadcast address of the network an interface address like "10.0.0.1/24" is on."""
    return str(ipaddress.ip_interface(cidr).network.broadcast_address)


@dataclass(frozen=True)
class Beacon:
    """What a beacon of our cluster says: its registry "IP:PORT", the hosts block's tag."""

    registry: str
    hosts: str | None = None


def make_payload(registry: str, cluster: str, hosts: str | None = None) -> bytes:
    """The datagram announcing `registry` ("IP:PORT") for the cluster named `cluster`, with the
    tag of its hosts block when given."""
    message = {"service": SERVICE, "registry": registry, "cluster": cluster}
    if hosts is not None:
        message["hosts"] = hosts
    return json.dumps(message, sort_keys=True).encode()


def _valid_registry(value: object) -> str | None:
    """`value` if it is "IPv4:PORT" with a usable unicast address and port, else None."""
    if not isinstance(value, str) or value.count(":") != 1:
        return None
    host, _, port = value.partition(":")
    try:
        address = ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast or not 0 < number < 65536:
        return None
    if str(address) != host or str(number) != port:
        return None
    return value


def parse_beacon(data: bytes, cluster: str) -> Beacon | None:
    """What a datagram announces for `cluster`, or None for anything else (a hosts tag that is
    not one is dropped, the registry kept)."""
    try:
        message = bounded.load_json(data, MAX_DATAGRAM, max_depth=1)
    except bounded.InputError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("service") != SERVICE or message.get("cluster") != cluster:
        return None
    registry = _valid_registry(message.get("registry"))
    if registry is None:
        return None
    hosts = message.get("hosts")
    return Beacon(registry, hosts if isinstance(hosts, str) and _TAG.fullmatch(hosts) else None)


def parse_payload(data: bytes, cluster: str) -> str | None:
    """The registry address a datagram announces for `cluster`, or None for anything else."""
    found = parse_beacon(data, cluster)
    return found.registry if found else None


def open_listener(bind: str = "0.0.0.0", port: int = BEACON_PORT) -> socket.socket:
    """A UDP socket that receives the beacons (several listeners may share the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock


def listen(
    cluster_id: str,
    timeout: float,
    bind: str = "0.0.0.0",
    port: int = BEACON_PORT,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Wait up to `timeout` seconds for a beacon of our cluster; its registry "IP:PORT" or None."""
    deadline = clock() + timeout
    with open_listener(bind, port) as sock:
        while (remaining := deadline - clock()) > 0:
            sock.settimeout(remaining)
            try:
                data, _sender = sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                return None
            registry = parse_payload(data, cluster_id)
            if registry is not None:
                return registry
    return None


class BeaconSender:
    """Broadcasts the beacon every `interval` seconds from a daemon thread until stopped.

    `destination` is the cluster network's broadcast address (see `broadcast_address`);
    tests use 127.0.0.1. A send that fails (network not up yet) is reported once and retried
    at the next tick, so the server keeps announcing itself once the network is there.
    `hosts_tag` gives the hosts block's tag at each send; `kick()` sends one at once (kicks
    closer than KICK_SPACING apart share the next datagram).
    """

    def __init__(
        self,
        registry: str,
        cluster: str,
        destination: str,
        port: int = BEACON_PORT,
        interval: float = BEACON_INTERVAL,
        hosts_tag: Callable[[], str | None] | None = None,
    ) -> None:
        if _valid_registry(registry) is None:
            raise ValueError(f"beacon: {registry!r} is not an IPv4:PORT registry address")
        self.registry = registry
        self.cluster = cluster
        self.hosts_tag = hosts_tag
        self.destination = (destination, port)
        self.interval = interval
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.sent = 0
        self._thread: threading.Thread | None = None

    @property
    def payload(self) -> bytes:
        tag = None
        if self.hosts_tag is not None:
            try:
                tag = self.hosts_tag()
            except OSError:
                tag = None  # the hosts file cannot be read now: announce the registry alone
        return make_payload(self.registry, self.cluster, tag)

    def kick(self) -> None:
        """Send a beacon now (what it announces changed) rather than at the next tick."""
        self.wake.set()

    def start(self) -> BeaconSender:
        """Start broadcasting in the background; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="oar-live-beacon", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop broadcasting and wait for the thread to end."""
        self.stop_event.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> BeaconSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        failing = False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            while not self.stop_event.is_set():
                try:
                    sock.sendto(self.payload, self.destination)
                    self.sent += 1
                    failing = False
                except OSError as exc:
                    if not failing:
                        print(
                            console.warning(f"beacon to {self.destination[0]}:"
                                            f"{self.destination[1]} failed "
                                            f"({exc.strerror or exc}); retrying"),
                            file=sys.stderr,
                            flush=True,
                        )
                    failing = True
                self.wake.wait(self.interval)
                if self.wake.is_set() and not self.stop_event.is_set():
                    self.stop_event.wait(KICK_SPACING)  # a burst of kicks: one datagram
                self.wake.clear()
