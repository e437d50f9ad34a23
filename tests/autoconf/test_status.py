"""`oar-autoconf status`: nodes, states, resources and whether oar.nbmin nodes are Alive."""

from __future__ import annotations

import json

import pytest

from autoconf import status
from autoconf.config import Config, write_config
from autoconf.oarstate import OarError, OarResource


def row(rid: int, host: str, cpuset: int | str, state: str = "Alive") -> OarResource:
    return OarResource(rid, host, state, "UnChanged", 1, rid, rid, str(cpuset), 4)


class FixedOar:
    def __init__(self, *batches: list[OarResource]) -> None:
        self.batches = list(batches)

    def resources(self) -> list[OarResource]:
        if len(self.batches) > 1:
            return self.batches.pop(0)
        if isinstance(self.batches[0], Exception):
            raise self.batches[0]
        return self.batches[0]


TWO_NODES = [
    row(1, "node-aaaaaaaaaaaa", 0), row(2, "node-aaaaaaaaaaaa", 1),
    row(3, "node-aaaaaaaaaaaa", 2), row(4, "node-aaaaaaaaaaaa", 3),
    row(5, "node-bbbbbbbbbbbb", 0, "Suspected"), row(6, "node-bbbbbbbbbbbb", 2, "Alive"),
]  # fmt: skip


@pytest.fixture
def root(tmp_path):
    write_config(Config(nbmin=1), tmp_path)
    return tmp_path


@pytest.mark.parametrize("ids, text", [([0, 1, 2, 3], "0-3"), ([5, 0, 2, 1], "0-2,5"),
                                       ([7], "7"), ([], ""), ([0, 2, 4], "0,2,4")])
def test_cpuset_ranges(ids, text):
    assert status.cpuset_ranges(ids) == text


def test_ready_when_nbmin_nodes_are_alive(root, capsys):
    nodes = TWO_NODES[:4] + [row(5, "node-bbbbbbbbbbbb", 0, "Absent")]
    assert status.main(["--root", str(root)], oar=FixedOar(nodes)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["node-aaaaaaaaaaaa", "Alive", "4", "0-3"]
    assert out[2].split() == ["node-bbbbbbbbbbbb", "Absent", "1", "0"]
    assert out[-1] == "cluster ready: 1 of 1 required nodes Alive (2 registered)"


def test_never_ready_while_a_resource_is_suspected_and_says_why(root, capsys):
    problem = "node-bbbbbbbbbbbb: disk full (/tmp has 0 KiB free)"
    (root / "run/oar-live").mkdir(parents=True, exist_ok=True)
    (root / "run/oar-live/checks.json").write_text(json.dumps({
        "node-aaaaaaaaaaaa": {"at": 1.0, "ok": True, "problem": None},
        "node-bbbbbbbbbbbb": {"at": 2.0, "ok": False, "problem": problem}}))
    assert status.main(["--root", str(root)], oar=FixedOar(TWO_NODES)) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:4] == ["node-bbbbbbbbbbbb", "Mixed", "2", "0,2"]
    assert out[2].endswith(f"({problem})") and "disk full" not in out[1]
    assert out[-1] == ("cluster not ready: 1 of 1 required nodes Alive, 1 resources Suspected "
                       "(2 registered)")
    assert status.main(["--root", str(root), "--json"], oar=FixedOar(TWO_NODES)) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is False and data["nodes"][1]["problem"] == problem


def test_not_ready_below_nbmin(tmp_path, capsys):
    write_config(Config(nbmin=2), tmp_path)
    assert status.main(["--root", str(tmp_path)], oar=FixedOar(TWO_NODES)) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("cluster not ready: 1 of 2")


def test_empty_cluster_says_so(root, capsys):
    assert status.main(["--root", str(root)], oar=FixedOar([])) == 1
    assert "(no node registered yet)" in capsys.readouterr().out


def test_json_output(root, capsys):
    assert status.main(["--root", str(root), "--json"], oar=FixedOar(TWO_NODES[:4])) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is True and data["nbmin"] == 1
    assert data["nodes"][0] == {"host": "node-aaaaaaaaaaaa", "state": "Alive", "resources": 4,
                                "cpusets": [0, 1, 2, 3], "suspected": 0}


def test_wait_polls_until_ready(root, capsys, monkeypatch):
    monkeypatch.setattr(status.time, "sleep", lambda s: None)
    oar = FixedOar([], [row(1, "node-aaaaaaaaaaaa", 0, "Absent")], [row(1, "node-aaaaaaaaaaaa", 0)])
    assert status.main(["--root", str(root), "--wait", "60"], oar=oar) == 0
    assert "cluster ready" in capsys.readouterr().out


def test_unreadable_database_is_one_line_and_status_2(root, capsys):
    assert status.main(["--root", str(root)], oar=FixedOar(OarError("cannot read OAR"))) == 2
    assert capsys.readouterr().err.strip() == "oar-autoconf status: cannot read OAR"


def test_before_boot_ran_status_says_what_is_missing(tmp_path, capsys):
    assert status.main(["--root", str(tmp_path)], oar=FixedOar([])) == 2
    assert "has `oar-autoconf boot` run?" in capsys.readouterr().err


@pytest.mark.integration
def test_status_of_the_real_cluster(oar_server, tmp_path, capsys):
    from autoconf.registry import Registry, RegistrySettings, ServerState
    from tests.autoconf.fakenodes import (
        new_hostname,
        oar_node_sshd,
        post,
        registration,
        serving,
    )

    write_config(Config(nbmin=1, token="t0ken"), tmp_path)
    (tmp_path / "hosts").write_text("")
    settings = RegistrySettings("t0ken", ServerState("localhost", "127.0.0.1", "127.0.0.0/8"),
                                hosts_file=tmp_path / "hosts")
    host = new_hostname()
    with serving(Registry(settings, oar_server)) as port, oar_node_sshd("127.0.5.1"):
        assert post(port, registration("t0ken", host, "127.0.5.1", cores=3))[0] == 200
        oar_server.wait_for_state(host, "Alive", timeout=60)
    assert status.main(["--root", str(tmp_path), "--json"], oar=oar_server) == 0
    nodes = {n["host"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert nodes[host] == {"host": host, "state": "Alive", "resources": 3, "cpusets": [0, 1, 2],
                           "suspected": 0}
