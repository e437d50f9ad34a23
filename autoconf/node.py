"""Node role: join the OAR Live cluster, and keep this machine registered while it runs.

`handle()` runs once at boot (from the agent, on the console): find the server, mount its
shared home and take its accounts (autoconf.nfs, autoconf.node_accounts), make sure oar-node's
sshd has a host key and start oar-node, register this machine's detection meanwhile,
take the hostname the server gives, install the server's oar.conf and /etc/hosts entries, check
the server shows the node Alive, and start the watcher unit (oar-live-node.service). With no
server yet, the watcher does the registering later (autoconf.outcome.Pending).

The server makes the node Alive only once it answers on oar-node's port (autoconf.reach): a
node whose first registration came before oar-node was up registers again once it is.

`watch_main()` is that watcher (`oar-autoconf node-watch`): it polls the server; when the server
has forgotten the node (it rebooted: its database lives in RAM) it registers again; when OAR
shows the node Suspected (OAR's checker could not reach it) or Absent (its check at
registration failed, or the watcher restarted after marking it Absent) it registers again so
that the server checks it again and revives it, backing off while the check keeps failing;
it keeps /etc/hosts, the shared home and the cluster's accounts in step with the
server, and between polls it listens to the server's beacon, which announces at once a node
that registered: /etc/hosts names it before the server makes it Alive (autoconf.beacon); on
SIGTERM (shutdown) it marks the node Absent
in OAR (and, stopped, no longer revives it).

Every file is written through a root prefix and every command goes through boot.proc.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autoconf import beacon, discover, etchosts, nfs, node_accounts, oarconf, timing
from autoconf.client import Registration, RegistryClient, RegistryError, Unreachable
from autoconf.config import BEACON_PORT, REGISTRY_PORT, Config, ConfigError, Role, read_config
from autoconf.detect import Detection, cluster_address
from autoconf.outcome import Pending
from boot import console, proc
from boot.files import write_if_changed

__all__ = ["NodeError", "handle", "watch_main"]

STATE_FILE = Path("run/oar-live/node.json")
OAR_CONF = Path("etc/oar/oar.conf")
HOSTNAME = Path("etc/hostname")
OAR_SSH_HOST_KEY = Path("etc/oar/oar_ssh_host_rsa_key")
SYSTEM_SSH_HOST_KEY = Path("etc/ssh/ssh_host_rsa_key")
WATCH_UNIT = "oar-live-node.service"

REGISTER_DEADLINE = 120.0  # at boot; after that the watcher keeps trying in the background
ALIVE_DEADLINE = 60.0
# Each poll costs the server a psql process (0.8 s of CPU under emulation): polling faster
# slows down oar-server's own state change, the thing waited for (measured: 4.5 s vs 2 s).
ALIVE_POLL = 2.0
WATCH_INTERVAL = 15.0
ABSENT_TIMEOUT = 20.0  # oarnodesetting at shutdown; with a poll in flight (WATCH_TIMEOUT) it fits
# in the unit's TimeoutStopSec (45 s)
RECHECK_MAX = 120.0  # the longest wait between two checks of a node that keeps failing them
# The watcher's polls: the server answers from its database, but a busy emulated server can
# take several seconds; giving up sooner would leave a node unregistered after a server reboot.
WATCH_TIMEOUT = 20.0
# Between two fetches of /etc/hosts that beacons ask for: the first change after a quiet spell
# is fetched at once, the changes of a storm of registrations every few seconds, not at every
# beacon (at 1,000 nodes: 200 fetches a second at most, and the block only when it changed).
HOSTS_FETCH_SPACING = 5.0


class NodeError(Exception):
    """This machine cannot join the cluster; the message is one sentence for the console."""


def say(line: str) -> None:
    print(line, flush=True)


def register(
    client: RegistryClient,
    detection: Detection,
    address: str,
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Registration:
    """Register, retrying with backoff while the server is unreachable or failing (5xx).

    A refused token (401), a rejected request (400) or a name or address another machine holds
    (409) is final: retrying cannot help.
    """
    give_up = clock() + deadline
    delay = 1.0
    while True:
        try:
            return client.register(detection, address)
        except RegistryError as exc:
            if exc.status == 401:
                raise NodeError(
                    f"the server at {client.base_url} refused this machine's cluster token: "
                    "boot every machine of the cluster from the same image build"
                ) from None
            if exc.status == 200:  # a server of another version or a bug: retrying won't help
                raise NodeError(f"the server at {client.base_url} sent {exc.message}") from None
            if exc.status == 400:
                raise NodeError(f"the server at {client.base_url} rejected the registration: "
                                f"{exc}") from None
            if exc.status == 409:
                raise NodeError(f"the server at {client.base_url} refused the registration: "
                                f"{exc.message}") from None
            problem = str(exc)
        except Unreachable as exc:
            problem = f"no answer ({exc})"
        left = give_up - clock()
        if left <= 0:
            raise Pending(f"the server at {client.base_url} did not take the registration "
                          f"within {deadline:g} s ({problem}): oar-live-node keeps trying")
        wait = min(delay, left)
        say(console.info(f"registration: {problem}; retrying in {wait:.0f} s"))
        sleep(wait)
        delay = min(delay * 2, 15.0)


# ---- applying what the server said (check, then act) ---------------------------------------


def running_hostname() -> str:
    return socket.gethostname()


def set_hostname(name: str, root: Path) -> bool:
    """/etc/hostname and the running hostname become `name`."""
    changed = write_if_changed(root / HOSTNAME, name + "\n")
    if running_hostname() != name:
        proc.run(["hostname", name])
        changed = True
    return changed


def install_oar_conf(text: str, root: Path) -> bool:
    """The server's oar.conf (the same for every machine) becomes this machine's.

    It holds the database passwords: it gets Debian's mode 0600, owned by user oar (OAR's
    setuid tools read it as oar), whatever it had before.
    """
    try:
        return oarconf.write_oar_conf(text if text.endswith("\n") else text + "\n", root)
    except oarconf.OarConfError as exc:
        raise NodeError(str(exc)) from None


def hosts_entries(text: str) -> dict[str, str]:
    """hostname -> address from the server's /etc/hosts text (markers and comments skipped)."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        for name in words[1:]:
            entries[name] = words[0]
    return entries


def update_hosts(text: str, root: Path) -> bool:
    """Make the managed block of /etc/hosts hold the server's entries (the rest is kept)."""
    try:
        return etchosts.write_block(hosts_entries(text), root / etchosts.HOSTS)
    except ValueError as exc:
        raise NodeError(f"the server sent an unusable /etc/hosts entry: {exc}") from None


def ensure_oar_ssh_host_key(root: Path) -> bool:
    """oar-node's sshd needs /etc/oar/oar_ssh_host_rsa_key: the system's key, else a new one."""
    key = root / OAR_SSH_HOST_KEY
    if key.exists():
        return False
    system = root / SYSTEM_SSH_HOST_KEY
    key.parent.mkdir(parents=True, exist_ok=True)
    if system.exists():
        write_if_changed(key, system.read_text(), 0o600)
        public = system.with_name(system.name + ".pub")
        if public.exists():
            write_if_changed(key.with_name(key.name + ".pub"), public.read_text(), 0o644)
    else:
        proc.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "oar-node",
                  "-f", str(key)])
    return True


def local_address_towards(host: str, port: int) -> str:
    """This machine's source address for packets to host (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        return sock.getsockname()[0]


def node_address(config: Config, detection: Detection, server: discover.Server) -> str:
    """The address the server reaches this node at: on oar.net when given, else the route's."""
    if config.net and (address := cluster_address(detection, config.net)):
        return address.split("/")[0]
    try:
        return local_address_towards(server.host, server.port)
    except OSError as exc:
        raise NodeError(f"no route to the server {server.address}: {exc.strerror or exc}") from None


def apply_registration(registration: Registration, root: Path) -> list[str]:
    """Hostname, oar.conf, /etc/hosts; the names of what changed."""
    changed = []
    if set_hostname(registration.hostname, root):
        changed.append("hostname")
    if install_oar_conf(registration.oar_conf, root):
        changed.append("oar.conf")
    if update_hosts(registration.hosts, root):
        changed.append("/etc/hosts")
    return changed


def needs_check(answer: Mapping[str, Any], absent: bool = True) -> bool:
    """Does the server's view of a node show resources Suspected (or, with `absent`, Absent)?"""
    states = answer.get("states")
    values = {answer.get("state"), *(states.values() if isinstance(states, dict) else ())}
    return "Suspected" in values or (absent and "Absent" in values)


def share_home_and_accounts(config: Config, server: discover.Server, client: RegistryClient,
                            root: Path, deadline: float = 0.0, poll: bool = False) -> list[str]:
    """/home from the server (autoconf.nfs; NfsError when it cannot be mounted) and the
    server's accounts (autoconf.node_accounts); the lines to report. Solo: nothing to share."""
    if config.role is Role.SOLO:
        return []
    if poll:
        mounted = nfs.check_home(server.host, root)
    else:
        mounted = nfs.mount_home(server.host, root, deadline=deadline)
    lines = [f"mounted the shared home {server.host}:/ on /home"] if mounted else []
    try:
        lines += node_accounts.sync(client.accounts(), root)
    except (RegistryError, Unreachable) as exc:
        lines.append(f"the server's accounts are not taken yet: {exc}")
    return lines


def wait_alive(client: RegistryClient, hostname: str, deadline: float,
               again: Callable[[], Registration] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll the server until it shows `hostname` Alive; the last state seen.

    While it shows the node Absent or Suspected, `again` (a registration) has the server
    check it again, at most every few polls.
    """
    give_up = time.monotonic() + deadline
    state = "unknown"
    next_check = 0.0
    while True:
        try:
            answer = client.node(hostname)
            state = str(answer.get("state", "unknown")) if answer is not None else "not registered"
            if (answer is not None and again is not None and needs_check(answer)
                    and time.monotonic() >= next_check):
                next_check = time.monotonic() + 3 * ALIVE_POLL
                registration = again()
                if not registration.alive:
                    state = f"{registration.state} ({registration.problem})"
        except (RegistryError, Unreachable) as exc:
            state = f"unknown ({exc})"
        if state == "Alive" or time.monotonic() >= give_up:
            return state
        sleep(ALIVE_POLL)


# ---- state shared by handle() and the watcher ----------------------------------------------


def write_state(root: Path, server: discover.Server | None, detection: Detection,
                hostname: str | None) -> None:
    state = {
        "server": server.address if server else None,
        "hostname": hostname,
        "detection": detection.to_json(),
    }
    write_if_changed(root / STATE_FILE, json.dumps(state, indent=2) + "\n")


def read_state(root: Path) -> dict[str, Any]:
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise NodeError(f"no node state in {root / STATE_FILE} ({exc}): "
                        "the boot agent did not run the node role") from None
    if not isinstance(state, dict) or not isinstance(state.get("detection"), dict):
        raise NodeError(f"{root / STATE_FILE} is not a node state file")
    return state


def handle(
    config: Config,
    detection: Detection,
    root: Path = Path("/"),
    *,
    deadline: float = REGISTER_DEADLINE,
    alive_deadline: float = ALIVE_DEADLINE,
    find: Callable[..., discover.Server | None] = discover.find_server,
) -> str:
    """Join the cluster; returns this machine's hostname.

    NodeError when it cannot; Pending when the server is not there (yet) and the watcher,
    started here, will register the machine when it answers.
    """
    with timing.step("find server"):
        server = find(config, root)
    write_state(root, server, detection, None)
    if server is None:
        proc.run(["systemctl", "start", "--no-block", WATCH_UNIT], check=False)
        raise Pending("no OAR Live server answered yet (no oar.server, DHCP next-server or "
                      "beacon): oar-live-node keeps looking meanwhile and registers this "
                      "machine when one answers (or boot with oar.server=IP)")
    say(console.info(f"OAR server: {server.describe()}"))
    client = RegistryClient(server.url, config.token)
    # Jobs write into /home and run as the cluster's accounts: both come before oar-node.
    try:
        with timing.step("shared home"):
            for line in share_home_and_accounts(config, server, client, root, nfs.MOUNT_DEADLINE):
                say(console.info(line))
    except nfs.NfsError as exc:
        proc.run(["systemctl", "start", "--no-block", WATCH_UNIT], check=False)
        raise Pending(f"{exc}: oar-live-node mounts it, then registers this machine") from None
    # oar-node (its own sshd, which the server uses to reach jobs) needs nothing from the
    # registration: it starts while the server registers this machine.
    new_key = ensure_oar_ssh_host_key(root)
    proc.run(["systemctl", "restart" if new_key else "start", "--no-block", "oar-node"])
    address = node_address(config, detection, server)
    say(console.info(f"registering {detection.hostname} ({address}) with {server.address}"))
    try:
        with timing.step("register"):
            registration = register(client, detection, address, deadline)
    except (NodeError, Pending):
        proc.run(["systemctl", "start", "--no-block", WATCH_UNIT], check=False)
        raise
    say(console.registered(registration.hostname, detail=(
        f"with {registration.resources} resources "
        f"({'new or changed' if registration.changed else 'unchanged'}); "
        f"server {registration.server_hostname}")))
    with timing.step("configure"):
        write_state(root, server, detection, registration.hostname)
        changed = apply_registration(registration, root)
        if new_key:
            changed.append("oar-node host key")
    say(console.info("configured: " + (", ".join(changed) if changed else "nothing to change")))
    with timing.step("oar-node"):
        proc.run(["systemctl", "start", "oar-node"])  # returns once the start above is done
    if not registration.alive:
        say(console.info(f"the server did not make {registration.hostname} Alive yet "
                         f"({registration.problem}): asking it to check again"))
    with timing.step("Alive"):
        state = wait_alive(client, registration.hostname, alive_deadline,
                           again=lambda: client.register(detection, address))
    if state == "Alive":
        say(console.alive(registration.hostname))
    else:
        say(console.warning(f"OAR shows {registration.hostname} as {state}, not Alive (yet)"))
    proc.run(["systemctl", "start", "--no-block", WATCH_UNIT], check=False)
    return registration.hostname


# ---- the watcher ---------------------------------------------------------------------------


class Watcher:
    """One poll at a time: keep the node registered and /etc/hosts current."""

    def __init__(self, config: Config, root: Path, state: Mapping[str, Any],
                 port: int = REGISTRY_PORT, beacon_port: int = BEACON_PORT,
                 interval: float = WATCH_INTERVAL):
        self.config = config
        self.interval = interval
        self.root = root
        self.detection = Detection.from_json(state["detection"])
        self.hostname: str | None = state.get("hostname")
        self.port = port
        self.beacon_port = beacon_port
        self.server: discover.Server | None = None
        if state.get("server"):
            host, server_port = discover.parse_server(state["server"], port)
            self.server = discover.Server(host, server_port, discover.Source.CONFIG, "node state")
        self.first = True
        self.last_problem = ""
        self.check_delay = interval  # between two checks asked of the server, doubling on failure
        self.next_check = 0.0
        self.clock: Callable[[], float] = time.monotonic
        self.hosts_tag: str | None = None  # the server's tag of the hosts block last applied
        self.last_shared: list[str] = []  # shown once, not at every poll
        self.next_hosts_fetch = 0.0  # clock() before which no beacon makes it fetch /etc/hosts
        self.hosts_wanted: str | None = None  # a tag a beacon announced, not fetched yet

    def _client(self) -> RegistryClient:
        assert self.server is not None
        return RegistryClient(self.server.url, self.config.token, timeout=WATCH_TIMEOUT)

    def _report(self, problem: str) -> None:
        if problem and problem != self.last_problem:  # one line per change, not one per poll
            say(console.info(problem))
        self.last_problem = problem

    def _register(self, client: RegistryClient) -> Registration:
        assert self.server is not None
        again = bool(self.hostname)
        self._share(client)  # /home before oar-node starts
        address = node_address(self.config, self.detection, self.server)
        if not again:
            # A node that booted before its server: oar-node was not started at boot, and the
            # server checks that it answers before making the node Alive: start it first.
            new_key = ensure_oar_ssh_host_key(self.root)
            proc.run(["systemctl", "restart" if new_key else "start", "oar-node"], check=False)
        registration = client.register(self.detection, address)
        self.hostname = registration.hostname
        write_state(self.root, self.server, self.detection, self.hostname)
        changed = apply_registration(registration, self.root)
        # /etc/hosts is now the block the registration carried, not the one last fetched: a
        # server that rebooted may come back to that very block (same tag) once every node
        # registered again, and a poll with the old tag would keep this one forever.
        self.hosts_tag = None
        if changed:
            proc.run(["systemctl", "start", "oar-node"], check=False)
            if not registration.alive and not again:  # checked before its settings were in
                registration = client.register(self.detection, address)  # place: once more
        say(console.registered(registration.hostname, again=again))
        return registration

    def _recheck(self, client: RegistryClient, known: Mapping[str, Any]) -> None:
        """The node is Absent or Suspected while it runs: have the server check it again."""
        if not self.first and self.clock() < self.next_check:
            return
        say(console.info(f"{self.hostname} is {known.get('state')} in OAR: asking the server "
                         "to check it again"))
        registration = self._register(client)
        if registration.alive:
            self.check_delay = self.interval
            say(console.info(f"{registration.hostname}: the server found it usable and set it "
                             "Alive again"))
        else:
            say(console.warning(f"{registration.hostname} stays {registration.state}: "
                                f"{registration.problem}; next check in "
                                f"{self.check_delay:.0f} s"))
            self.next_check = self.clock() + self.check_delay
            self.check_delay = min(2 * self.check_delay, RECHECK_MAX)

    def _share(self, client: RegistryClient) -> None:
        assert self.server is not None
        lines = share_home_and_accounts(self.config, self.server, client, self.root, poll=True)
        for line in lines:
            if line not in self.last_shared:
                say(console.info(line))
        self.last_shared = lines

    def _hosts(self, client: RegistryClient) -> None:
        text, tag = client.hosts(self.hosts_tag)
        if text is not None:
            if update_hosts(text, self.root):
                say(console.info("updated /etc/hosts from the server"))
            self.hosts_tag = tag

    def heard(self, data: bytes) -> bool:
        """A datagram on the beacon port: when it is our server's beacon announcing a hosts
        block other than the one applied, fetch the block now, or once HOSTS_FETCH_SPACING has
        passed since the last fetch. True when it fetched."""
        if self.server is None:
            return False
        found = beacon.parse_beacon(data, beacon.cluster_id(self.config.token))
        if found is None or found.hosts is None or found.registry != self.server.address:
            return False
        applied = self.hosts_tag.strip('"') if self.hosts_tag is not None else None
        self.hosts_wanted = found.hosts if found.hosts != applied else None
        return self.follow_hosts()

    def follow_hosts(self) -> bool:
        """Fetch the hosts block a beacon announced, unless one was fetched less than
        HOSTS_FETCH_SPACING ago (a storm of registrations costs the server one fetch per node
        per spacing, whatever the number of beacons). True when it fetched."""
        if self.hosts_wanted is None or self.clock() < self.next_hosts_fetch:
            return False
        assert self.server is not None
        self.hosts_wanted = None
        self.next_hosts_fetch = self.clock() + HOSTS_FETCH_SPACING
        try:
            self._hosts(self._client())
        except (RegistryError, Unreachable, NodeError) as exc:
            self._report(f"server {self.server.address}: {exc}")
            return False
        return True

    def wait(self, until: float, stopping: Callable[[], bool]) -> None:
        """Until `until` (time.monotonic()) or `stopping()`: listen to the beacons, so that a
        name the server just registered is in /etc/hosts within a second (autoconf.beacon)."""
        if self.server is None:  # tick() listened for a server the whole interval
            while not stopping() and time.monotonic() < until:
                time.sleep(min(0.2, self.interval))
            return
        try:
            sock = beacon.open_listener(port=self.beacon_port)
        except OSError as exc:
            self._report(f"cannot listen for the server's beacon ({exc.strerror or exc}): "
                         "/etc/hosts follows at each poll only")
            sock = None
        try:
            while not stopping() and (left := until - time.monotonic()) > 0:
                if sock is None:
                    time.sleep(min(0.2, left))
                    continue
                sock.settimeout(min(0.2, left))
                try:
                    data, _sender = sock.recvfrom(beacon.MAX_DATAGRAM)
                except TimeoutError:
                    self.follow_hosts()  # one announced while the last fetch was too recent
                    continue
                self.heard(data)
        finally:
            if sock is not None:
                sock.close()

    def tick(self) -> None:
        if self.server is None:
            # Listen for the beacon the whole poll interval: a server that comes up is heard
            # within one beacon period, not at the next poll.
            self.server = discover.find_server(self.config, self.root, ask=False,
                                               port=self.port, beacon_port=self.beacon_port,
                                               beacon_timeout=self.interval)
            if self.server is None:
                self._report("still no OAR Live server on the network")
                return
            say(console.info(f"OAR server: {self.server.describe()}"))
        client = self._client()
        try:
            known = client.node(self.hostname) if self.hostname else None
            if known is None:
                self._report(f"the server {self.server.address} does not know this node "
                             "(it restarted?): registering again" if self.hostname else
                             f"registering with the server {self.server.address}")
                self._register(client)
            elif needs_check(known, absent=self.first or bool(known.get("problem"))):
                # Absent: its own shutdown (the watcher restarted) or its check at registration
                # failed; an administrator's Absent later on is respected.
                self._recheck(client, known)
            self._hosts(client)
            self._share(client)
            self.first = False
            self._report("")
        except (RegistryError, Unreachable, NodeError, nfs.NfsError) as exc:
            self._report(f"server {self.server.address}: {exc}")

    def mark_absent(self) -> bool:
        if not self.hostname:
            return False
        try:
            proc.run(["oarnodesetting", "-s", "Absent", "-h", self.hostname, "-n"],
                     timeout=ABSENT_TIMEOUT)
        except proc.CommandError as exc:
            say(console.warning(f"could not mark {self.hostname} Absent: {exc}"))
            return False
        say(console.info(f"{self.hostname} marked Absent"))
        return True


def watch_main(argv: list[str]) -> int:
    """`oar-autoconf node-watch`: keep this node registered until SIGTERM, then mark it Absent."""
    parser = argparse.ArgumentParser(prog="oar-autoconf node-watch")
    parser.add_argument("--interval", type=float, default=WATCH_INTERVAL, help="seconds")
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=REGISTRY_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--beacon-port", type=int, default=BEACON_PORT,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = read_config(args.root)
        watcher = Watcher(config, args.root, read_state(args.root), args.port, args.beacon_port,
                          args.interval)
    except (ConfigError, NodeError, ValueError, KeyError) as exc:
        print(f"oar-autoconf node-watch: {exc}", file=sys.stderr)
        return 1
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if watcher.server is None:  # listening for a server: nothing to mark, stop at once
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(console.info(f"watching {watcher.hostname or 'this node'} every {args.interval:g} s"))
    while not stopping:
        next_tick = time.monotonic() + args.interval  # a tick that listened used its interval
        watcher.tick()
        watcher.wait(next_tick, lambda: bool(stopping))
    watcher.mark_absent()
    return 0
