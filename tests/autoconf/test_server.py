"""Server role: each step changes only what differs, against a fake root and fake commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from autoconf import etchosts, nfs, oarconf, server
from autoconf.block import BEGIN
from autoconf.config import Config, Role
from autoconf.detect import Detection
from autoconf.registry import SERVER_STATE, ServerState
from tests.autoconf.fakenodes import detection_json
from tests.autoconf.test_oarconf import TEMPLATE

HBA = """\
local   all             postgres                                peer
host    all             all             127.0.0.1/32            scram-sha-256
"""


class FakeSystem:
    """The commands the server role runs, with the state they would change."""

    def __init__(self, properties: set[str] | None = None, systemd: bool = False) -> None:
        self.hostname = "debian"
        self.running = {"postgresql": False, "oar-server": False, server.REGISTRY_UNIT: False,
                        nfs.NFS_UNIT: False}
        self.database = False
        self.properties = set(properties or {"cpuset", "drain", "last_available_upto"})
        self.calls: list[list[str]] = []
        self.systemd = systemd
        self.readable = True  # oar_ro can read the database (its password matches)

    def __call__(self, argv, check=True, input=None, env=None, timeout=None, cwd=None):  # noqa: A002
        argv = list(argv)
        self.calls.append(argv)
        rc, out = self._answer(argv)
        if check and rc != 0:
            from boot.proc import CommandError

            raise CommandError(argv, rc, "failed")
        return subprocess.CompletedProcess(argv, rc, out, "")

    def _answer(self, argv: list[str]) -> tuple[int, str]:
        match argv:
            case ["hostname"]:
                return 0, self.hostname + "\n"
            case ["hostname", name]:
                self.hostname = name
            case ["service", name, "status"] | ["systemctl", "status", name]:
                return (0 if self.running[name] else 3), ""
            case ["service", name, ("start" | "restart")] | [
                "systemctl", ("start" | "restart"), name
            ]:
                self.running[name] = True
            case ["systemctl", "is-active", "--quiet", name]:
                return (0 if self.running[name] else 3), ""
            case ["pgrep", "-x", "Almighty"]:
                return (0 if self.running["oar-server"] else 1), ""
            case ["pg_isready", *_]:
                return (0 if self.running["postgresql"] else 2), ""
            case ["oar-database", "--check"]:
                return (0 if self.database else 1), "[Failed] Cannot connect\n"
            case ["oar-database", "--create", "--db-is-local"]:
                assert self.running["postgresql"], "the database is created on a running server"
                self.database = True
            case ["oarproperty", "-l"]:
                return 0, "\n".join(sorted(self.properties)) + "\n"
            case ["psql", *_, "-c", query] if "information_schema.columns" in query:
                if not (self.running["postgresql"] and self.database and self.readable):
                    return 2, ""
                return 0, json.dumps(sorted({"resource_id", "state", *self.properties}))
            case ["exportfs", "-ra"]:
                pass
            case ["oarproperty", "-a", name] | ["oarproperty", "-c", "-a", name]:
                assert name not in self.properties, "oarproperty -a fails on an existing one"
                self.properties.add(name)
            case _:
                raise AssertionError(f"unexpected command {argv}")
        return 0, ""

    def ran(self, *prefix: str) -> bool:
        return any(call[: len(prefix)] == list(prefix) for call in self.calls)


def server_root(tmp_path: Path,
                hosts: str = "127.0.0.1 localhost\n127.0.1.1 oar-server debian\n") -> Path:
    """A fake root holding what the server role reads: oar.conf's template, PostgreSQL, hosts."""
    (tmp_path / oarconf.TEMPLATE).parent.mkdir(parents=True)
    (tmp_path / oarconf.TEMPLATE).write_text(TEMPLATE)
    (tmp_path / "etc/postgresql/15/main/conf.d").mkdir(parents=True)
    (tmp_path / "etc/postgresql/15/main/pg_hba.conf").write_text(HBA)
    (tmp_path / "etc/hosts").write_text(hosts)
    (tmp_path / "etc/hostname").write_text("debian\n")
    (tmp_path / "proc").mkdir(exist_ok=True)  # /home is a filesystem of its own (test_nfs:
    with (tmp_path / "proc/mounts").open("a") as mounts:  # one on the live overlay)
        mounts.write(f"overlay / overlay rw 0 0\ntmpfs {tmp_path}/home tmpfs rw 0 0\n")
    return tmp_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return server_root(tmp_path)


def server_detection(address: str = "10.0.0.1/24") -> Detection:
    data = detection_json("node-525400000001", "10.0.0.1", cores=2)
    data["interfaces"][0]["addresses"] = [address]
    return Detection.from_json(data)


def test_first_boot_sets_up_everything(root, capsys):
    system = FakeSystem()
    name = server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert name == server.SERVER_HOSTNAME == system.hostname
    assert (root / "etc/hostname").read_text() == "oar-server\n"
    hosts = (root / "etc/hosts").read_text()
    assert etchosts.parse_block(hosts) == {"oar-server": "10.0.0.1"}
    assert "127.0.1.1 debian" in hosts.splitlines(), "the name moves to the cluster address"
    main = root / "etc/postgresql/15/main"
    assert "listen_addresses = 'localhost,10.0.0.1'" in (main / "conf.d/oar-live.conf").read_text()
    hba = (main / "pg_hba.conf").read_text()
    assert "host    all             all             127.0.0.1/32" in hba, "Debian's rules stay"
    for user in ("oar", "oar_ro"):
        assert any(line.split()[:4] == ["host", "oar", user, "10.0.0.0/24"]
                   and line.split()[4] in ("scram-sha-256", "md5") for line in hba.splitlines())
    conf = oarconf.parse((root / oarconf.OAR_CONF).read_text())
    secrets = oarconf.read_secrets(root)
    assert conf["DB_HOSTNAME"] == "10.0.0.1" and conf["SERVER_HOSTNAME"] == "oar-server"
    assert conf["DB_BASE_PASSWD"] == secrets.db_password
    assert system.database and system.running["oar-server"] and system.running["postgresql"]
    assert {"cpu", "core", "thread", "mem", "host"} <= system.properties
    assert system.ran("oarproperty", "-c", "-a", "host"), "host is a string property"
    state = ServerState.read(root)
    assert (state.address, state.network, state.detection_hostname) == (
        "10.0.0.1", "10.0.0.0/24", "node-525400000001")
    out = capsys.readouterr()
    assert out.out.count("changed") >= 7 and "oar-autoconf serve" in out.err


def test_second_run_changes_nothing(root, capsys):
    system = FakeSystem()
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    system.calls.clear()
    capsys.readouterr()
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert not system.ran("oar-database", "--create")
    assert not system.ran("oarproperty", "-a") and not system.ran("oarproperty", "-c")
    assert not any(action in call for call in system.calls for action in ("start", "restart"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "server:" in line]
    assert lines and all(" unchanged" in line for line in lines), lines


def test_only_missing_properties_are_added(root):
    system = FakeSystem(properties={"cpuset", "cpu", "core", "host"})
    system.running["postgresql"] = True
    system.database = True
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    added = [call[-1] for call in system.calls if call[:1] == ["oarproperty"] and "-a" in call]
    assert added == ["thread", "mem"]


def test_existing_database_is_not_created_again(root):
    system = FakeSystem()
    system.database = True
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert system.ran("psql"), "one read of the database proves it is there"
    assert not system.ran("oar-database"), "no Perl check when the read works"


def test_a_database_oar_ro_cannot_read_is_checked_by_oar_before_anything_is_created(root):
    system = FakeSystem()
    system.database, system.readable = True, False
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert system.ran("oar-database", "--check")
    assert not system.ran("oar-database", "--create")


def test_changed_postgresql_settings_restart_a_running_postgresql(root):
    system = FakeSystem()
    system.running["postgresql"] = True
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert system.ran("service", "postgresql", "restart")


def test_a_new_address_rewrites_settings_and_restarts_services(root):
    system = FakeSystem()
    server.handle(Config(role=Role.SERVER), server_detection("10.0.0.1/24"), root, system)
    system.calls.clear()
    server.handle(Config(role=Role.SERVER), server_detection("10.0.0.1/16"), root, system)
    hba = (root / "etc/postgresql/15/main/pg_hba.conf").read_text()
    assert "10.0.0.0/16" in hba and "10.0.0.0/24" not in hba
    assert hba.count(BEGIN) == 1
    assert ServerState.read(root).network == "10.0.0.0/16"


def test_with_systemd_the_registration_service_is_started(root):
    (root / "run/systemd/system").mkdir(parents=True)
    system = FakeSystem(systemd=True)
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert system.ran("systemctl", "start", "postgresql")
    assert system.ran("systemctl", "start", server.REGISTRY_UNIT)
    assert not system.ran("service")
    system.calls.clear()
    server.handle(Config(role=Role.SERVER), server_detection(), root, system)
    assert not system.ran("systemctl", "restart", server.REGISTRY_UNIT)


def test_machine_without_network_serves_on_loopback(root):
    data = detection_json("node-525400000001", "10.0.0.1", cores=1)
    data["interfaces"] = []
    data["boot_interface"] = None
    system = FakeSystem()
    server.handle(Config(role=Role.SERVER), Detection.from_json(data), root, system)
    conf = (root / "etc/postgresql/15/main/conf.d/oar-live.conf").read_text()
    assert "listen_addresses = 'localhost'" in conf
    assert json.loads((root / SERVER_STATE).read_text())["address"] == "127.0.0.1"


def test_a_failing_command_becomes_one_server_error(root):
    system = FakeSystem()

    def broken(argv, **kwargs):
        if argv[:2] == ["oar-database", "--create"]:
            from boot.proc import CommandError

            raise CommandError(argv, 1, "psql: could not connect")
        return system(argv, **kwargs)

    with pytest.raises(server.ServerError, match="creating the OAR database failed"):
        server.handle(Config(role=Role.SERVER), server_detection(), root, broken)


def test_systemd_unit_runs_the_service_in_the_foreground():
    unit = Path(__file__).parents[2] / "boot/systemd" / server.REGISTRY_UNIT
    text = unit.read_text()
    assert "ExecStart=/usr/local/sbin/oar-autoconf serve" in text.splitlines()
    assert "Restart=on-failure" in text.splitlines()


@pytest.mark.integration
def test_real_server_steps_are_idempotent(oar_server):
    """After the session's set-up, running the database steps again changes nothing."""
    from tests.autoconf.fakenodes import LOOPBACK_SERVER

    resources = oar_server.resources()
    assert server.ensure_postgresql(LOOPBACK_SERVER) is False
    assert server.ensure_oar_conf(LOOPBACK_SERVER) is False
    assert server.ensure_database() is False
    assert server.ensure_oar_server() is False
    assert server.ensure_properties() is False
    assert oar_server.resources() == resources, "the steps again changed OAR's resources"
