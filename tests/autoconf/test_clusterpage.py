"""The cluster page's data (/cluster.json): nodes with their stage, jobs, readiness; the CGI."""

from __future__ import annotations

import io
import json

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


def cgi(root, oar, **environ) -> tuple[list[str], bytes, int]:
    out = io.BytesIO()
    status = clusterpage.main({"REQUEST_METHOD": "GET", **environ}, root, out, oar)
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    return head.decode().split("\r\n"), body, status


def test_the_cgi_answers_json_not_cached(root):
    head, body, status = cgi(root, FixedOar([row(1, A, 0)]))
    assert status == 0 and head[0] == "Status: 200 OK"
    assert "Content-Type: application/json; charset=utf-8" in head
    assert "Cache-Control: no-store" in head
    assert f"Content-Length: {len(body)}" in head
    assert json.loads(body)["nodes"][0]["host"] == A


def test_head_has_no_body(root):
    head, body, _ = cgi(root, FixedOar([]), REQUEST_METHOD="HEAD")
    assert head[0] == "Status: 200 OK" and body == b""


@pytest.mark.parametrize("environ, status", [
    ({"REQUEST_METHOD": "POST"}, "Status: 405 Method Not Allowed"),
    ({"QUERY_STRING": "x" * (clusterpage.MAX_QUERY_STRING + 1)}, "Status: 400 Bad Request"),
])
def test_input_is_refused_with_a_one_line_reason(root, environ, status):
    head, body, code = cgi(root, FixedOar([]), **environ)
    assert code == 1 and head[0] == status and json.loads(body)["error"]


def test_an_unreadable_database_is_a_503_that_says_why(root):
    head, body, _ = cgi(root, FixedOar([], error=OarError("cannot read OAR's resources: boom")))
    assert head[0] == "Status: 503 Service Unavailable"
    assert json.loads(body) == {"error": "cannot read OAR's resources: boom"}
