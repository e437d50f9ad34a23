"""Fake nodes for the registration tests and benchmark: detections, requests, a loopback service."""

from __future__ import annotations

import http.client
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from autoconf.registry import Registry, make_server


def new_hostname() -> str:
    """A fresh node name, as detection derives it from a MAC address."""
    return "node-" + secrets.token_hex(6)


def detection_json(
    hostname: str,
    address: str,
    sockets: int = 1,
    cores: int = 2,
    threads: int = 1,
    mem_mib: int = 4096,
    interleaved: bool = False,
) -> dict[str, Any]:
    """A node's Detection.to_json(): `sockets` x `cores` x `threads` online CPUs.

    `interleaved` numbers logical CPUs round-robin across sockets (cpu0 on socket 0, cpu1 on
    socket 1, ...), as many dual-socket servers do; otherwise socket by socket.
    """
    cpus = []
    total = sockets * cores * threads
    for n in range(total):
        if interleaved:
            socket, rest = n % sockets, n // sockets
        else:
            socket, rest = n // (cores * threads), n % (cores * threads)
        cpus.append({"cpu": n, "socket": socket, "core": rest % cores, "thread": rest // cores})
    mac = ":".join(hostname[5 + i : 7 + i] for i in range(0, 12, 2))
    return {
        "hostname": hostname,
        "mac": mac,
        "product_uuid": None,
        "cpus": cpus,
        "mem_mib": mem_mib,
        "interfaces": [{"name": "eth0", "mac": mac, "addresses": [f"{address}/8"]}],
        "boot_interface": "eth0",
    }


def registration(token: str, hostname: str, address: str, **topology: Any) -> dict[str, Any]:
    """The body a node posts to /v1/register."""
    return {
        "token": token,
        "detection": detection_json(hostname, address, **topology),
        "address": address,
    }


def post(port: int, body: bytes | dict, path: str = "/v1/register",
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST to the service on 127.0.0.1:port; (status, decoded JSON or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body=data, headers={
            "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def get(port: int, path: str, token: str | None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"X-OAR-Live-Token": token} if token is not None else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(raw)
    return response.status, raw.decode()


@contextmanager
def serving(registry: Registry) -> Iterator[int]:
    """Run the registration service on 127.0.0.1 (a free port) in a thread; yields the port."""
    server = make_server(registry, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="registry", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
