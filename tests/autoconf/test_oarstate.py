"""What OAR knows, read through psql as oar_ro; OAR's admin commands as argument lists."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time

import pytest

from autoconf import oarstate
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.resources import Resource
from boot.proc import CommandError

CONF = """\
DB_HOSTNAME="10.0.0.1"
DB_PORT="5432"
DB_BASE_LOGIN_RO="oar_ro"
DB_BASE_PASSWD_RO="s3cret"
"""


TABLE = [  # OAR's resources table, more columns than OAR Live reads, not in id order
    {"resource_id": 2, "network_address": "node-2", "state": "Absent", "next_state": "Alive",
     "cpu": 2, "core": 3, "thread": None, "cpuset": "1", "mem": 4, "host": "node-2",
     "besteffort": "YES"},
    {"resource_id": 1, "network_address": "node-1", "state": "Alive", "next_state": None,
     "cpu": 1, "core": 1, "thread": 7, "cpuset": "0,4", "mem": 2, "host": "node-1",
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
        OarResource(1, "node-1", "Alive", "UnChanged", 1, 1, 7, "0,4", 2),
        OarResource(2, "node-2", "Absent", "Alive", 2, 3, None, "1", 4),
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


def test_one_hosts_view_is_its_rows_and_the_others_highest_ids(conf):
    answer = {"mine": [TABLE[1]], "top": {"cpu": 2, "core": 3, "thread": None}}
    psql = Psql(json.dumps(answer))
    mine, top = Oar(conf, psql).host_view("node-1")
    assert mine == [OarResource(1, "node-1", "Alive", "UnChanged", 1, 1, 7, "0,4", 2)]
    assert top == {"cpu": 2, "core": 3, "thread": 0}
    sql = psql.calls[0][0][-1]
    assert "WHERE network_address = 'node-1'" in sql and "<> 'node-1'" in sql
    with pytest.raises(OarError, match="not a host name"):
        Oar(conf, psql).host_view("x' OR '1'='1")


def test_a_node_is_added_by_one_oar_process_and_must_get_every_resource(conf):
    from autoconf.resources import Resource

    rows = [Resource("node-1", 1, 1 + i, 1 + i, i, 2) for i in range(2)]
    runner = Psql("11\n12\n")
    assert Oar(conf, runner).add_node("node-1", rows) == [11, 12]
    [(argv, env)] = runner.calls
    assert argv[:5] == ["runuser", "-u", "oar", "--", "perl"] and argv[7:9] == ["node-1", "Absent"]
    assert env == {"OARCONFFILE": str(conf)}
    with pytest.raises(OarError, match="OAR added 1 resources, not 2"):
        Oar(conf, Psql("11\n")).add_node("node-1", rows)
    with pytest.raises(OarError) as failed:
        Oar(conf, Psql(fails=True)).add_node("node-1", rows)
    assert str(failed.value) == ("adding node-1's resources through OAR::IO failed (exit status "
                                 "2): could not connect to server")


@pytest.mark.integration
def test_the_real_database_has_the_properties_the_registrations_set(oar_server):
    assert {"resource_id", "cpu", "core", "thread", "mem", "host", "cpuset"} <= oar_server.columns()


def test_resources_and_jobs_not_finished_are_read_in_one_psql_call_with_their_hosts(conf):
    jobs = [{"job_id": 3, "job_user": "user", "job_name": None, "state": "Running",
             "start_time": 1700000000, "hosts": ["node-1"]}]
    rows = [{"resource_id": 1, "network_address": "node-1", "state": "Alive",
             "next_state": "UnChanged", "cpu": 1, "core": 1, "thread": None, "cpuset": "0",
             "mem": 2}]
    psql = Psql(json.dumps({"resources": rows, "jobs": jobs}))
    resources, unfinished = Oar(conf, psql).cluster_view()
    assert [(r.resource_id, r.host, r.cpuset) for r in resources] == [(1, "node-1", "0")]
    assert unfinished == jobs
    [(argv, env)] = psql.calls
    sql = argv[-1]
    assert argv[argv.index("-U") + 1] == "oar_ro" and env["PGPASSWORD"] == "s3cret"
    assert "'Running'" in sql and "'Terminated'" not in sql and "assigned_resources" in sql


def test_a_cluster_answer_of_the_wrong_shape_is_an_oar_error(conf):
    with pytest.raises(OarError, match="jobs are not a list"):
        Oar(conf, Psql('{"resources": [], "jobs": {"job_id": 1}}')).cluster_view()
    with pytest.raises(OarError, match="not an object"):
        Oar(conf, Psql("[]")).cluster_view()
    with pytest.raises(OarError, match="unexpected answer"):
        Oar(conf, Psql('{"resources": [{"state": "Alive"}], "jobs": []}')).cluster_view()


@pytest.mark.integration
def test_the_real_database_answers_the_cluster_query(oar_server):
    resources, jobs = oar_server.cluster_view()
    assert resources == oar_server.resources()
    assert isinstance(jobs, list)
    assert all({"job_id", "job_user", "state", "hosts"} <= set(job) for job in jobs)


@pytest.mark.integration
def test_real_oar_logs_when_a_resource_went_alive_and_knows_no_unknown_job(oar_server):
    host = f"check-{secrets.token_hex(3)}"
    started = int(time.time()) - 1
    oar_server.add_node(host, [Resource(host, 1, 1, None, "0", 1)], "Absent")
    try:
        oar_server.set_state(host, "Alive")
        (row,) = oar_server.wait_for_state(host, "Alive", timeout=60)
        since = oar_server.alive_since(started)
        assert started <= since[row.resource_id] <= time.time() + 1
        assert row.resource_id not in oar_server.alive_since(int(time.time()) + 3600)
        assert oar_server.job_states([2**31 - 1]) == {}
    finally:
        for r in oar_server.change_state(host, "Dead", timeout=60):
            oar_server.remove(r.resource_id)


def test_jobs_and_alive_times_read_as_numbers_from_the_database(tmp_path):
    conf = tmp_path / "oar.conf"
    conf.write_text(CONF)
    answers = iter([json.dumps([{"job_id": 7, "state": "Terminated", "exit_code": 0},
                                {"job_id": 8, "state": "Error", "exit_code": None}]),
                    json.dumps([{"resource_id": 3, "t": 1700000000}])])
    oar = Oar(conf, run=lambda argv, **kw: subprocess.CompletedProcess(argv, 0, next(answers)))
    assert oar.job_states([7, 8, 9]) == {7: ("Terminated", 0), 8: ("Error", None)}
    assert oar.alive_since(1699999000) == {3: 1700000000}


def test_reads_run_the_newest_postgresql_client_itself_not_debians_perl_wrapper(tmp_path):
    for version in ("9", "15", "17"):
        (tmp_path / version / "bin").mkdir(parents=True)
        if version != "17":
            (tmp_path / version / "bin" / "psql").write_text("")
    (tmp_path / "17" / "lib").mkdir()
    first, *rest = oarstate.client_path(tmp_path).split(os.pathsep)
    assert first == str(tmp_path / "15" / "bin") and rest == os.environ["PATH"].split(os.pathsep)
    assert oarstate.client_path(tmp_path / "none") == os.environ["PATH"]


def test_a_read_finds_psql_on_that_path(conf):
    psql = Psql("[]")
    Oar(conf, psql).resources()
    [(argv, env)] = psql.calls
    assert argv[0] == "psql" and env["PATH"] == oarstate.client_path()


class StateRequests:
    """oar-server for one resource of node-1: `oarnodesetting -s` writes next_state, then each
    read applies what `outcomes` says the server did with the request: "applied" (the state
    changes), "pending" (next_state still the request) or "dropped" (its node checker changed
    the resource in the same instant: Suspected, next_state back to UnChanged)."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes
        self.row = {"resource_id": 1, "network_address": "node-1", "state": "Alive",
                    "next_state": "UnChanged", "cpu": 1, "core": 1, "thread": None,
                    "cpuset": "0", "mem": 1}
        self.asked: list[str] = []

    def __call__(self, argv, env=None, timeout=None, **kwargs):
        if argv[0] == "oarnodesetting":
            self.asked.append(argv[argv.index("-s") + 1])
            self.row["next_state"] = self.asked[-1]
            return subprocess.CompletedProcess(argv, 0, "", "")
        if self.row["next_state"] != "UnChanged" and self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome == "applied":
                self.row.update(state=self.row["next_state"], next_state="UnChanged")
            elif outcome == "dropped":
                self.row.update(state="Suspected", next_state="UnChanged")
        answer = {"mine": [self.row], "top": {"cpu": None, "core": None, "thread": None}}
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer), "")


def test_a_state_request_oar_dropped_is_asked_again(tmp_path, monkeypatch):
    conf = tmp_path / "oar.conf"
    conf.write_text(CONF)
    monkeypatch.setattr(oarstate, "REASK_SECONDS", 0)
    server = StateRequests(["dropped", "pending", "pending", "applied"])
    (row,) = Oar(conf, run=server).change_state("node-1", "Dead", timeout=5, interval=0)
    assert row.state == "Dead"
    assert server.asked == ["Dead", "Dead"]  # once more after the drop, not while pending


def test_a_pending_state_request_is_waited_for_not_repeated(tmp_path, monkeypatch):
    conf = tmp_path / "oar.conf"
    conf.write_text(CONF)
    monkeypatch.setattr(oarstate, "REASK_SECONDS", 0)
    server = StateRequests(["pending"] * 5 + ["applied"])
    assert Oar(conf, run=server).change_state("node-1", "Absent", timeout=5, interval=0)[
        0].state == "Absent"
    assert server.asked == ["Absent"]


def test_waiting_for_a_state_asks_nothing_and_names_the_state_it_saw(tmp_path):
    conf = tmp_path / "oar.conf"
    conf.write_text(CONF)
    server = StateRequests([])
    with pytest.raises(OarError, match=r"node-1: oar-server did not set Dead within 0.1 s "
                                       r"\(still Alive; is oar-server running\?\)"):
        Oar(conf, run=server).wait_for_state("node-1", "Dead", timeout=0.1, interval=0.01)
    assert server.asked == []
