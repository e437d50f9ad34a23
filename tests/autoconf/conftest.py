"""A real OAR server on this machine for the integration tests of the server side.

`oar_server` (session scope) sets up PostgreSQL, /etc/oar/oar.conf, the OAR database,
oar-server and OAR's properties with the server role's own steps, on loopback: this is a
throw-away test machine, so it writes the host's /etc/oar/oar.conf, /etc/oar-live/secrets.yaml
and PostgreSQL settings. The database is dropped and created afresh once per session (so the
passwords always match the secrets file). Whatever it started (PostgreSQL, oar-server) it stops
at the end; the configuration stays, and a second run finds it unchanged.
Needs root and the Debian packages postgresql oar-server oar-server-pgsql oar-user
oar-user-pgsql oar-node libjson-perl.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

import pytest

from autoconf import proc, server
from autoconf.oarstate import Oar

LOOPBACK_SERVER = server.ServerHost("localhost", ipaddress.IPv4Interface("127.0.0.1/8"))
NEEDED = ("psql", "pg_isready", "oar-database", "oarnodesetting", "oarnodes", "oarproperty",
          "oarremoveresource")


def _running(name: str) -> bool:
    return server.service(name, "status")


@pytest.fixture(scope="session")
def oar_server() -> Oar:
    """OAR's real database and server, set up as the server role does; an Oar reading it."""
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(
            "the server-side integration tests need root and the Debian packages postgresql "
            "oar-server oar-server-pgsql oar-user oar-user-pgsql oar-node libjson-perl "
            f"(missing: {', '.join(missing) or 'root'}); `make host-test-deps` installs them"
        )
    postgres_was_running = _running("postgresql")
    oar_was_running = _running("oar-server")
    if oar_was_running:
        server.service("oar-server", "stop")  # it holds connections to the database we drop
    server.ensure_postgresql(LOOPBACK_SERVER)
    server.ensure_oar_conf(LOOPBACK_SERVER)
    for sql in ("DROP DATABASE IF EXISTS oar", "DROP ROLE IF EXISTS oar",
                "DROP ROLE IF EXISTS oar_ro"):
        proc.run(["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-c", sql], timeout=60)
    assert server.ensure_database() is True, "a dropped database must be created again"
    assert server.ensure_database() is False, "`oar-database --check` must pass once created"
    server.ensure_oar_server()
    server.ensure_properties()
    assert server.ensure_properties() is False, "properties exist after the first run"
    yield Oar(Path("/etc/oar/oar.conf"))
    if not oar_was_running:
        server.service("oar-server", "stop")
    if not postgres_was_running:
        server.service("postgresql", "stop")
