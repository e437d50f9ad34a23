"""The cluster page's data (/cluster.json): nodes with their stage, jobs, readiness; the WSGI
application Apache serves it with."""

from __future__ import annotations

import io
import json
import runpy
import threading
import urllib.error
import urllib.request
import wsgiref.simple_server
from pathlib import Path

import pytest

from autoconf import clusterpage, etchosts
from autoconf.oarstate import OarError, OarResource


def row(rid: int, host: str, cpuset: str, state: str = "Alive", mem: int = 2) -> OarResource:
    return OarResource(rid, host, state, "UnChanged", 1, rid, rid, str(cpuset), mem)


class FixedOar:
    """What OAR's database answers (the real reads are tested in test_oarstate.py)."""

    def __init__(self, resources, jobs=(), error: Exception | None = None) -> None:
        self._resources, self._jobs, self.error = list(resources), list(jobs), error

    def cluster_view(self):
        if self.error:
            raise self.error
        return self._resources, self._jobs


A, B, C = "node-aaaaaaaaaaaa", "node-bbbbbbbbbbbb", "node-cccccccccccc"
JOB = {"job_id": 7, "job_user": "user", "job_name": None, "state": "Running",
       "start_time": 1700000000, "hosts": [A]}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    etchosts.write_block({"oar-server": "10.0.0.1", A: "10.0.0.11", B: "10.0.0.12",
                          C: "10.0.0.13"}, tmp_path / etchosts.HOSTS)
    site = tmp_path / clusterpage.SITE
    site.parent.mkdir(parents=True)
    site.write_text(json.dumps({"server": {"hostname": "oar-server", "address": "10.0.0.1"},
                                "nbmin": 2, "oar_version": "2.6.1-1", "job_user": "user"}))
    return tmp_path


def test_each_node_has_its_stage_state_cpus_and_memory(root):
    oar = FixedOar([row(1, A, 0), row(2, A, 1), row(3, B, 0, "Absent", 4)], [JOB])
    data = clusterpage.cluster(root, oar)
    nodes = {n["host"]: n for n in data["nodes"]}
    assert "oar-server" not in nodes  # the server is not a node
    assert nodes[A] == {"host": A, "address": "10.0.0.11", "state": "Alive", "stage": "Alive",
                        "cpus": 2, "cpusets": "0-1", "mem_gib": 2}
    assert (nodes[B]["stage"], nodes[B]["state"], nodes[B]["mem_gib"]) == ("in OAR", "Absent", 4)
    assert (nodes[C]["stage"], nodes[C]["cpus"]) == ("registered", 0)
    assert (data["alive"], data["nbmin"], data["ready"]) == (1, 2, False)
    assert data["jobs"] == [JOB]
    assert data["server"]["address"] == "10.0.0.1"
    assert data["site"]["oar_version"] == "2.6.1-1"
    assert data["links"]["monika"] == "/monika"


def test_ready_once_nbmin_nodes_are_alive(root):
    data = clusterpage.cluster(root, FixedOar([row(1, A, 0), row(2, B, 0)]))
    assert (data["alive"], data["ready"]) == (2, True)


def test_without_the_boot_s_site_file_the_page_still_answers(tmp_path):
    data = clusterpage.cluster(tmp_path, FixedOar([row(1, A, 0)]))
    assert data["server"] == {} and data["nbmin"] == 1 and data["nodes"][0]["host"] == A


def get(root, oar, **environ) -> tuple[str, dict[str, str], bytes]:
    status, headers, body = clusterpage.respond({"REQUEST_METHOD": "GET", **environ}, root, oar)
    return status, dict(headers), body


def test_the_page_data_is_json_not_cached(root):
    status, head, body = get(root, FixedOar([row(1, A, 0)]))
    assert status == "200 OK"
    assert head["Content-Type"] == "application/json; charset=utf-8"
    assert head["Cache-Control"] == "no-store"
    assert head["Content-Length"] == str(len(body))
    assert json.loads(body)["nodes"][0]["host"] == A


def test_head_has_no_body(root):
    status, head, body = get(root, FixedOar([]), REQUEST_METHOD="HEAD")
    assert status == "200 OK" and body == b"" and int(head["Content-Length"]) > 0


@pytest.mark.parametrize("environ, status", [
    ({"REQUEST_METHOD": "POST"}, "405 Method Not Allowed"),
    ({"QUERY_STRING": "x" * (clusterpage.MAX_QUERY_STRING + 1)}, "400 Bad Request"),
])
def test_input_is_refused_with_a_one_line_reason(root, environ, status):
    answer, _, body = get(root, FixedOar([]), **environ)
    assert answer == status and json.loads(body)["error"]


def test_an_unreadable_database_is_a_503_that_says_why(root):
    status, _, body = get(root, FixedOar([], error=OarError("cannot read OAR's resources: boom")))
    assert status == "503 Service Unavailable"
    assert json.loads(body) == {"error": "cannot read OAR's resources: boom"}


def test_a_wsgi_server_serves_the_application_over_http(root, monkeypatch):
    """The entry point mod_wsgi calls, behind a real HTTP server on loopback (the stdlib's)."""
    monkeypatch.setattr(clusterpage, "cluster", lambda *a: {"nodes": [], "ready": False})
    with wsgiref.simple_server.make_server("127.0.0.1", 0, clusterpage.application,
                                           handler_class=QuietHandler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/cluster.json"
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert reply.status == 200 and reply.headers["Cache-Control"] == "no-store"
                assert json.loads(reply.read()) == {"nodes": [], "ready": False}
            request = urllib.request.Request(url, data=b"x", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"
        finally:
            server.shutdown()


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_a_person_at_the_server_gets_the_same_data_printed(root, capsys):
    out = io.StringIO()
    assert clusterpage.main(root, out, FixedOar([row(1, A, 0)])) == 0
    assert json.loads(out.getvalue())["nodes"][0]["host"] == A
    assert clusterpage.main(root, out, FixedOar([], error=OarError("boom"))) == 1
    assert capsys.readouterr().err == "oar-live cluster page: boom\n"


def test_the_file_mod_wsgi_loads_is_the_application_where_the_site_says():
    project = Path(__file__).resolve().parents[2]
    wsgi = project / "autoconf" / "cluster.wsgi"
    assert runpy.run_path(str(wsgi))["application"] is clusterpage.application
    site = (project / "recipes" / "steps" / "common" / "web.yaml").read_text()
    # the agent's copy step puts autoconf/ at /usr/lib/oar-live/autoconf
    assert "WSGIScriptAlias /cluster.json /usr/lib/oar-live/autoconf/cluster.wsgi" in site
    assert "python-path=/usr/lib/oar-live " in site
