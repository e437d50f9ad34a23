"""What OAR knows, read through psql as oar_ro; OAR's admin commands as argument lists."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time

import pytest

from autoconf.oarstate import Oar, OarError, OarResource
from boot.proc import CommandError

CONF = """\
DB_HOSTNAME="10.0.0.1"
DB_PORT="5432"
DB_BASE_LOGIN_RO="oar_ro"
DB_BASE_PASSWD_RO="s3cret"
"""


TABLE = [  # OAR's resources table, more columns than OAR Live reads, not in id order
    {"resource_id": 2, "network_address": "node-2", "state": "Absent", "next_state": "Alive",
     "cpu": 2, "core": 3, "thread": None, "cpuset": 1, "mem": 4, "host": "node-2",
     "besteffort": "YES"},
    {"resource_id": 1, "network_address": "node-1", "state": "Alive", "next_state": None,
     "cpu": 1, "core": 1, "thread": 7, "cpuset": 0, "mem": 2, "host": "node-1",
     "besteffort": "YES"},
]  # fmt: skip
_SELECT = re.compile(r"\(SELECT (?P<columns>[a-z_, ]+) FROM resources\) r")


class Psql:
    """Answers psql as the database would: the columns and order the query asks of TABLE.

    Records what was asked and with which password; a query it does not know is a psql error.
    """

    def __init__(self, answer: str | None = None, fails: bool = False) -> None:
        self.answer, self.fails = answer, fails
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, env=None, timeout=None, **kwargs):
        self.calls.append((list(argv), env or {}))
        if self.fails:
            raise CommandError(list(argv), 2, "could not connect to server")
        answer = self.answer if self.answer is not None else self._select(argv[-1])
        return subprocess.CompletedProcess(argv, 0, answer, "")

    @staticmethod
    def _select(sql: str) -> str:
        if "FROM information_schema.columns WHERE table_name = 'resources'" in sql:
            return json.dumps(sorted(TABLE[0]))
        match = _SELECT.search(sql)
        if match is None:
            raise CommandError(["psql"], 1, f"ERROR: a query this fake does not know: {sql}")
        columns = [c.strip() for c in match["columns"].split(",")]
        rows = [{c: row[c] for c in columns} for row in TABLE]
        if "ORDER BY r.resource_id" in sql:
            rows.sort(key=lambda row: row["resource_id"])
        return json.dumps(rows)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "oar.conf"
    path.write_text(CONF)
    return path


def test_resources_are_read_in_one_psql_call_as_the_read_only_user(conf):
    psql = Psql()
    resources = Oar(conf, psql).resources()
    assert resources == [
        OarResource(1, "node-1", "Alive", "UnChanged", 1, 1, 7, 0, 2),
        OarResource(2, "node-2", "Absent", "Alive", 2, 3, None, 1, 4),
    ]
    [(argv, env)] = psql.calls
    assert argv[:2] == ["psql", "-XAtq"] and argv[argv.index("-U") + 1] == "oar_ro"
    assert argv[argv.index("-h") + 1] == "10.0.0.1" and env["PGPASSWORD"] == "s3cret"


def test_the_columns_of_the_resources_table_name_the_properties(conf):
    assert Oar(conf, Psql()).columns() == set(TABLE[0])


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


@pytest.mark.integration
def test_real_oar_logs_when_a_resource_went_alive_and_knows_no_unknown_job(oar_server):
    host = f"check-{secrets.token_hex(3)}"
    started = int(time.time()) - 1
    oar_server.add(["oarnodesetting", "-a", "-h", host, "-p", f"host={host}", "-p", "cpuset=0"])
    try:
        oar_server.set_state(host, "Alive")
        (row,) = oar_server.wait_for_state(host, "Alive", timeout=60)
        since = oar_server.alive_since(started)
        assert started <= since[row.resource_id] <= time.time() + 1
        assert row.resource_id not in oar_server.alive_since(int(time.time()) + 3600)
        assert oar_server.jobs([2**31 - 1]) == {}
    finally:
        oar_server.set_state(host, "Dead")
        for r in oar_server.wait_for_state(host, "Dead", timeout=60):
            oar_server.remove(r.resource_id)


def test_jobs_and_alive_times_read_as_numbers_from_the_database(tmp_path):
    conf = tmp_path / "oar.conf"
    conf.write_text(CONF)
    answers = iter([json.dumps([{"job_id": 7, "state": "Terminated", "exit_code": 0},
                                {"job_id": 8, "state": "Error", "exit_code": None}]),
                    json.dumps([{"resource_id": 3, "t": 1700000000}])])
    oar = Oar(conf, run=lambda argv, **kw: subprocess.CompletedProcess(argv, 0, next(answers)))
    assert oar.jobs([7, 8, 9]) == {7: ("Terminated", 0), 8: ("Error", None)}
    assert oar.alive_since(1699999000) == {3: 1700000000}
