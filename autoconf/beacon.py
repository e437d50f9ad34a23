"""Discovery beacon: the server announces its registration service on the cluster network.

The server broadcasts one small JSON datagram every two seconds to UDP port BEACON_PORT on the
cluster network's broadcast address:

    {"service": "oar-live", "registry": "10.0.0.1:6680", "cluster": sha256(token)[:16]}

A node that knows no server listens for it. The `cluster` field lets several OAR Live clusters
share one network: a node only follows a beacon whose cluster id matches its own token, and it
never learns the token itself from the wire. Anything else on the port is ignored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable

from autoconf.config import BEACON_PORT
from boot import bounded, console

__all__ = [
    "BEACON_INTERVAL",
    "BeaconSender",
    "broadcast_address",
    "cluster_id",
    "listen",
    "make_payload",
    "parse_payload",
]

SERVICE = "oar-live"
BEACON_INTERVAL = 2.0
MAX_DATAGRAM = 2048


def cluster_id(token: str) -> str:
    """The public name of a cluster: the first 16 hex digits of sha256(token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def broadcast_address(cidr: str) -> str:
    """The broadcast address of the network an interface address like "10.0.0.1/24" is on."""
    return str(ipaddress.ip_interface(cidr).network.broadcast_address)


def make_payload(registry: str, cluster: str) -> bytes:
    """The datagram announcing `registry` ("IP:PORT") for the cluster named `cluster`."""
    return json.dumps(
        {"service": SERVICE, "registry": registry, "cluster": cluster}, sort_keys=True
    ).encode()


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


def parse_payload(data: bytes, cluster: str) -> str | None:
    """The registry address a datagram announces for `cluster`, or None for anything else."""
    try:
        message = bounded.load_json(data, MAX_DATAGRAM, max_depth=1)
    except bounded.InputError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("service") != SERVICE or message.get("cluster") != cluster:
        return None
    return _valid_registry(message.get("registry"))


def listen(
    cluster_id: str,
    timeout: float,
    bind: str = "0.0.0.0",
    port: int = BEACON_PORT,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Wait up to `timeout` seconds for a beacon of our cluster; its registry "IP:PORT" or None."""
    deadline = clock() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
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
    """

    def __init__(
        self,
        registry: str,
        cluster: str,
        destination: str,
        port: int = BEACON_PORT,
        interval: float = BEACON_INTERVAL,
    ) -> None:
        if _valid_registry(registry) is None:
            raise ValueError(f"beacon: {registry!r} is not an IPv4:PORT registry address")
        self.payload = make_payload(registry, cluster)
        self.destination = (destination, port)
        self.interval = interval
        self.stop_event = threading.Event()
        self.sent = 0
        self._thread: threading.Thread | None = None

    def start(self) -> BeaconSender:
        """Start broadcasting in the background; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="oar-live-beacon", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop broadcasting and wait for the thread to end."""
        self.stop_event.set()
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
                self.stop_event.wait(self.interval)
