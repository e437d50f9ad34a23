"""What OAR knows, read through psql as oar_ro; OAR's admin commands as argument lists."""

from __future__ import annotations

import json
import subprocess

import pytest

from autoconf.oarstate import Oar, OarError
from boot.proc import CommandError

CONF = """\
DB_HOSTNAME="10.0.0.1"
DB_PORT="5432"
DB_BASE_LOGIN_RO="oar_ro"
DB_BASE_PASSWD_RO="s3cret"
"""


class Psql:
    """Answers psql as the database would; records what was asked and with which password."""

    def __init__(self, answer: str = "", fails: bool = False) -> None:
        self.answer, self.fails = answer, fails
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, env=None, timeout=None, **kwargs):
        self.calls.append((list(argv), env or {}))
        if self.fails:
            raise CommandError(list(argv), 2, "could not connect to server")
        return subprocess.CompletedProcess(argv, 0, self.answer, "")


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "oar.conf"
    path.write_text(CONF)
    return path


def test_resources_are_read_in_one_psql_call_as_the_read_only_user(conf):
    rows = [{"resource_id": 1, "network_address": "node-1", "state": "Alive",
             "next_state": "UnChanged", "cpu": 1, "core": 1, "thread": None, "cpuset": 0,
             "mem": 2}]  # fmt: skip
    psql = Psql(json.dumps(rows))
    [resource] = Oar(conf, psql).resources()
    assert (resource.host, resource.cpuset, resource.state) == ("node-1", 0, "Alive")
    argv, env = psql.calls[0]
    assert argv[:2] == ["psql", "-XAtq"] and argv[argv.index("-U") + 1] == "oar_ro"
    assert argv[argv.index("-h") + 1] == "10.0.0.1" and env["PGPASSWORD"] == "s3cret"


def test_the_columns_of_the_resources_table_name_the_properties(conf):
    psql = Psql(json.dumps(["core", "cpu", "cpuset", "resource_id", "state"]))
    assert {"cpu", "core", "cpuset"} <= Oar(conf, psql).columns()


def test_a_database_without_a_resources_table_or_unreachable_is_an_oar_error(conf):
    with pytest.raises(OarError, match="no resources table"):
        Oar(conf, Psql("[]")).columns()
    with pytest.raises(OarError, match="cannot read the columns"):
        Oar(conf, Psql(fails=True)).columns()
    with pytest.raises(OarError, match="unexpected answer"):
        Oar(conf, Psql("not json")).resources()


def test_only_oarnodesetting_add_commands_are_run_by_add(conf):
    with pytest.raises(OarError, match="not an oarnodesetting -a command"):
        Oar(conf, Psql()).add(["sh", "-c", "oarnodesetting -a"])


@pytest.mark.integration
def test_the_real_database_has_the_properties_the_registrations_set(oar_server):
    assert {"resource_id", "cpu", "core", "thread", "mem", "host", "cpuset"} <= oar_server.columns()
