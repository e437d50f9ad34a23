"""Server role: make this machine the OAR server of the cluster, one checked step at a time.

Each step looks at what is there and changes only what differs, reporting `changed` or
`unchanged`, so running the role twice (or after a crash) is safe:

hostname, /etc/hosts, the shared home (autoconf.nfs), PostgreSQL on the cluster network,
oar.conf, the OAR database, oar-server, OAR's resource properties, and the registration service
with its beacon.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoconf import etchosts, nfs, oarconf, timing, website
from autoconf.block import find_block
from autoconf.config import Config, Role, Web
from autoconf.detect import Detection, cluster_address
from autoconf.oarconf import OAR_CONF
from autoconf.oarstate import Oar, OarError
from autoconf.registration import SERVER_STATE, ServerState
from boot import console, proc
from boot.files import write_if_changed
from boot.pxe import configure as pxe

__all__ = [
    "PROPERTIES",
    "SERVER_HOSTNAME",
    "ServerError",
    "ServerHost",
    "handle",
    "ensure_database",
    "ensure_oar_conf",
    "ensure_oar_server",
    "ensure_postgresql",
    "ensure_properties",
    "server_host",
]

SERVER_HOSTNAME = "oar-server"
REGISTRY_UNIT = "oar-live-registry.service"
PROPERTIES = ("cpu", "core", "thread", "mem", "host")  # host is a string property (-c)
PG_CONF_DIR = Path("etc/postgresql")
PG_DROPIN = "conf.d/oar-live.conf"
LOOPBACK = "127.0.0.1/8"

Runner = Callable[..., Any]


class ServerError(Exception):
    """A server step could not be completed; the message says which and why."""


@dataclass(frozen=True)
class ServerHost:
    """Where the server lives: its name and its address on the cluster network."""

    hostname: str
    interface: ipaddress.IPv4Interface  # address with the cluster network's prefix

    @property
    def address(self) -> str:
        return str(self.interface.ip)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.interface.network


def say(step: str, changed: bool | None, detail: str = "") -> None:
    """One console line per step: what it is and whether it changed anything (None: failed)."""
    print(console.server_step(step, changed, detail), flush=True)


def _step(name: str, ensure: Callable[[], bool], detail: str = "") -> bool:
    """Run one check-then-act step, timed for the summary; say whether it changed anything."""
    with timing.step(name):
        changed = ensure()
    say(name, changed, detail)
    return changed


def server_host(config: Config, detection: Detection) -> ServerHost:
    """The server's name and cluster address (loopback when the machine has no network)."""
    address = cluster_address(detection, config.net)
    if address is None:
        return ServerHost(SERVER_HOSTNAME, ipaddress.IPv4Interface(LOOPBACK))
    for interface in detection.interfaces:
        for text in interface.addresses:
            found = ipaddress.ip_interface(text)
            if isinstance(found, ipaddress.IPv4Interface) and str(found.ip) == address:
                return ServerHost(SERVER_HOSTNAME, found)
    return ServerHost(SERVER_HOSTNAME, ipaddress.IPv4Interface(f"{address}/32"))


# ----------------------------------------------------------------------------- services


def _systemd(root: Path) -> bool:
    return (root / "run/systemd/system").is_dir()


def service(name: str, action: str, root: Path = Path("/"), run: Runner = proc.run) -> bool:
    """Run `action` (start, restart, reload, status) on a service; status: True when running."""
    argv = ["systemctl", action, name] if _systemd(root) else ["service", name, action]
    result = run(argv, check=action != "status", timeout=180)
    return getattr(result, "returncode", 0) == 0


# ----------------------------------------------------------------------------- steps


def ensure_hostname(host: ServerHost, root: Path = Path("/"), run: Runner = proc.run) -> bool:
    """/etc/hostname and the running hostname say the server's name."""
    changed = False
    path = root / "etc/hostname"
    try:
        current = path.read_text().strip()
    except FileNotFoundError:
        current = ""
    if current != host.hostname:
        path.write_text(host.hostname + "\n")
        changed = True
    running = run(["hostname"], timeout=10).stdout.strip()
    if running != host.hostname:
        run(["hostname", host.hostname], timeout=10)
        changed = True
    return changed


def ensure_hosts(host: ServerHost, root: Path = Path("/")) -> bool:
    """The managed block of /etc/hosts names the server (registered nodes are kept)."""
    path = root / etchosts.HOSTS
    try:
        entries = etchosts.parse_block(path.read_text())
    except FileNotFoundError:
        entries = {}
    entries[host.hostname] = host.address
    return etchosts.write_block(entries, path)


def _pg_main_dirs(root: Path) -> list[Path]:
    dirs = sorted((root / PG_CONF_DIR).glob("*/main"), key=lambda p: p.parent.name)
    if not dirs:
        raise ServerError(
            f"no PostgreSQL cluster under {root / PG_CONF_DIR} (is postgresql installed?)"
        )
    return dirs[-1:]  # the newest major version's cluster


def ensure_postgresql(host: ServerHost, root: Path = Path("/"), run: Runner = proc.run) -> bool:
    """PostgreSQL listens on localhost and the cluster address only, lets the cluster's
    network in as oar and oar_ro, and runs (restarted when its settings changed)."""
    changed = False
    listen = "localhost" if host.interface.ip.is_loopback else f"localhost,{host.address}"
    network = host.network
    for main in _pg_main_dirs(root):
        dropin = (
            "# Written by oar-autoconf: OAR nodes reach the database on the cluster network.\n"
            f"listen_addresses = '{listen}'\n"
        )
        changed |= write_if_changed(main / PG_DROPIN, dropin)
        hba = main / "pg_hba.conf"
        rules = [
            f"host    oar             {user:<15} {network!s:<23} scram-sha-256"
            for user in ("oar", "oar_ro")
        ]
        try:
            current = hba.read_text()
        except FileNotFoundError:
            raise ServerError(f"{hba} is missing: the PostgreSQL cluster is broken") from None
        changed |= write_if_changed(hba, find_block(current).replaced(rules, at_end=True))
    running = service("postgresql", "status", root, run) and _pg_ready(run)
    if changed and running:
        service("postgresql", "restart", root, run)  # listen_addresses needs a restart
    elif not running:
        service("postgresql", "start", root, run)
        changed = True
    _wait_pg_ready(run)
    return changed


def _pg_ready(run: Runner) -> bool:
    result = run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False, timeout=30)
    return getattr(result, "returncode", 1) == 0


def _wait_pg_ready(run: Runner, attempts: int = 60) -> None:
    import time

    for _ in range(attempts):
        if _pg_ready(run):
            return
        time.sleep(0.5)
    raise ServerError("PostgreSQL does not accept connections on 127.0.0.1 after starting it")


def ensure_oar_conf(host: ServerHost, root: Path = Path("/")) -> bool:
    """/etc/oar/oar.conf: Debian's file with our database, passwords and server name."""
    secrets, generated = oarconf.ensure_secrets(root)
    text = oarconf.render_for(oarconf.OarSettings(host.hostname, host.address, secrets), root)
    return oarconf.write_oar_conf(text, root) or generated


def _columns(run: Runner, root: Path) -> set[str] | None:
    """The columns of OAR's resources table, None when oar_ro cannot read it."""
    try:
        return Oar(root / OAR_CONF, run).columns()
    except OarError:
        return None


def ensure_database(run: Runner = proc.run, root: Path = Path("/")) -> bool:
    """The OAR database exists, is reachable and has the resource properties nodes need.

    Reading the resources table's columns as oar_ro (one psql call) proves the database the
    image was built with and lists its properties; OAR's own `oar-database --check` (a Perl
    process, 3 s under emulation) is asked only when that read fails, and `--create` only when
    the check fails too.
    """
    columns = _columns(run, root)
    created = False
    if columns is None and run(["oar-database", "--check"], check=False,
                               timeout=120).returncode != 0:
        try:
            run(["oar-database", "--create", "--db-is-local"], timeout=600)
        except proc.CommandError as exc:
            raise ServerError(f"creating the OAR database failed: {exc}") from None
        check = run(["oar-database", "--check"], check=False, timeout=120)
        if check.returncode != 0:
            raise ServerError(f"the OAR database is still not usable: {check.stdout.strip()}")
        created = True
    return ensure_properties(run, root, columns) or created


def ensure_oar_server(
    root: Path = Path("/"), run: Runner = proc.run, restart: bool = False
) -> bool:
    """oar-server runs (restarted when oar.conf changed under it)."""
    if oar_server_running(root, run):
        if restart:
            service("oar-server", "restart", root, run)
            return True
        return False
    service("oar-server", "start", root, run)
    return True


def oar_server_running(root: Path = Path("/"), run: Runner = proc.run) -> bool:
    """Is OAR's Almighty running? Without systemd, Debian's init script cannot tell reliably."""
    if _systemd(root):
        argv = ["systemctl", "is-active", "--quiet", "oar-server"]
    else:
        argv = ["pgrep", "-x", "Almighty"]
    return run(argv, check=False, timeout=30).returncode == 0


def ensure_properties(run: Runner = proc.run, root: Path = Path("/"),
                      present: set[str] | None = None) -> bool:
    """OAR has the resource properties cpu, core, thread, mem and host.

    The image is built with them; at boot one psql read checks (`oarproperty -l`, a Perl
    process, only when oar_ro cannot read), and only missing ones are added with oarproperty.
    `present`: the columns already read.
    """
    if present is None:
        present = _columns(run, root)
    if present is None:
        present = set(run(["oarproperty", "-l"], timeout=60).stdout.split())
    missing = [name for name in PROPERTIES if name not in present]
    for name in missing:
        run(["oarproperty", "-c", "-a", name] if name == "host" else ["oarproperty", "-a", name])
    return bool(missing)


def ensure_registry(
    host: ServerHost, detection: Detection, root: Path = Path("/"), run: Runner = proc.run
) -> bool:
    """The registration service (and beacon) runs with the server's current state."""
    state = ServerState(
        hostname=host.hostname,
        address=host.address,
        network=str(host.network),
        detection_hostname=detection.hostname,
    )
    text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    changed = write_if_changed(root / SERVER_STATE, text)
    if not _systemd(root):
        print(
            console.info("no systemd here: run `oar-autoconf serve` to accept registrations",
                         "server"),
            file=sys.stderr,
        )
        return changed
    running = run(["systemctl", "is-active", "--quiet", REGISTRY_UNIT], check=False).returncode == 0
    if running and not changed:
        return False
    run(["systemctl", "restart" if running else "start", REGISTRY_UNIT], timeout=60)
    return True


# ----------------------------------------------------------------------------- netboot


def _prepare_netboot(config: Config, detection: Detection, root: Path,
                     run: Runner) -> pxe.Netboot | None:
    """oar.pxe=1: boot.pxe probes DHCP on the cluster network and picks its mode (before the
    server settles its address). A failure is reported; the cluster works without netboot."""
    if not config.pxe:
        return None
    try:
        return pxe.prepare(config.net, detection.interfaces, root, run)
    except (pxe.PxeError, proc.CommandError, OSError) as exc:
        say("netboot service (PXE)", None, str(exc))
        return None


def _start_netboot(netboot: pxe.Netboot, host: ServerHost, config: Config, cmdline: str,
                   root: Path, run: Runner) -> None:
    keys = pxe.node_keys(config.keymap, config.token,
                         token_in_image=config.source("token") in ("default", "image"))
    try:
        say("netboot service (PXE)",
            *pxe.start(netboot, host.interface, keys, cmdline, root, run))
    except (pxe.PxeError, proc.CommandError, OSError) as exc:
        say("netboot service (PXE)", None, str(exc))


def _web_step(config: Config, host: ServerHost, root: Path, run: Runner) -> None:
    """The web tools (autoconf.website); a failure is reported, the cluster works without."""
    if config.web is Web.OFF:
        say("web (page, Monika, API)", False, "oar.web=off")
        return
    if not website.installed(root):
        say("web (page, Monika, API)", False, "not in this image")
        return
    try:
        _step("web (page, Monika, API)",
              lambda: website.ensure_website(config, host.hostname, host.address, root, run),
              console.web_page(host.address))
    except (proc.CommandError, oarconf.OarConfError, OSError) as exc:
        say("web (page, Monika, API)", None, str(exc))


# ----------------------------------------------------------------------------- the role


def handle(config: Config, detection: Detection, root: Path = Path("/"),
           run: Runner = proc.run, cmdline: str = "") -> str:
    """Set this machine up as the OAR server; returns the server's hostname.

    `cmdline` is the server's kernel command line (the agent's): the netboot menus show the
    nodes' console where the server's is.
    """
    netboot = _prepare_netboot(config, detection, root, run)
    if netboot is not None:  # the cluster interface may just have been given its address
        given = netboot.interface
        detection = dataclasses.replace(detection, interfaces=tuple(
            given if i.name == given.name else i for i in detection.interfaces))
    host = server_host(config, detection)
    if not re.match(r"^[a-z0-9-]+$", host.hostname):
        raise ServerError(f"invalid server hostname {host.hostname!r}")
    try:
        _step("hostname", lambda: ensure_hostname(host, root, run), host.hostname)
        _step("/etc/hosts", lambda: ensure_hosts(host, root), f"{host.address} {host.hostname}")
        if config.role is not Role.SOLO:  # a solo machine's /home is its own
            _step("shared home", lambda: nfs.export_home(host.network, host.address, root, run),
                  f"/home over NFSv4 to {host.network}")
        _step("postgresql", lambda: ensure_postgresql(host, root, run),
              f"listening on {host.address}")
        conf_changed = _step("oar.conf", lambda: ensure_oar_conf(host, root))
        _step("oar database", lambda: ensure_database(run, root), "with its resource properties")
        _step("oar-server", lambda: ensure_oar_server(root, run, restart=conf_changed))
        _step(console.REGISTRATION_SERVICE, lambda: ensure_registry(host, detection, root, run),
              f"{host.address}:6680")
        _web_step(config, host, root, run)
        if netboot is not None:
            with timing.step("netboot service"):
                _start_netboot(netboot, host, config, cmdline, root, run)
    except (proc.CommandError, oarconf.OarConfError, nfs.NfsError, OSError) as exc:
        raise ServerError(f"server role: {exc}") from None
    return host.hostname
