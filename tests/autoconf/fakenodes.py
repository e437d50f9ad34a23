"""Fake nodes for the registration tests and benchmark: detections, requests, a loopback service."""

from __future__ import annotations

import fcntl
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from autoconf import server
from autoconf.oarstate import Oar
from autoconf.registry import Registry, make_server
from boot import proc

LOOPBACK_SERVER = server.ServerHost("localhost", ipaddress.IPv4Interface("127.0.0.1/8"))
HOST_DEBS = "postgresql oar-server oar-server-pgsql oar-user oar-user-pgsql oar-node libjson-perl"
LOCK_FILE = "/run/lock/oar-live-test-oar-server.lock"
_NEEDED = ("psql", "pg_isready", "oar-database", "oarnodesetting", "oarnodes", "oarproperty",
           "oarremoveresource", "runuser")


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
         headers: dict[str, str] | None = None, source: str | None = None,
         method: str = "POST", timeout: float = 120) -> tuple[int, Any]:
    """POST to the service on 127.0.0.1:port, from the address `source` (a loopback address;
    default 127.0.0.1); (status, decoded JSON or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                            source_address=(source, 0) if source else None)
    try:
        connection.request(method, path, body=data, headers={
            "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def get(port: int, path: str, token: str | None, timeout: float = 60) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
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


@contextmanager
def oar_node_sshd(address: str, deadline: float = 10.0) -> Iterator[None]:
    """oar-node's own sshd (/etc/oar/sshd_config, port 6667) listening on `address` only (a
    loopback address): what the server's check reaches a simulated node at."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    argv = ["/usr/sbin/sshd", "-D", "-f", "/etc/oar/sshd_config", "-o",
            f"ListenAddress={address}:6667", "-o", "PidFile=none"]
    with proc.spawn(argv, stderr=subprocess.DEVNULL):
        give_up = time.monotonic() + deadline
        while True:
            try:
                socket.create_connection((address, 6667), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > give_up:
                    raise HostNotReady(
                        f"oar-node's sshd did not listen on {address}:6667") from None
                time.sleep(0.1)
        yield


class HostNotReady(Exception):
    """This machine cannot run a real OAR server (not root, packages missing)."""


@contextmanager
def loopback_oar_server() -> Iterator[Oar]:
    """A real OAR server on this machine, on loopback, with a fresh database; yields an Oar.

    Uses the server role's own steps (PostgreSQL settings, oar.conf and secrets, database,
    oar-server, properties), so it writes the host's /etc/oar/oar.conf, /etc/oar-live/secrets.yaml
    and PostgreSQL settings: for throw-away test machines. The OAR database is dropped and
    created again (the passwords then always match the secrets file). PostgreSQL and oar-server
    are stopped at the end when they were not running before. Two test sessions on one machine
    take turns (a lock file): a second set-up would drop the first one's database.
    """
    missing = [tool for tool in _NEEDED if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        raise HostNotReady(
            f"a real OAR server needs root and the Debian packages {HOST_DEBS} "
            f"(missing: {', '.join(missing) or 'root'}); `make host-test-deps` installs them"
        )
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        with _set_up_oar() as oar:
            yield oar


@contextmanager
def _set_up_oar() -> Iterator[Oar]:
    postgres_was_running = server.service("postgresql", "status")
    oar_was_running = server.oar_server_running()
    if oar_was_running:
        stop_oar_server()  # it holds connections to the database we drop
    try:
        server.ensure_postgresql(LOOPBACK_SERVER)
        server.ensure_oar_conf(LOOPBACK_SERVER)
        for sql in ("DROP DATABASE IF EXISTS oar", "DROP ROLE IF EXISTS oar",
                    "DROP ROLE IF EXISTS oar_ro"):
            proc.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", sql], timeout=60)
        if not server.ensure_database():
            raise HostNotReady("the OAR database was dropped yet `oar-database --check` passes")
        server.ensure_oar_server()
        server.ensure_properties()
        yield Oar(Path("/etc/oar/oar.conf"))
    finally:
        if not oar_was_running:
            stop_oar_server()
        if not postgres_was_running:
            server.service("postgresql", "stop")


def stop_oar_server() -> None:
    """Stop oar-server. Without systemd Debian's init script leaves Almighty running (it
    removes its pid file and kills nothing), so the processes it left are ended by their ids."""
    server.service("oar-server", "stop")
    if server.oar_server_running():
        found = proc.run(["pgrep", "-x", "-u", "oar", "Almighty"], check=False).stdout.split()
        for pid in found:
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while server.oar_server_running() and time.monotonic() < deadline:
            time.sleep(0.2)
