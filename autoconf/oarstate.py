"""What OAR knows about resources, and the OAR commands that change it.

Reads go straight to the `resources` table as the read-only user `oar_ro` (one `psql` call,
far cheaper than one `oarnodes` Perl process per question): every resource, or one host's with
the other hosts' highest cpu/core/thread ids. Writes go through OAR's own code: a node's
resources are added in one OAR::IO transaction (autoconf.oaradd), states and removals through
OAR's admin commands (`oarnodesetting`, `oarremoveresource`), always as argument lists. State
changes are applied asynchronously by oar-server, hence `wait_for_state` and
`change_state`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoconf import oaradd
from autoconf.oarconf import OAR_CONF, parse
from autoconf.resources import Resource
from boot import proc

__all__ = ["Oar", "OarError", "OarResource", "Runner"]

Runner = Callable[..., object]

_ROWS = (
    "SELECT coalesce(json_agg(r ORDER BY r.resource_id), '[]') FROM ("
    "SELECT resource_id, network_address, state, next_state, cpu, core, thread, cpuset, mem"
    " FROM resources{where}) r"
)
_QUERY = _ROWS.format(where="")
# One host's rows and the highest ids of the others: what a registration needs, in one read
# whose answer does not grow with the cluster.
_HOST_QUERY = (
    "SELECT json_build_object('mine', (" + _ROWS.format(where=" WHERE network_address = '{host}'")
    + "), 'top', (SELECT json_build_object('cpu', max(cpu), 'core', max(core), 'thread',"
    " max(thread)) FROM resources WHERE network_address <> '{host}'))"
)
REASK_SECONDS = 1.0  # a state request oar-server dropped is asked again after this long
_HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # what may go into the queries above
# The jobs not finished yet (OAR's states before Terminated/Error), with the hosts they hold.
JOB_STATES_LIVE = ("Waiting", "Hold", "toLaunch", "toAckReservation", "Launching", "Running",
                   "Finishing", "Suspended", "Resuming")
_JOBS_QUERY = (
    "SELECT coalesce(json_agg(j ORDER BY j.job_id), '[]') FROM ("
    "SELECT job_id, job_user, job_name, state, start_time,"
    " (SELECT coalesce(json_agg(DISTINCT r.network_address), '[]')"
    " FROM assigned_resources a JOIN resources r ON r.resource_id = a.resource_id"
    " WHERE a.moldable_job_id = jobs.assigned_moldable_job) AS hosts"
    " FROM jobs WHERE state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES_LIVE) + ")) j"
)
# What the cluster page shows, in one psql call (one client start, one server connection).
_CLUSTER_QUERY = ("SELECT json_build_object('resources', (" + _QUERY + "), 'jobs', ("
                  + _JOBS_QUERY + "))")
_COLUMNS_QUERY = (
    "SELECT coalesce(json_agg(column_name::text ORDER BY column_name), '[]')"
    " FROM information_schema.columns WHERE table_name = 'resources'"
)


class OarError(Exception):
    """OAR could not be read or did not do what was asked."""


POSTGRESQL_LIB = Path("/usr/lib/postgresql")


@functools.cache
def client_path(lib: Path = POSTGRESQL_LIB) -> str:
    """PATH with the newest installed PostgreSQL's bin/ first, so that `psql` is the client
    itself: Debian's /usr/bin/psql is pg_wrapper, a Perl program that finds the cluster's
    version and then runs it (under software emulation, a Perl start per read)."""
    path = os.environ.get("PATH", os.defpath)
    versions = [d for d in lib.glob("*/bin") if d.parent.name.isdigit() and (d / "psql").is_file()]
    if not versions:
        return path
    newest = max(versions, key=lambda d: int(d.parent.name))
    return f"{newest}{os.pathsep}{path}"


def _resource_rows(rows: Any) -> list[OarResource]:
    try:
        return [OarResource.from_row(row) for row in rows]
    except (KeyError, TypeError) as exc:
        raise OarError(f"unexpected answer from the OAR database: {exc}") from None


def _job_rows(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise OarError("unexpected answer from the OAR database: jobs are not a list")
    return rows


@dataclass(frozen=True)
class OarResource:
    """One row of OAR's resources table, the columns OAR Live cares about."""

    resource_id: int
    host: str
    state: str
    next_state: str
    cpu: int | None
    core: int | None
    thread: int | None
    cpuset: str  # as OAR stores it: "3", or "0,4" for a core of OAR 2.6
    mem: int | None

    @classmethod
    def from_row(cls, row: dict) -> OarResource:
        def number(key: str) -> int | None:
            value = row.get(key)
            return None if value is None else int(value)

        return cls(
            resource_id=int(row["resource_id"]),
            host=str(row["network_address"]),
            state=str(row["state"]),
            next_state=str(row.get("next_state") or "UnChanged"),
            cpu=number("cpu"),
            core=number("core"),
            thread=number("thread"),
            cpuset=str(row.get("cpuset") or "0"),
            mem=number("mem"),
        )

    def value(self, name: str) -> str:
        """The property `name` as the string `oarnodesetting -p name=...` would have set."""
        value = self.host if name == "host" else getattr(self, name, None)
        return "" if value is None else str(value)


class Oar:
    """The OAR installation described by an oar.conf (read at each call: it may be rewritten)."""

    def __init__(self, conf: Path = Path("/") / OAR_CONF, run: Runner = proc.run) -> None:
        self.conf = conf
        self.run = run

    def _db(self) -> dict[str, str]:
        try:
            values = parse(self.conf.read_text())
        except OSError as exc:
            raise OarError(f"cannot read {self.conf}: {exc.strerror}") from None
        return values

    def _query(self, sql: str, what: str) -> Any:
        """The JSON value `sql` selects, read as the read-only user; OarError naming `what`."""
        db = self._db()
        argv = [
            "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
            "-h", db.get("DB_HOSTNAME", "127.0.0.1"),
            "-p", db.get("DB_PORT", "5432"),
            "-U", db.get("DB_BASE_LOGIN_RO", "oar_ro"),
            "-d", db.get("DB_BASE_NAME", "oar"),
            "-c", sql,
        ]  # fmt: skip
        env = {"PGPASSWORD": db.get("DB_BASE_PASSWD_RO", ""), "PGCONNECT_TIMEOUT": "10",
               "PATH": client_path()}
        try:
            result = self.run(argv, env=env, timeout=60)
        except proc.CommandError as exc:
            raise OarError(f"cannot read {what}: {exc}") from None
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise OarError(f"unexpected answer from the OAR database: {exc}") from None

    def resources(self) -> list[OarResource]:
        """Every resource OAR has, ordered by id."""
        return _resource_rows(self._query(_QUERY, "OAR's resources"))

    def cluster_view(self) -> tuple[list[OarResource], list[dict[str, Any]]]:
        """Every resource (by id) and the jobs not finished yet (id, user, name, state, start
        time, hosts; by id), in one read."""
        view = self._query(_CLUSTER_QUERY, "OAR's resources and jobs")
        if not isinstance(view, dict):
            raise OarError("unexpected answer from the OAR database: not an object")
        return _resource_rows(view.get("resources")), _job_rows(view.get("jobs"))

    def columns(self) -> set[str]:
        """The resources table's columns: OAR's own and the properties added with oarproperty.

        A quick proof that the database exists and oar_ro can read it.
        """
        names = self._query(_COLUMNS_QUERY, "the columns of OAR's resources table")
        if not isinstance(names, list) or "resource_id" not in names:
            raise OarError("the OAR database has no resources table")
        return {str(name) for name in names}

    def job_states(self, ids: Sequence[int]) -> dict[int, tuple[str, int | None]]:
        """job id -> (state, exit code) of these jobs; a job OAR does not know is left out."""
        wanted = ",".join(str(int(i)) for i in ids) or "NULL"
        rows = self._query(
            "SELECT coalesce(json_agg(j), '[]') FROM (SELECT job_id, state, exit_code"
            f" FROM jobs WHERE job_id IN ({wanted})) j", "OAR's jobs")
        try:
            return {int(r["job_id"]): (str(r["state"]),
                                       None if r["exit_code"] is None else int(r["exit_code"]))
                    for r in rows}
        except (KeyError, TypeError, ValueError) as exc:
            raise OarError(f"unexpected answer from the OAR database: {exc}") from None

    def alive_since(self, after: int) -> dict[int, int]:
        """resource id -> the first time (epoch seconds, at or after `after`) OAR logged it
        Alive; a resource never logged Alive since then is left out."""
        rows = self._query(
            "SELECT coalesce(json_agg(l), '[]') FROM (SELECT resource_id, min(date_start) AS t"
            " FROM resource_logs WHERE attribute = 'state' AND value = 'Alive'"
            f" AND date_start >= {int(after)} GROUP BY resource_id) l", "OAR's resource logs")
        try:
            return {int(r["resource_id"]): int(r["t"]) for r in rows}
        except (KeyError, TypeError, ValueError) as exc:
            raise OarError(f"unexpected answer from the OAR database: {exc}") from None

    def host_resources(self, host: str) -> list[OarResource]:
        """The resources of `host` (one host's rows read, not the whole table)."""
        return self.host_view(host)[0]

    def host_view(self, host: str) -> tuple[list[OarResource], dict[str, int]]:
        """The resources of `host`, and the highest cpu, core and thread ids of the others."""
        if not _HOST_NAME.match(host):
            raise OarError(f"not a host name: {host[:80]!r}")
        answer = self._query(_HOST_QUERY.format(host=host), f"OAR's resources of {host}")
        try:
            mine = [OarResource.from_row(row) for row in answer["mine"]]
            top = {name: int(answer["top"][name] or 0) for name in ("cpu", "core", "thread")}
        except (KeyError, TypeError, ValueError) as exc:
            raise OarError(f"unexpected answer from the OAR database: {exc}") from None
        return mine, top

    def add_node(self, host: str, resources: list[Resource], state: str = "Absent") -> list[int]:
        """Add all of `host`'s resources in `state`, in one transaction; their ids."""
        try:
            argv = oaradd.add_argv(host, resources, state)
        except ValueError as exc:
            raise OarError(str(exc)) from None
        env = {"OARCONFFILE": str(self.conf)}
        try:
            result = self.run(argv, env=env, timeout=120)
        except proc.CommandError as exc:  # its command line is the whole script: not shown
            lines = [line for line in exc.stderr.splitlines() if line.strip()]
            raise OarError(f"adding {host}'s resources through OAR::IO failed (exit status "
                           f"{exc.returncode}): {lines[-1] if lines else 'no message'}") from None
        try:
            return oaradd.parse_ids(result.stdout, len(resources))
        except ValueError as exc:
            raise OarError(f"adding {host}'s resources: {exc}") from None

    def set_state(self, host: str, state: str) -> None:
        """Ask oar-server to move every resource of `host` to `state` (without waiting for jobs)."""
        self._admin(["oarnodesetting", "-n", "-s", state, "-h", host])

    def remove(self, resource_id: int) -> None:
        """Delete a Dead resource."""
        self._admin(["oarremoveresource", str(resource_id)])

    def change_state(
        self, host: str, state: str, timeout: float = 60.0, interval: float = 0.2
    ) -> list[OarResource]:
        """Move every resource of `host` to `state` and wait until oar-server has; its resources.

        oar-server can drop a request: `oarnodesetting` writes it as the resources' next_state,
        and a change its node checker makes in the same instant (a resource found unreachable
        set Suspected) puts next_state back to UnChanged. A resource found that way, not yet in
        `state`, is asked again, at most every REASK_SECONDS.
        """
        self.set_state(host, state)
        return self._wait(host, state, timeout, interval, reask=True)

    def wait_for_state(
        self, host: str, state: str, timeout: float = 60.0, interval: float = 0.2
    ) -> list[OarResource]:
        """Poll until every resource of `host` is in `state`; its resources, or OarError."""
        return self._wait(host, state, timeout, interval, reask=False)

    def _wait(self, host: str, state: str, timeout: float, interval: float,
              reask: bool) -> list[OarResource]:
        asked = time.monotonic()
        deadline = asked + timeout
        while True:
            current = self.host_resources(host)
            if all(r.state == state for r in current):
                return current
            now = time.monotonic()
            if now >= deadline:
                states = sorted({r.state for r in current})
                raise OarError(
                    f"{host}: oar-server did not set {state} within {timeout:g} s "
                    f"(still {', '.join(states)}; is oar-server running?)"
                )
            if reask and now - asked >= REASK_SECONDS and any(
                    r.state != state and r.next_state == "UnChanged" for r in current):
                self.set_state(host, state)
                asked = now
            time.sleep(interval)

    def _admin(self, argv: Sequence[str]) -> None:
        try:
            self.run(list(argv), timeout=120)
        except proc.CommandError as exc:
            raise OarError(str(exc)) from None
