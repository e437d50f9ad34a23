"""The virtual cluster's state file: a torn, foreign or hostile state.json reads as no state."""

import json

import pytest

from boot.vcluster import state as vstate
from boot.vcluster.state import ClusterState, Machine
from tests.boot.test_bounded import ALIAS_BOMB


def recorded(tmp_path) -> dict:
    node = Machine("node-1", "node", 1, 2, 1024, "52:54:00:4f:4c:01", "10.77.0.11", pid=42)
    return ClusterState(tmp_path, "oarvc0", machines=(node,)).to_json()


def test_a_recorded_state_is_read_back(tmp_path):
    (tmp_path / vstate.STATE_FILE).write_text(json.dumps(recorded(tmp_path)))
    state = vstate.load(tmp_path)
    assert state is not None and state.machine("node-1").pid == 42


def test_no_state_file_is_no_state_and_says_nothing(tmp_path, capsys):
    assert vstate.load(tmp_path) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("content,reason", [
    (b'{"state_dir": "/tmp", "netns": "caf\xe9"}', "not UTF-8 text (byte 0xe9)"),
    (b"[" * 5000 + b"]" * 5000, "JSON nested deeper than 64 levels"),
    (b'{"netns": "x"' + b" " * vstate.MAX_STATE_BYTES + b"}", "larger than"),
    (ALIAS_BOMB, "not JSON"),
    (b"[1, 2]", "not a cluster state"),
    (b'{"state_dir": "/tmp", "netns": "x", "machines": {"a": 1}}', "not a cluster state"),
    (b'{"state_dir": "/tmp", "netns": "x", "machines": [1]}', "not a cluster state"),
    (b'{"state_dir": "/tmp", "netns": "x", "bogus": 1}', "not a cluster state"),
])
def test_a_hostile_state_file_is_one_line_and_no_state(tmp_path, capsys, content, reason):
    path = tmp_path / vstate.STATE_FILE
    path.write_bytes(content)
    assert vstate.load(tmp_path) is None
    err = capsys.readouterr().err
    assert err.startswith(f"oar-vcluster: {path}: ") and reason in err
    assert err.endswith("; ignored\n") and err.count("\n") == 1


@pytest.mark.parametrize("field,value", [
    ("pid", "1234"), ("pid", True), ("index", 1.5), ("mac", None), ("cpus", [2]),
])
def test_a_machine_field_of_the_wrong_type_is_no_state(tmp_path, capsys, field, value):
    data = recorded(tmp_path)
    data["machines"][0][field] = value
    (tmp_path / vstate.STATE_FILE).write_text(json.dumps(data))
    assert vstate.load(tmp_path) is None
    assert "a value of the wrong type; ignored" in capsys.readouterr().err


def test_a_netns_of_the_wrong_type_is_no_state(tmp_path, capsys):
    data = recorded(tmp_path) | {"netns": ["oarvc0"]}
    (tmp_path / vstate.STATE_FILE).write_text(json.dumps(data))
    assert vstate.load(tmp_path) is None
    assert "a value of the wrong type" in capsys.readouterr().err
