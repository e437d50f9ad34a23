"""A real OAR server on this machine for the integration tests of the server side."""

from __future__ import annotations

import pytest

from autoconf import server
from autoconf.oarstate import Oar
from tests.autoconf.fakenodes import HostNotReady, loopback_oar_server


@pytest.fixture(scope="session")
def oar_server() -> Oar:
    """OAR's real database and server, set up on loopback as the server role does.

    See fakenodes.loopback_oar_server: it writes the host's OAR and PostgreSQL configuration
    (a throw-away test machine), drops and creates the OAR database once per session, and stops
    at the end what it started. A second set-up finds the configuration unchanged.
    """
    try:
        with loopback_oar_server() as oar:
            assert server.ensure_database() is False, "`oar-database --check` passes once created"
            assert server.ensure_properties() is False, "the properties exist after set-up"
            yield oar
    except HostNotReady as exc:
        pytest.fail(str(exc))
