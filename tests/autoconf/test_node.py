"""The node role against a real HTTP registry on 127.0.0.1 that follows the registration contract.

Files land in a fake root (tmp_path); commands (hostname, systemctl, ssh-keygen, oarnodesetting)
are recorded instead of run, except in the `spawns` test, which runs the watcher as a real
process with a fake `oarnodesetting` on PATH and stops it with SIGTERM like systemd does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import pytest

from autoconf import node
from autoconf.client import RegistryClient
from autoconf.config import Config, Role, write_config
from autoconf.detect import Cpu, Detection, Interface
from autoconf.discover import Server, Source
from autoconf.outcome import Pending
from boot import proc

TOKEN = "cluster-token-1234"
HOST = "node-525400123456"
OAR_CONF = 'DB_TYPE="Pg"\nDB_HOSTNAME="127.0.0.1"\nSERVER_HOSTNAME="oar-server"\n'
REPO = Path(__file__).resolve().parents[2]

DETECTION = Detection(
    hostname=HOST,
    mac="52:54:00:12:34:56",
    product_uuid=None,
    cpus=(Cpu(0, 0, 0, 0), Cpu(1, 0, 1, 0)),
    mem_mib=2048,
    interfaces=(Interface("eth0", "52:54:00:12:34:56", ("127.0.0.1/8",)),),
    boot_interface="eth0",
)


class FakeRegistry:
    """The server side of the contract, in memory: what a real OAR Live server answers."""

    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}  # hostname -> OAR state
        self.addresses: dict[str, str] = {"oar-server": "127.0.0.1"}
        self.fail_next: list[int] = []  # statuses to answer the next registrations with
        self.registrations: list[dict] = []
        self.node_queries = 0
        self.problems: list[str] = []  # why the next checks fail (one per registration)
        self.accounts: list[dict] = []  # GET /v1/accounts
        self.lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, payload, content_type="application/json"):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with registry.lock:
                    self.reply(*registry.post(self.path, raw))

            def do_GET(self):  # noqa: N802
                with registry.lock:
                    self.reply(*registry.get(self.path, self.headers.get("X-OAR-Live-Token")))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def hosts_text(self) -> str:
        lines = [f"{a} {h}" for h, a in sorted(self.addresses.items())]
        return "# BEGIN oar-live (managed by oar-autoconf)\n" + "\n".join(lines) + "\n# END\n"

    def post(self, path, raw):
        if path != "/v1/register":
            return 404, {"error": "no such endpoint"}
        try:
            body = json.loads(raw)
            detection = Detection.from_json(body["detection"])
            address = body["address"]
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"malformed registration: {exc}"}
        if body.get("token") != TOKEN:
            return 401, {"error": "wrong token"}
        self.registrations.append(body)
        if self.fail_next:
            return self.fail_next.pop(0), {"error": "database not ready"}
        changed = detection.hostname not in self.nodes
        problem = self.problems.pop(0) if self.problems else None
        if problem is None:  # the node passed the check: Alive; else it keeps its state
            self.nodes[detection.hostname] = "Alive"
        else:
            self.nodes.setdefault(detection.hostname, "Absent")
        self.addresses[detection.hostname] = address
        resources = [{"host": detection.hostname, "cpuset": c.cpu} for c in detection.cpus]
        return 200, {"hostname": detection.hostname, "resources": resources, "changed": changed,
                     "oar_conf": OAR_CONF, "hosts": self.hosts_text(),
                     "server_hostname": "oar-server", "state": self.nodes[detection.hostname],
                     "problem": problem}

    def get(self, path, token):
        if token != TOKEN:
            return 401, {"error": "wrong token"}
        if path == "/v1/hosts":
            return 200, self.hosts_text().encode(), "text/plain"
        if path == "/v1/accounts":
            return 200, {"accounts": self.accounts}
        if path.startswith("/v1/nodes/"):
            self.node_queries += 1
            host = path.removeprefix("/v1/nodes/")
            if host not in self.nodes:
                return 404, {"error": f"{host} is not registered"}
            return 200, {"hostname": host, "state": self.nodes[host], "resources": []}
        return 404, {"error": "no such endpoint"}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def registry():
    fake = FakeRegistry()
    fake.thread.start()
    yield fake
    fake.http.shutdown()
    fake.http.server_close()


class Commands(list):
    """The argument lists run so far; `fail[name]` makes that command raise."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: dict[str, proc.CommandError] = {}
        self.passthrough: set[str] = set()  # commands really run (integration tests only)


@pytest.fixture
def commands(monkeypatch):
    """Record every command the node runs; `commands.fail[argv0] = CommandError` to fail one."""
    ran = Commands()
    fail = ran.fail

    def run(argv, check=True, **kw):
        argv = [str(a) for a in argv]
        ran.append(argv)
        if argv[0] in ran.passthrough:
            return real_run(argv, check=check, **kw)
        if argv[0] in fail:
            raise fail[argv[0]]
        if argv[0] == "ssh-keygen":  # create the files like ssh-keygen would
            key = Path(argv[argv.index("-f") + 1])
            key.write_text("PRIVATE KEY\n")
            key.with_name(key.name + ".pub").write_text("ssh-rsa AAAA oar-node\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    real_run = proc.run
    monkeypatch.setattr(proc, "run", run)
    monkeypatch.setattr(node, "running_hostname", lambda: "debian")
    return ran


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/oar").mkdir()
    (tmp_path / "etc/hosts").write_text(
        "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n"
    )
    (tmp_path / "etc/hostname").write_text("debian\n")
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                         "user:x:1000:1000::/home/user:/bin/bash\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nsudo:x:27:user\nuser:x:1000:\n")
    return tmp_path


def node_config(registry: FakeRegistry | None = None, **values) -> Config:
    if registry is not None:
        values.setdefault("server", registry.address)
    return Config(role=Role.NODE, token=TOKEN, timeout=0, sources=MappingProxyType({}), **values)


def join(registry, root, **kw) -> str:
    return node.handle(node_config(registry), DETECTION, root, alive_deadline=5, **kw)


# ---- joining at boot ----------------------------------------------------------------------


def test_node_joins_and_gets_hostname_oar_conf_hosts_and_oar_node(registry, root, commands,
                                                                  capsys):
    (root / "etc/ssh/ssh_host_rsa_key").write_text("SYSTEM KEY\n")
    (root / "etc/ssh/ssh_host_rsa_key.pub").write_text("ssh-rsa SYSTEM\n")

    assert join(registry, root) == HOST

    body = registry.registrations[0]
    assert body["token"] == TOKEN
    assert body["detection"] == DETECTION.to_json()
    assert body["address"] == "127.0.0.1"
    assert (root / "etc/hostname").read_text() == HOST + "\n"
    assert (root / "etc/oar/oar.conf").read_text() == OAR_CONF
    hosts = (root / "etc/hosts").read_text()
    assert "127.0.0.1\tlocalhost" in hosts and "127.0.1.1\tdebian" in hosts
    assert "127.0.0.1 oar-server" in hosts and f"127.0.0.1 {HOST}" in hosts
    key = root / "etc/oar/oar_ssh_host_rsa_key"
    assert key.read_text() == "SYSTEM KEY\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ["hostname", HOST] in commands
    # a new host key: oar-node's sshd (re)starts while the server registers the node, and is
    # running before the node waits to be Alive
    started = commands.index(["systemctl", "restart", "--no-block", "oar-node"])
    assert started < commands.index(["hostname", HOST]) < commands.index(
        ["systemctl", "start", "oar-node"])
    assert commands[-1] == ["systemctl", "start", "--no-block", "oar-live-node.service"]
    out = capsys.readouterr().out
    assert f"OAR server: {registry.address} from oar.server" in out
    assert f"registered as {HOST} with 2 resources (new or changed)" in out
    assert f"{HOST} is Alive in OAR" in out
    state = json.loads((root / "run/oar-live/node.json").read_text())
    assert state["server"] == registry.address and state["hostname"] == HOST


def test_joining_twice_changes_nothing_the_second_time(registry, root, commands, monkeypatch,
                                                       capsys):
    join(registry, root)
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    monkeypatch.setattr(node, "running_hostname", lambda: HOST)
    commands.clear()
    capsys.readouterr()

    assert join(registry, root) == HOST

    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files
    assert "configured: nothing to change" in capsys.readouterr().out
    assert not any(c[0] in ("hostname", "ssh-keygen") for c in commands)
    assert ["systemctl", "start", "oar-node"] in commands
    assert len(registry.registrations) == 2


def test_oar_node_host_key_is_generated_when_the_system_has_none(registry, root, commands):
    join(registry, root)
    keygen = [c for c in commands if c[0] == "ssh-keygen"]
    assert len(keygen) == 1
    assert keygen[0][keygen[0].index("-f") + 1] == str(root / "etc/oar/oar_ssh_host_rsa_key")
    assert keygen[0][keygen[0].index("-N") + 1] == ""  # sshd cannot type a passphrase


def test_installed_oar_conf_gets_debians_mode_whatever_it_had(registry, root, commands):
    conf = root / "etc/oar/oar.conf"
    conf.write_text("# Debian's default\n")
    conf.chmod(0o640)
    join(registry, root)
    assert conf.read_text() == OAR_CONF
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600


def test_wrong_token_is_final_and_changes_nothing(registry, root, commands):
    config = Config(role=Role.NODE, server=registry.address, token="another-build", timeout=0)
    with pytest.raises(node.NodeError, match="refused this machine's cluster token"):
        node.handle(config, DETECTION, root, alive_deadline=1)
    assert registry.registrations == []
    assert (root / "etc/hostname").read_text() == "debian\n"
    assert not (root / "etc/oar/oar.conf").exists()
    assert ["systemctl", "start", "oar-node"] not in commands


def test_rejected_request_is_final_and_says_why(registry, root, commands, monkeypatch):
    broken = json.loads(json.dumps(DETECTION.to_json()))
    broken["cpus"] = []
    monkeypatch.setattr(Detection, "to_json", lambda self: broken)
    with pytest.raises(node.NodeError, match="rejected the registration: HTTP 400: malformed"):
        join(registry, root)
    assert not (root / "etc/oar/oar.conf").exists()


def test_a_name_another_machine_holds_is_final_and_says_why(registry, root, commands,
                                                            monkeypatch):
    held = "node-5254004f4c01 is registered by another machine (MAC 52:54:00:4f:4c:01, at " \
           "10.77.0.11) that still answers; this one has MAC 52:54:00:4f:4c:99"
    monkeypatch.setattr(registry, "post", lambda path, raw: (409, {"error": held}))
    with pytest.raises(node.NodeError, match=f"refused the registration: {re.escape(held)}$"):
        join(registry, root)
    assert (root / "etc/hostname").read_text() == "debian\n"
    assert not (root / "etc/oar/oar.conf").exists()
    assert ["systemctl", "start", "oar-node"] not in commands


def test_no_server_yet_is_pending_on_the_watcher_not_an_error(root, commands):
    with pytest.raises(Pending, match="no OAR Live server answered yet.*keeps looking.*"
                                      "oar.server=IP"):
        node.handle(node_config(), DETECTION, root, find=lambda config, root: None)
    assert commands == [["systemctl", "start", "--no-block", "oar-live-node.service"]]
    state = json.loads((root / "run/oar-live/node.json").read_text())
    assert state["server"] is None and state["detection"] == DETECTION.to_json()


def test_a_hostname_the_server_should_not_have_sent_is_refused(registry, root, commands,
                                                              monkeypatch):
    original = registry.post

    def hostile(path, raw):
        status, answer = original(path, raw)
        return status, dict(answer, hostname="--help")

    monkeypatch.setattr(registry, "post", hostile)
    with pytest.raises(node.NodeError, match="sent an unusable registration answer: hostname "
                                             "'--help' is not a host name"):
        join(registry, root)
    assert len(registry.registrations) == 1  # not retried
    assert not any(c[0] == "hostname" for c in commands)


# ---- retries ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def test_registration_retries_with_backoff_while_the_server_is_not_ready(registry, capsys):
    registry.fail_next = [503, 503, 500]
    clock = FakeClock()
    client = RegistryClient(f"http://{registry.address}", TOKEN)
    registration = node.register(client, DETECTION, "127.0.0.1", 60, clock.sleep, clock)
    assert registration.hostname == HOST
    assert len(registry.registrations) == 4
    assert clock.sleeps == [1, 2, 4]
    assert "registration: HTTP 503: database not ready; retrying in 1 s" in capsys.readouterr().out


def test_registration_gives_up_at_the_deadline_when_nobody_answers(registry, capsys):
    port = registry.port
    registry.http.shutdown()
    registry.http.server_close()  # nothing listens there any more: connection refused
    clock = FakeClock()
    client = RegistryClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    with pytest.raises(Pending, match=r"did not take the registration within 30 s \(no answer"):
        node.register(client, DETECTION, "127.0.0.1", 30, clock.sleep, clock)
    assert sum(clock.sleeps) == pytest.approx(30)
    assert max(clock.sleeps) <= 15  # the backoff is capped
    assert "retrying in" in capsys.readouterr().out


def test_the_shared_home_and_the_accounts_come_before_oar_node(registry, root, commands,
                                                              capsys):
    registry.accounts = [{"name": "alice", "uid": 1001, "gid": 1001, "group": "alice",
                          "gecos": "", "shell": "/bin/bash"}]
    join(registry, root)
    mount = next(i for i, c in enumerate(commands) if c[:3] == ["mount", "-t", "nfs4"])
    assert commands[mount][-2:] == ["127.0.0.1:/", str(root / "home")]
    useradd = next(i for i, c in enumerate(commands) if c[0] == "useradd")
    assert commands[useradd][-1] == "alice"
    oar_node = next(i for i, c in enumerate(commands) if c[-1] == "oar-node")
    assert mount < useradd < oar_node
    assert "account alice added (UID 1001, GID 1001)" in capsys.readouterr().out


def test_a_solo_machine_shares_nothing(registry, root, commands):
    solo = Config(role=Role.SOLO, token=TOKEN, timeout=0, sources=MappingProxyType({}),
                  server=registry.address)
    node.handle(solo, DETECTION, root, alive_deadline=5)
    assert not any(c[0] in ("mount", "useradd", "groupadd") for c in commands)


def test_a_home_that_cannot_be_mounted_leaves_the_joining_to_the_watcher(registry, root,
                                                                         commands, monkeypatch):
    monkeypatch.setattr(node.nfs, "MOUNT_DEADLINE", 0.0)
    commands.fail["mount"] = proc.CommandError(["mount"], 32, "mount.nfs4: Connection refused")
    with pytest.raises(Pending, match="cannot mount the shared home .*oar-live-node mounts it"):
        join(registry, root)
    assert registry.registrations == [] and not any(c[-1] == "oar-node" for c in commands)
    assert commands[-1] == ["systemctl", "start", "--no-block", "oar-live-node.service"]


# ---- the watcher --------------------------------------------------------------------------


def watcher_for(registry, root) -> node.Watcher:
    node.write_state(root, Server("127.0.0.1", registry.port, Source.CONFIG), DETECTION, HOST)
    return node.Watcher(node_config(), root, node.read_state(root))


def test_watcher_registers_again_when_the_server_forgot_the_node(registry, root, commands,
                                                                 capsys):
    join(registry, root)
    watcher = watcher_for(registry, root)
    watcher.tick()
    assert len(registry.registrations) == 1  # known and Alive: nothing to do

    registry.nodes.clear()  # the server rebooted: its database was in RAM
    watcher.tick()

    assert len(registry.registrations) == 2
    assert registry.nodes == {HOST: "Alive"}
    assert "does not know this node (it restarted?): registering again" in capsys.readouterr().out


def test_watcher_takes_new_accounts_and_drops_gone_ones_reporting_once(registry, root, commands,
                                                                       capsys):
    join(registry, root)
    watcher = watcher_for(registry, root)
    registry.accounts = [{"name": "alice", "uid": 1001, "gid": 1001, "group": "alice",
                          "gecos": "", "shell": "/bin/bash"},
                         {"name": "root", "uid": 1002, "gid": 1002, "group": "root2"}]
    watcher.tick()
    with (root / "etc/passwd").open("a") as passwd:  # what the useradd run did
        passwd.write("alice:x:1001:1001::/home/alice:/bin/bash\n")
    watcher.tick()
    out = capsys.readouterr().out
    assert out.count("account alice added") == 1 and out.count("root: clashes with") == 1
    registry.accounts = []
    watcher.tick()
    assert ["userdel", "alice"] in commands


def test_watcher_keeps_etc_hosts_in_step_with_the_cluster(registry, root, commands):
    join(registry, root)
    registry.addresses["node-525400abcdef"] = "10.0.0.9"  # another node joined
    watcher_for(registry, root).tick()
    assert "10.0.0.9 node-525400abcdef" in (root / "etc/hosts").read_text()


def test_watcher_restarted_after_absent_makes_the_node_alive_again(registry, root, commands):
    join(registry, root)
    registry.nodes[HOST] = "Absent"  # marked Absent when the watcher stopped
    watcher = watcher_for(registry, root)
    watcher.tick()
    assert registry.nodes[HOST] == "Alive"
    registry.nodes[HOST] = "Absent"  # an administrator's decision later on is respected
    watcher.tick()
    assert registry.nodes[HOST] == "Absent"


def test_a_node_registered_before_oar_node_answered_asks_again_and_becomes_alive(
        registry, root, commands, capsys):
    registry.problems = [f"{HOST}: oar-node's sshd at 127.0.0.1:6667 does not let oar in"]
    assert join(registry, root) == HOST
    assert registry.nodes[HOST] == "Alive"
    assert len(registry.registrations) == 2, "registered, then checked again once oar-node ran"
    out = capsys.readouterr().out
    assert "6667" in out and f"{HOST} is Alive in OAR" in out


def test_watcher_revives_a_suspected_node_and_backs_off_while_it_is_broken(
        registry, root, commands, capsys):
    join(registry, root)
    watcher = watcher_for(registry, root)
    watcher.tick()
    registry.nodes[HOST] = "Suspected"  # OAR's checker could not reach it for a while
    watcher.tick()
    assert registry.nodes[HOST] == "Alive" and len(registry.registrations) == 2
    assert "set it Alive again" in capsys.readouterr().out

    now = [1000.0]
    watcher.clock = lambda: now[0]
    registry.nodes[HOST] = "Suspected"
    registry.problems = ["disk full (/tmp has 0 KiB free)"] * 3
    watcher.tick()
    assert registry.nodes[HOST] == "Suspected"
    assert "stays Suspected: disk full (/tmp has 0 KiB free)" in capsys.readouterr().out
    watcher.tick()  # within the back-off: no new check
    assert len(registry.registrations) == 3
    now[0] += watcher.interval
    watcher.tick()
    assert len(registry.registrations) == 4 and watcher.check_delay == 4 * watcher.interval
    registry.problems = []
    now[0] += watcher.check_delay
    watcher.tick()
    assert registry.nodes[HOST] == "Alive" and watcher.check_delay == watcher.interval


def test_a_node_booted_before_its_server_starts_oar_node_before_the_server_checks_it(
        registry, root, commands):
    node.write_state(root, Server("127.0.0.1", registry.port, Source.CONFIG), DETECTION, None)
    watcher = node.Watcher(node_config(), root, node.read_state(root))
    registry.problems = [f"{HOST}: oar-node's sshd at 127.0.0.1:6667 does not let oar in"]
    watcher.tick()
    starts = [n for n, argv in enumerate(commands) if argv[:2] == ["systemctl", "restart"]
              and argv[-1] == "oar-node"]
    assert starts and commands[starts[0] - 1][0] == "ssh-keygen", commands  # right after its key
    assert registry.nodes[HOST] == "Alive" and len(registry.registrations) == 2


def test_watcher_reports_an_unreachable_server_once(registry, root, commands, capsys):
    join(registry, root)
    watcher = watcher_for(registry, root)
    registry.http.shutdown()
    registry.http.server_close()
    capsys.readouterr()
    watcher.tick()
    watcher.tick()
    assert capsys.readouterr().out.count(f"server {registry.address}: ") == 1


def test_mark_absent_runs_oarnodesetting_and_survives_its_failure(registry, root, commands,
                                                                  capsys):
    watcher = watcher_for(registry, root)
    assert watcher.mark_absent()
    assert commands[-1] == ["oarnodesetting", "-s", "Absent", "-h", HOST, "-n"]
    commands.fail["oarnodesetting"] = proc.CommandError(
        ["oarnodesetting"], 1, "could not connect to the database")
    assert not watcher.mark_absent()
    assert "could not mark node-525400123456 Absent" in capsys.readouterr().out


def test_watch_main_without_node_state_says_so(tmp_path, capsys):
    write_config(node_config(), tmp_path)
    assert node.watch_main(["--root", str(tmp_path)]) == 1
    assert "the boot agent did not run the node role" in capsys.readouterr().err


def test_a_watcher_without_a_server_listens_for_one_its_whole_interval(root, monkeypatch):
    asked = []

    def find_server(config, root, **kwargs):
        asked.append(kwargs["beacon_timeout"])

    monkeypatch.setattr(node.discover, "find_server", find_server)
    node.write_state(root, None, DETECTION, None)
    watcher = node.Watcher(node_config(), root, node.read_state(root), interval=7.0)
    watcher.tick()
    assert asked == [7.0], "a server that comes up is heard at once, not at the next poll"


def start_watcher(root: Path, env: dict, *args: str) -> subprocess.Popen:
    """`oar-autoconf node-watch` as its unit runs it, on the node root `root`."""
    return subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from autoconf.node import watch_main; sys.exit(watch_main(sys.argv[1:]))",
         "--root", str(root), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.spawns
def test_a_watcher_listening_for_a_server_stops_at_once_on_sigterm(tmp_path):
    root = tmp_path / "root"
    write_config(node_config(), root)
    node.write_state(root, None, DETECTION, None)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
        free.bind(("127.0.0.1", 0))
        beacon_port = free.getsockname()[1]
    # It listens for the beacon an hour: only stopping at once lets it end within the guard.
    watcher = start_watcher(root, env, "--interval", "3600", "--beacon-port", str(beacon_port))
    try:
        for line in watcher.stdout:
            if "listening for an OAR Live server's beacon" in line:
                break
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not stop a watcher listening for a server")
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err


@pytest.mark.spawns
def test_watcher_process_marks_the_node_absent_on_sigterm(registry, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "oarnodesetting.log"
    script = bin_dir / "oarnodesetting"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        """))
    script.chmod(0o755)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    write_config(node_config(), root)
    node.write_state(root, Server("127.0.0.1", registry.port, Source.CONFIG), DETECTION, HOST)
    registry.nodes[HOST] = "Alive"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    watcher = start_watcher(root, env, "--interval", "0.2")
    try:
        deadline = time.monotonic() + 20
        while registry.node_queries < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert registry.node_queries >= 2, "the watcher never polled the server"
        assert watcher.poll() is None
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert log.read_text() == f"-s Absent -h {HOST} -n\n"
    assert f"{HOST} marked Absent" in out
    assert f"127.0.0.1 {HOST}" not in (root / "etc/hosts").read_text()  # not registered by it
    assert "127.0.0.1 oar-server" in (root / "etc/hosts").read_text()


# ---- against the project's own registration service ----------------------------------------


def project_registry(tmp_path: Path, oar, oar_conf: Path | None = None, check=None):
    """autoconf.registry (the server side) with `oar` behind it, on 127.0.0.1; the server's
    cluster address is another loopback address than the node's (127.0.0.1): a node may not
    claim the server's."""
    from autoconf.registry import Registry, RegistrySettings, ServerState

    if oar_conf is None:
        oar_conf = tmp_path / "server-oar.conf"
        oar_conf.write_text(OAR_CONF)
    hosts = tmp_path / "server-hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    settings = RegistrySettings(token=TOKEN, server=ServerState("oar-server", "127.0.0.254",
                                                                "127.0.0.0/8"),
                                oar_conf=oar_conf, hosts_file=hosts, state_timeout=60)
    return Registry(settings, oar, check=check)


def test_node_joins_through_the_projects_registration_service(root, commands, tmp_path):
    from tests.autoconf.fakenodes import serving
    from tests.autoconf.test_registry import FakeOar

    oar = FakeOar()
    registry = project_registry(tmp_path, oar, check=lambda host, address: None)
    with serving(registry) as port:
        config = node_config(server=f"127.0.0.1:{port}")
        assert node.handle(config, DETECTION, root, alive_deadline=5) == HOST
        assert sorted(int(r.cpuset) for r in oar.host_resources(HOST)) == [0, 1]
        assert (root / "etc/oar/oar.conf").read_text() == OAR_CONF
        assert "127.0.0.254 oar-server" in (root / "etc/hosts").read_text()

        for row in oar.host_resources(HOST):  # the server rebooted: OAR forgot the node
            oar.rows.remove(row)
        later = registry.clock() + 10  # the watcher's poll comes after the polls' snapshot aged
        registry.clock = lambda: later
        watcher = node.Watcher(config, root, node.read_state(root), port=port)
        watcher.tick()
        assert sorted(int(r.cpuset) for r in oar.host_resources(HOST)) == [0, 1]


def test_a_node_that_registers_is_in_the_others_hosts_before_the_server_makes_it_alive(
        root, commands, tmp_path):
    """The beacon, kicked when a name enters the server's hosts block, has every watcher fetch
    the block between two polls: the new name is in /etc/hosts before the new node's check
    ends (a job started on both finds both), not a poll interval later."""
    import threading

    from autoconf import beacon
    from autoconf.registry import check_token, hosts_tag, validate_registration
    from tests.autoconf.fakenodes import new_hostname, registration, serving
    from tests.autoconf.test_beacon import free_udp_port
    from tests.autoconf.test_registry import FakeOar

    seen_at_check: list[str] = []
    hosts = root / "etc/hosts"

    def check(host: str, address: str) -> None:
        if host != HOST:  # the newcomer: the server checks it (ssh) before making it Alive
            time.sleep(3)
            seen_at_check.append(hosts.read_text())

    registry = project_registry(tmp_path, FakeOar(), check=check)
    beacon_port = free_udp_port()
    with serving(registry) as port:
        sender = beacon.BeaconSender(f"127.0.0.1:{port}", beacon.cluster_id(TOKEN), "127.0.0.1",
                                     port=beacon_port, interval=60,
                                     hosts_tag=lambda: hosts_tag(registry))
        registry.hosts_changed = sender.kick
        with sender:
            config = node_config(server=f"127.0.0.1:{port}")
            node.handle(config, DETECTION, root, alive_deadline=5)
            watcher = node.Watcher(config, root, node.read_state(root), port=port,
                                   beacon_port=beacon_port, interval=60)
            watcher.tick()
            other = new_hostname()
            body = registration(TOKEN, other, "127.0.0.9")
            check_token(body, TOKEN)
            joined: list[dict] = []
            newcomer = threading.Thread(target=lambda: joined.append(
                registry.register(*validate_registration(body, registry.settings))))
            started = time.monotonic()
            newcomer.start()
            watcher.wait(started + 10, lambda: bool(joined))
            newcomer.join(10)
    assert joined and joined[0]["state"] == "Alive"
    assert time.monotonic() - started < 10, "the watcher waited for its next poll"
    assert seen_at_check and f"127.0.0.9 {other}" in seen_at_check[0], \
        "the node learnt the name only after the newcomer was Alive"
    assert f"127.0.0.9 {other}" in hosts.read_text()


def test_after_a_server_reboot_the_watcher_gets_back_the_names_registered_after_it(
        root, commands, tmp_path):
    """The server reboots (its hosts block starts empty); this node registers again first,
    the other node while the server checks this one, and the server's block is again the one
    before the reboot (same tag) when this node's registration returns with the shorter block
    of its time: the watcher must not keep that one (as it did, for good: 304 at every poll)."""
    from autoconf.registry import check_token, validate_registration
    from tests.autoconf.fakenodes import new_hostname, registration, serving
    from tests.autoconf.test_registry import FakeOar

    oar = FakeOar()
    during_check: list = []

    def check(host: str, address: str) -> None:
        if host == HOST and during_check:
            during_check.pop()()

    registry = project_registry(tmp_path, oar, check=check)
    other = new_hostname()

    def other_registers() -> None:
        body = registration(TOKEN, other, "127.0.0.9")
        check_token(body, TOKEN)
        registry.register(*validate_registration(body, registry.settings))

    hosts = root / "etc/hosts"
    server_hosts = registry.settings.hosts_file
    with serving(registry) as port:
        config = node_config(server=f"127.0.0.1:{port}")
        node.handle(config, DETECTION, root, alive_deadline=5)
        other_registers()
        watcher = node.Watcher(config, root, node.read_state(root), port=port)
        watcher.tick()
        assert f"127.0.0.9 {other}" in hosts.read_text()

        oar.rows.clear()  # the server rebooted: a new database, a new /etc/hosts
        server_hosts.write_text("127.0.0.1 localhost\n")
        now = [registry.clock()]
        registry.clock = lambda: now[0]
        now[0] += 10  # past the polls' shared snapshot
        during_check.append(other_registers)
        watcher.tick()  # registers again; the other node does while the server checks this one
        assert not during_check
        now[0] += 10
        watcher.tick()
    assert f"127.0.0.9 {other}" in hosts.read_text(), "the node lost the other node's name"


def test_the_watcher_follows_only_its_own_servers_new_hosts_tags_a_storm_spaced_out(
        registry, root, commands, monkeypatch):
    from autoconf import beacon

    join(registry, root)
    watcher = watcher_for(registry, root)
    watcher.tick()
    fetched = []
    monkeypatch.setattr(watcher, "_hosts", lambda client: fetched.append(client))
    ours, now = beacon.cluster_id(TOKEN), [100.0]
    watcher.clock = lambda: now[0]
    applied = "a" * 20
    watcher.hosts_tag = f'"{applied}"'  # the ETag of the block it applied

    def says(tag: str | None, registry: str | None = None, cluster: str = ours) -> bytes:
        return beacon.make_payload(registry or watcher.server.address, cluster, tag)

    assert not watcher.heard(says(applied))
    assert not watcher.heard(says(None))  # a beacon without a tag
    assert not watcher.heard(says("f" * 20, registry="10.9.9.9:6680"))  # another server
    assert not watcher.heard(says("f" * 20, cluster="another"))
    assert not watcher.heard(b"garbage")
    assert watcher.heard(says("f" * 20)) and len(fetched) == 1  # at once after a quiet spell
    for n in range(3):  # a storm: the next tags come within the spacing, each kept for later
        assert not watcher.heard(says(f"{n:020x}"))
        assert not watcher.follow_hosts()
    now[0] += node.HOSTS_FETCH_SPACING
    assert watcher.follow_hosts() and len(fetched) == 2, "the last tag, once the spacing passed"
    now[0] += node.HOSTS_FETCH_SPACING
    assert not watcher.follow_hosts(), "nothing announced since"
    assert len(fetched) == 2


@pytest.mark.integration
def test_real_oar_node_joins_rejoins_after_being_forgotten_and_goes_absent(
    oar_server, root, commands, monkeypatch, tmp_path
):
    from tests.autoconf.fakenodes import new_hostname, oar_node_sshd, serving

    host = new_hostname()
    detection = Detection(host, None, None, DETECTION.cpus, 2048, DETECTION.interfaces, "eth0")
    registry = project_registry(tmp_path, oar_server, Path("/etc/oar/oar.conf"))
    with serving(registry) as port, oar_node_sshd("127.0.0.1"):
        config = node_config(server=f"127.0.0.1:{port}")
        assert node.handle(config, detection, root, alive_deadline=60) == host
        assert {r.state for r in oar_server.host_resources(host)} == {"Alive"}

        # The server forgot the node (its database was reset): the watcher registers it again.
        for row in oar_server.change_state(host, "Dead", timeout=60):
            oar_server.remove(row.resource_id)
        assert oar_server.host_resources(host) == []
        later = registry.clock() + 10  # the watcher's poll comes after the polls' snapshot aged
        registry.clock = lambda: later
        watcher = node.Watcher(config, root, node.read_state(root), port=port)
        watcher.tick()
        assert sorted(int(r.cpuset) for r in oar_server.host_resources(host)) == [0, 1]

        # Shutdown: the real oarnodesetting marks the node Absent.
        commands.passthrough.add("oarnodesetting")
        assert watcher.mark_absent()
        assert {r.state for r in oar_server.wait_for_state(host, "Absent", timeout=60)} == {
            "Absent"
        }
