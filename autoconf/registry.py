"""The registration service: nodes post their detection, the server adds them to OAR once.

HTTP + JSON on port REGISTRY_PORT (6680/tcp) of the server's cluster address:

- `POST /v1/register` `{"token", "detection", "address"}` -> 200 with the node's OAR hostname,
  its resources, whether anything changed, the cluster's oar.conf and /etc/hosts lines;
  401 for a wrong token, 400 `{"error": ...}` for anything malformed (a body over MAX_BODY
  bytes, not UTF-8, not JSON or nested deeper than BODY_DEPTH), 408 when the body takes longer
  than BODY_SECONDS to arrive, 409 for a name held by another machine that still answers or an
  address the server or another node holds (nothing written in any of these cases). A node's
  address is the one it connects from, when that is a host of the cluster network other than
  the server; else (the server itself) the body's.
- `GET /v1/nodes/<hostname>` -> 200 `{"hostname", "state", "resources"}` or 404.
- `GET /v1/hosts` -> the /etc/hosts block naming the server and every registered node, with
  an ETag: 304 and no body when the request's If-None-Match is the block's current tag.
- `GET /v1/accounts` -> the cluster's accounts (autoconf.accounts).
  The GETs need the header `X-OAR-Live-Token`. Any other method gets 405.

Registration is idempotent and serialised: OAR numbers new resources from MAX(resource_id) and
cpu/core ids continue from the maxima in the database, so one lock covers read-compare-write.
A host already in OAR with the same topology is left as it is; a host whose topology changed
has its old resources set Dead, removed, and the new ones added. New resources enter OAR all
together, Absent (not schedulable), in one transaction (autoconf.oaradd), so that no job ever
sees part of a node.

A node becomes Alive only once it passed the check OAR's node checker makes (autoconf.reach:
ssh to oar-node's port 6667 as oar), made outside the lock. A registered node that is not
Alive (new, Absent, or Suspected by OAR) is checked again at each registration: the node's
watcher registers again when it sees itself Suspected or Absent, and the node comes back
without anyone typing `oarnodesetting`, or stays as it is with the reason, which the reply,
the log and `oar-autoconf status` (through CHECKS_FILE) show. The service remembers which
machine (boot MAC, DMI UUID) holds each name from its first registration since the service
started: a node that reboots is the same machine, and after a server reboot every node's first
registration is taken as it comes.

`GET /v1/nodes/<hostname>` (every watcher's poll) answers from one snapshot of the resources
table shared by all polls and read at most every SNAPSHOT_SECONDS: polls cost no database read
of their own, whatever the size of the cluster.
`oar-autoconf serve` runs the service and the discovery beacon in the foreground.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from autoconf import accounts, beacon, etchosts, reach
from autoconf.config import REGISTRY_PORT, ConfigError, read_config
from autoconf.detect import Detection
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.registration import (
    CHECKS_FILE,
    SERVER_STATE,
    BadRequest,
    RegistrySettings,
    ServerState,
    Unauthorized,
    check_token,
    is_oar_live_host,
    validate_registration,
)
from autoconf.resources import Granularity, Resource, image_granularity, plan_resources
from boot import bounded, console
from boot.files import write_if_changed

__all__ = [
    "MAX_BODY",
    "SERVER_STATE",
    "BadRequest",
    "Conflict",
    "Registry",
    "RegistrySettings",
    "ServerState",
    "Unauthorized",
    "check_token",
    "main",
    "make_server",
    "validate_registration",
]

MAX_BODY = 64 * 1024  # a 1024-CPU detection is ~60 KiB of JSON
BODY_DEPTH = 8  # a registration nests 4 levels (body, detection, cpus, one cpu)
BODY_SECONDS = 30  # the whole body must arrive within this: a trickling client is cut off
_DRAIN_LIMIT = 8 * 1024 * 1024  # read and discard up to this much of an oversized body
TOKEN_HEADER = "X-OAR-Live-Token"
HOLDER_PORT = 22  # every OAR Live machine runs sshd: a holder that answers there is still up
HOLDER_TIMEOUT = 2.0  # seconds
GONE_STATES = ("Absent", "Dead")  # a node shut down marks itself Absent: its address is free
SNAPSHOT_SECONDS = 2.0  # how old the resources table the polls are answered from may be


class Conflict(Exception):
    """A registration that claims another machine's name or address (409)."""


def answers_at(address: str, port: int = HOLDER_PORT, timeout: float = HOLDER_TIMEOUT) -> bool:
    """Is a machine at `address`? A TCP connection accepted or refused says so."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Holder:
    """The machine that registered a name: its boot MAC and DMI UUID."""

    mac: str | None
    product_uuid: str | None

    def differs(self, other: Holder) -> bool:
        return any(mine is not None and theirs is not None and mine != theirs
                   for mine, theirs in ((self.mac, other.mac),
                                        (self.product_uuid, other.product_uuid)))

    def __str__(self) -> str:
        return f"MAC {self.mac}" if self.mac else f"DMI UUID {self.product_uuid}"


def connection_address(peer: str, claimed: str, settings: RegistrySettings) -> str:
    """The node's address: the one it connects from when that is a cluster host other than
    the server (where the server itself, a solo machine, connects from), else the claimed one."""
    try:
        address = ipaddress.IPv4Address(peer)
    except ValueError:
        return claimed
    if address not in settings.network or str(address) == settings.server.address:
        return claimed
    return str(address)


# ----------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class Check:
    """The last reachability check of a node: when, and why it failed (None: it passed)."""

    at: float  # time.time()
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 1), "ok": self.problem is None, "problem": self.problem}


@dataclass
class Registry:
    """Registers nodes into OAR; safe to call from many threads."""

    settings: RegistrySettings
    oar: Oar = field(default_factory=Oar)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Callable[[str], bool] = answers_at  # is a machine at this address?
    holders: dict[str, Holder] = field(default_factory=dict)  # host -> who registered it
    accounts_root: Path = Path("/")  # whose /etc/passwd lists the cluster's accounts
    # host, address -> None when OAR can use the node, else why not (autoconf.reach)
    check: Callable[[str, str], str | None] | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    # called when a node's name or address enters the hosts block, before the node is checked
    # and made Alive: the beacon tells every node at once (autoconf.beacon)
    hosts_changed: Callable[[], None] = lambda: None
    reads: int = 0  # full reads of the resources table (the snapshot's)
    _snapshot: tuple[float, dict[str, list[OarResource]]] | None = None
    _snapshot_lock: threading.Lock = field(default_factory=threading.Lock)
    _hosts_cache: tuple[tuple[int, int] | None, str, str] | None = None
    _checks_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.check is None:
            self.check = reach.Checker(self.settings.oar_conf).check

    def register(self, detection: Detection, host: str, address: str) -> dict[str, Any]:
        """Make OAR hold exactly `detection`'s resources under `host`; the reply for the node.

        Conflict, with nothing written, when the name or the address belongs to another machine.
        The node is made Alive only when it passes the check; the reply says its state.
        """
        with self.lock:
            mine, top = self.oar.host_view(host)
            holder = Holder(detection.mac, detection.product_uuid)
            entries = self._entries()
            self._check_claims(host, address, holder, entries)
            self.holders[host] = holder
            kept = _unchanged(detection, host, mine, self.settings.granularity)
            if kept is not None:
                resources, changed = kept, False
                waiting = any(_needs_alive(r) for r in mine)
            else:
                if mine:
                    self._retire(host, mine)
                resources = plan_resources(detection, host, cpu_base=top["cpu"],
                                           core_base=top["core"], thread_base=top["thread"],
                                           granularity=self.settings.granularity)
                self.oar.add_node(host, resources, "Absent")
                changed, waiting = True, True
            hosts, new_entry = self._remember(host, address, entries)
        if new_entry:
            self.hosts_changed()
        state, problem = self._admit(host, address, mine, waiting)
        _log(
            f"{host} ({address}): {len(resources)} resources, "
            f"{'added' if changed else 'unchanged'}, {state}"
            + (f" ({problem})" if problem else "")
        )
        return {
            "hostname": host,
            "resources": [asdict(r) for r in resources],
            "changed": changed,
            "state": state,
            "problem": problem,
            "oar_conf": self.settings.oar_conf.read_text(),
            "hosts": hosts,
            "server_hostname": self.settings.server.hostname,
        }

    def _admit(self, host: str, address: str, before: list[OarResource],
               waiting: bool) -> tuple[str, str | None]:
        """Check a node that is not Alive and make it Alive when it passes; (state, problem).

        The state is the one asked of oar-server ("Alive") or the one the node keeps.
        """
        if not waiting:
            return "Alive", None
        assert self.check is not None
        problem = self.check(host, address)
        self._record(host, problem)
        if problem is None:
            self.oar.set_state(host, "Alive")
            was = "/".join(sorted({r.state for r in before})) or "new"
            if before and was != "Alive":
                _log(f"{host}: was {was}, answers on oar-node's port as oar: set Alive")
            return "Alive", None
        states = sorted({r.state for r in before}) or ["Absent"]
        return "/".join(states), problem

    def _record(self, host: str, problem: str | None) -> None:
        """Remember the check and write every node's last check for `oar-autoconf status`."""
        with self._checks_lock:
            self.checks[host] = Check(time.time(), problem)
            if self.settings.checks_file is None:
                return
            text = json.dumps({h: c.to_json() for h, c in sorted(self.checks.items())},
                              indent=1) + "\n"
            write_if_changed(self.settings.checks_file, text)

    def _retire(self, host: str, resources: list[OarResource]) -> None:
        """Set the host's resources Dead (oar-server applies it) and remove them."""
        if any(r.state != "Dead" for r in resources):
            self.oar.change_state(host, "Dead", timeout=self.settings.state_timeout)
        for resource in resources:
            self.oar.remove(resource.resource_id)
        _log(f"{host}: topology changed, {len(resources)} old resources removed")

    def _entries(self) -> dict[str, str]:
        try:
            return etchosts.parse_block(self.settings.hosts_file.read_text())
        except FileNotFoundError:
            return {}

    def _check_claims(self, host: str, address: str, holder: Holder,
                      entries: dict[str, str]) -> None:
        """Conflict when `host` is another machine's that still answers, or `address` is the
        server's or another node's that is not Absent or Dead."""
        server = self.settings.server
        known = self.holders.get(host)
        if known is not None and known.differs(holder):
            held_at = entries.get(host)
            if held_at and self.answers(held_at):
                raise Conflict(f"{host} is registered by another machine ({known}, at {held_at}) "
                               f"that still answers; this one has {holder}")
        if host == server.hostname:
            return
        if address == server.address:
            raise Conflict(f"address {address} is the server's ({server.hostname})")
        for other, other_address in entries.items():
            if other_address != address or other in (host, server.hostname):
                continue
            states = {r.state for r in self.oar.host_resources(other)}
            last = self.checks.get(other)
            # Absent after a failed check is a node that has not come up yet, not one gone
            if states and (not states <= set(GONE_STATES) or (
                    "Dead" not in states and last is not None and last.problem is not None
                    and self.answers(address))):
                raise Conflict(f"address {address} is held by {other}, registered and "
                               f"{'/'.join(sorted(states))}")

    def _remember(self, host: str, address: str, entries: dict[str, str]) -> tuple[str, bool]:
        """Record host -> address in the server's /etc/hosts (dropping a gone node that held
        the address); the block's text, and whether the file changed."""
        server = self.settings.server
        entries = {name: at for name, at in entries.items() if at != address or name == host}
        entries[server.hostname] = server.address
        entries[host] = address
        changed = etchosts.write_block(entries, self.settings.hosts_file)
        return etchosts.render_block(entries), changed

    def hosts(self) -> str:
        """The /etc/hosts block of the cluster: the server and every registered node."""
        return self.hosts_block()[0]

    def hosts_block(self) -> tuple[str, str]:
        """The hosts block and its tag (an HTTP ETag), rendered again only when the hosts file
        changed: every watcher asks for it at each poll, and it rarely changes."""
        try:
            stat = self.settings.hosts_file.stat()
            key: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        with self._snapshot_lock:
            if key is not None and self._hosts_cache is not None and self._hosts_cache[0] == key:
                return self._hosts_cache[1], self._hosts_cache[2]
        entries = self._entries()
        entries[self.settings.server.hostname] = self.settings.server.address
        text = etchosts.render_block(entries)
        tag = '"' + hashlib.sha256(text.encode()).hexdigest()[:20] + '"'
        with self._snapshot_lock:
            self._hosts_cache = (key, text, tag) if key is not None else None
        return text, tag

    def snapshot(self) -> dict[str, list[OarResource]]:
        """host -> resources, from one read of the table shared by every caller within
        SNAPSHOT_SECONDS (one caller reads while the others wait for its answer)."""
        with self._snapshot_lock:
            now = self.clock()
            if self._snapshot is None or now - self._snapshot[0] >= SNAPSHOT_SECONDS:
                by_host: dict[str, list[OarResource]] = {}
                for r in self.oar.resources():
                    by_host.setdefault(r.host, []).append(r)
                self.reads += 1
                self._snapshot = (self.clock(), by_host)
            return self._snapshot[1]

    def node(self, host: str) -> dict[str, Any] | None:
        """What OAR has for `host` (at most SNAPSHOT_SECONDS old), or None when it has nothing.

        `problem`: why its last check failed, when it did.
        """
        mine = self.snapshot().get(host)
        if not mine:
            return None
        states = sorted({r.state for r in mine})
        last = self.checks.get(host)
        return {
            "hostname": host,
            "state": states[0] if len(states) == 1 else "Mixed",
            "states": {str(r.resource_id): r.state for r in mine},
            "resources": [_as_dict(r) for r in mine],
            "problem": last.problem if last else None,
        }


def _unchanged(detection: Detection, host: str, mine: list[OarResource],
               granularity: Granularity) -> list[Resource] | None:
    """The planned resources when OAR already holds exactly them for `host`, else None."""
    if not mine:
        return None
    def lowest(name: str) -> int:
        values = [getattr(r, name) for r in mine if getattr(r, name) is not None]
        return min(values) - 1 if values else 0

    planned = plan_resources(
        detection, host, cpu_base=lowest("cpu"), core_base=lowest("core"),
        thread_base=lowest("thread"), granularity=granularity,
    )  # fmt: skip
    wanted = sorted(tuple(r.properties()) for r in planned)
    names = [[name for name, _value in r.properties()] for r in planned]
    have = sorted(
        tuple((name, row.value(name)) for name in names[0]) for row in mine
    ) if names else []  # fmt: skip
    return planned if wanted == have else None


def _needs_alive(r: OarResource) -> bool:
    """Not Alive, or leaving it, and not already on its way to Alive (asked, not applied)."""
    return r.next_state != "Alive" and (r.state != "Alive" or r.next_state != "UnChanged")


def _as_dict(r: OarResource) -> dict[str, Any]:
    return {
        "resource_id": r.resource_id, "host": r.host, "cpu": r.cpu, "core": r.core,
        "thread": r.thread, "cpuset": r.cpuset, "mem": r.mem, "state": r.state,
    }  # fmt: skip


def _log(message: str) -> None:
    print(console.info(message, "registry"), file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds a client may take per read: slow clients cannot pin threads

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per registration is logged by Registry; errors below

    def _reply(self, status: HTTPStatus, payload: Any, content_type: str = "application/json",
               headers: tuple[tuple[str, str], ...] = ()):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers only
            self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._reply(status, {"error": message})

    def _authorised(self) -> bool:
        given = self.headers.get(TOKEN_HEADER, "")
        token = self.server.registry.settings.token
        if token and hmac.compare_digest(given.encode(errors="replace"), token.encode()):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "wrong or missing cluster token")
        return False

    def _body(self) -> bytes | None:
        """The request body, or None after replying 400 (missing length, too large, short) or
        408 (slower than BODY_SECONDS)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "chunked bodies are not accepted")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "a Content-Length header is required")
            return None
        oversized = length < 0 or length > MAX_BODY
        try:
            # An oversized body is read and discarded (up to _DRAIN_LIMIT) so that the client
            # finishes sending and reads our answer.
            chunks = self._receive(min(max(length, 0), _DRAIN_LIMIT) if oversized else length,
                                   time.monotonic() + BODY_SECONDS, keep=not oversized)
        except TimeoutError:
            self.close_connection = True
            _log(f"refused a registration from {self.client_address[0]}: "
                 f"the body took longer than {BODY_SECONDS} s")
            self._error(HTTPStatus.REQUEST_TIMEOUT,
                        f"the body did not arrive within {BODY_SECONDS} s")
            return None
        if oversized:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, f"body larger than {MAX_BODY} bytes")
            return None
        body = b"".join(chunks)
        if len(body) < length:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
            return None
        return body

    def _receive(self, length: int, deadline: float, keep: bool) -> list[bytes]:
        """Up to `length` bytes (fewer if the client stops), kept or discarded; TimeoutError
        when they have not all come by `deadline`."""
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                if keep:
                    chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            self.connection.settimeout(self.timeout)
        return chunks

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/v1/register":
            self.close_connection = True
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path[:80]}")
            return
        raw = self._body()
        if raw is None:
            return
        registry = self.server.registry
        try:
            body = bounded.load_json(raw, MAX_BODY, BODY_DEPTH)
        except bounded.InputError as exc:
            _log(f"refused a registration from {self.client_address[0]}: body {exc.message}")
            self._error(HTTPStatus.BAD_REQUEST, f"the body is refused: {exc.message}")
            return
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return
        try:
            check_token(body, registry.settings.token)
        except Unauthorized:
            _log(f"refused a registration from {self.client_address[0]}: wrong token")
            self._error(HTTPStatus.UNAUTHORIZED, "wrong or missing cluster token")
            return
        try:
            detection, host, address = validate_registration(body, registry.settings)
        except BadRequest as exc:
            _log(f"refused a registration from {self.client_address[0]}: {exc}")
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        address = connection_address(self.client_address[0], address, registry.settings)
        try:
            reply = registry.register(detection, host, address)
        except Conflict as exc:
            _log(f"refused the registration of {host} from {self.client_address[0]}: {exc}")
            self._error(HTTPStatus.CONFLICT, str(exc))
            return
        except (OarError, OSError) as exc:
            _log(f"registration of {host} failed: {exc}")
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"the server could not register: {exc}")
            return
        self._reply(HTTPStatus.OK, reply)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._authorised():
            return
        registry = self.server.registry
        try:
            if self.path == "/v1/hosts":
                text, tag = registry.hosts_block()
                if self.headers.get("If-None-Match") == tag:  # the watcher has it already
                    self._reply(HTTPStatus.NOT_MODIFIED, b"", headers=(("ETag", tag),))
                    return
                self._reply(HTTPStatus.OK, text.encode(), "text/plain; charset=utf-8",
                            headers=(("ETag", tag),))
                return
            if self.path == accounts.ACCOUNTS_PATH:
                self._reply(HTTPStatus.OK, accounts.listing(registry.accounts_root))
                return
            if self.path.startswith("/v1/nodes/"):
                host = self.path.removeprefix("/v1/nodes/")
                if not is_oar_live_host(host, registry.settings):
                    self._error(HTTPStatus.BAD_REQUEST, "not an OAR Live host name")
                    return
                answer = registry.node(host)
                if answer is None:
                    self._error(HTTPStatus.NOT_FOUND, f"{host} is not registered")
                else:
                    self._reply(HTTPStatus.OK, answer)
                return
        except (OarError, OSError) as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
            return
        self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {self.path[:80]}")


    def _not_allowed(self) -> None:
        self.close_connection = True
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED,
                    {"error": f"method {self.command[:20]} not allowed"},
                    headers=(("Allow", "GET, POST"),))

    def __getattr__(self, name: str) -> Any:
        """Every method but GET and POST (http.server looks up do_<METHOD>): 405, not 501."""
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a room of machines switched on at once connects together

    def __init__(self, address: tuple[str, int], registry: Registry) -> None:
        self.registry = registry
        super().__init__(address, _Handler)


def make_server(registry: Registry, host: str, port: int = REGISTRY_PORT) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for `registry`; port 0 picks a free port."""
    return _Server((host, port), registry)


# ----------------------------------------------------------------------------- entry point


def hosts_tag(registry: Registry) -> str:
    """The tag of the hosts block as the beacon carries it (the ETag, unquoted)."""
    return registry.hosts_block()[1].strip('"')


def _start_beacon(state: ServerState, port: int, token: str,
                  registry: Registry) -> beacon.BeaconSender | None:
    """Announce the registry and its hosts block on the cluster network (autoconf.beacon)."""
    network = ipaddress.IPv4Network(state.network, strict=False)
    if network.is_loopback:
        return None  # a one-machine cluster without network: nobody to tell
    sender = beacon.BeaconSender(
        f"{state.address}:{port}",
        beacon.cluster_id(token),
        beacon.broadcast_address(f"{state.address}/{network.prefixlen}"),
        hosts_tag=lambda: hosts_tag(registry),
    )
    registry.hosts_changed = sender.kick
    return sender.start()


def main(argv: list[str] | None = None) -> int:
    """`oar-autoconf serve`: run the registration service and the beacon until stopped."""
    parser = argparse.ArgumentParser(prog="oar-autoconf serve", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=REGISTRY_PORT)
    parser.add_argument("--no-beacon", action="store_true", help="do not broadcast the beacon")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.root)
        state = ServerState.read(args.root)
        granularity = image_granularity(args.root)
    except (ConfigError, ValueError) as exc:
        print(f"oar-autoconf serve: {exc}", file=sys.stderr)
        return 1
    if not config.token:
        print(
            "oar-autoconf serve: no cluster token (the image's /etc/oar-live/config.yaml "
            "or oar.token= sets it); refusing to accept registrations",
            file=sys.stderr,
        )
        return 1
    settings = RegistrySettings(
        token=config.token,
        server=state,
        oar_conf=args.root / "etc/oar/oar.conf",
        hosts_file=args.root / etchosts.HOSTS,
        checks_file=args.root / CHECKS_FILE,
        granularity=granularity,
    )
    registry = Registry(settings, Oar(settings.oar_conf), accounts_root=args.root)
    try:
        server = make_server(registry, state.address, args.port)
    except OSError as exc:
        print(
            f"oar-autoconf serve: cannot listen on {state.address}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    beacon_sender = None if args.no_beacon else _start_beacon(
        state, args.port, config.token, registry)
    _log(f"listening on {state.address}:{args.port} for the cluster network {state.network}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if beacon_sender is not None:
            beacon_sender.stop()
    return 0
