"""ssh to the virtual cluster's VMs: this build's credentials, and the address of every VM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from boot.vcluster import cli as vcluster
from boot.vcluster import plan as vplan
from boot.vcluster import remote as vremote
from boot.vcluster.remote import Remote, RemoteError, read_credentials
from boot.vcluster.state import ClusterState

CREDENTIALS = "# The job account of oar-live (this build's own password). Keep it private.\n" \
              "user: user\npassword: 0f1e2d3c4b5a6978\n"


def cluster(tmp_path: Path, server_leases_nodes: bool = False) -> ClusterState:
    iso = tmp_path / "out" / "oar-live.iso"
    iso.parent.mkdir()
    iso.write_bytes(b"")
    (iso.parent / "oar-live.credentials").write_text(CREDENTIALS)
    plan = vplan.plan_machines(2, [1], [1024], 1, 1024)
    if server_leases_nodes:
        plan = tuple(m if m.role == "server" else replace(m, address="") for m in plan)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    return ClusterState(state_dir, "oarvc-0123abcd", iso=str(iso), machines=plan)


class FakeSsh:
    """Answers the ssh command lines Remote runs; records the target of each."""

    def __init__(self, hosts: dict[str, str]):
        self.hosts = hosts  # the server's /etc/hosts: OAR host name -> address
        self.targets: list[str] = []
        self.argvs: list[list[str]] = []
        self.dropped: list[str] = []
        self.lost_once = False

    def __call__(self, argv, check=True, env=None, timeout=None):
        target, command = argv[-2], argv[-1]
        self.targets.append(target)
        self.argvs.append(argv)
        out, status = "", 0
        if "-O" in argv:  # ssh -O exit: the shared connection is stopped
            self.dropped.append(argv[-1])
            return subprocess.CompletedProcess(argv, 0, "", "")
        if command == "hang":
            raise vremote.CommandError(["ssh", "hang"], -signal.SIGKILL, "timed out after 1 s")
        if command == "unreachable":
            return subprocess.CompletedProcess(argv, vremote.SSH_FAILED, "", "no route to host")
        if command.startswith("sudo -n oar-live wait "):
            job = command.split()[-1]
            if job == "6" and not self.lost_once:  # the connection drops once, mid-wait
                self.lost_once = True
                return subprocess.CompletedProcess(argv, vremote.SSH_FAILED, "", "broken pipe")
            out, status = {"6": ("6 Terminated\n", 0), "7": ("7 Terminated\n", 0),
                           "8": ("8 Error\n", 1), "9": ("9 Running\n", 3)}[job]
        elif command.startswith("getent ahostsv4 "):
            name = command.split()[-1]
            status = 0 if name in self.hosts else 2
            out = f"{self.hosts[name]}     STREAM {name}\n" if status == 0 else ""
        return subprocess.CompletedProcess(argv, status, out, "")


def test_the_password_comes_from_the_credentials_file_beside_the_iso(tmp_path, monkeypatch):
    state = cluster(tmp_path)
    monkeypatch.setattr(vremote, "run", FakeSsh({}))
    Remote(state).run("true")
    askpass = state.state_dir / "askpass"
    assert "0f1e2d3c4b5a6978" in askpass.read_text()
    assert askpass.stat().st_mode & 0o077 == 0  # only root reads the password


def test_credentials_are_read_as_build_iso_writes_them(tmp_path):
    state = cluster(tmp_path)
    found = read_credentials(Path(state.iso))
    assert (found.user, found.password) == ("user", "0f1e2d3c4b5a6978")


@pytest.mark.parametrize("content", [None, "user: user\n", "password: x\n", "\0\xff"])
def test_missing_or_incomplete_credentials_are_one_sentence(tmp_path, content):
    iso = tmp_path / "oar-live.iso"
    if content is not None:
        (tmp_path / "oar-live.credentials").write_text(content)
    with pytest.raises(RemoteError, match=r"oar-live\.credentials"):
        read_credentials(iso)


def test_a_given_password_wins_over_the_file(tmp_path, monkeypatch):
    state = cluster(tmp_path)
    monkeypatch.setattr(vremote, "run", FakeSsh({}))
    Remote(state, "chosen").run("true")
    assert "chosen" in (state.state_dir / "askpass").read_text()


def test_a_node_with_a_fixed_lease_is_reached_at_it(tmp_path, monkeypatch):
    state = cluster(tmp_path)
    ssh = FakeSsh({})
    monkeypatch.setattr(vremote, "run", ssh)
    Remote(state).run("hostname", state.machine("node-1"))
    assert ssh.targets == ["user@10.77.0.11"]


def test_a_node_the_server_leased_is_reached_where_the_server_registered_it(
        tmp_path, monkeypatch):
    state = cluster(tmp_path, server_leases_nodes=True)
    node = state.machine("node-2")
    ssh = FakeSsh({node.oar_hostname: "10.77.0.167"})
    monkeypatch.setattr(vremote, "run", ssh)
    Remote(state).run("hostname", node)
    assert ssh.targets == ["user@10.77.0.2", "user@10.77.0.167"]  # asked the server, then went


def test_a_leased_node_the_server_has_not_registered_yet_is_said(tmp_path, monkeypatch):
    state = cluster(tmp_path, server_leases_nodes=True)
    monkeypatch.setattr(vremote, "run", FakeSsh({}))
    with pytest.raises(RemoteError, match="node-1: the server gave it its address"):
        Remote(state).run("hostname", state.machine("node-1"))


def test_up_without_the_isos_credentials_stops_before_anything_starts(tmp_path, capsys):
    iso = tmp_path / "oar-live.iso"
    iso.write_bytes(b"")
    state_dir = tmp_path / "state"
    assert vcluster.main(["--state-dir", str(state_dir), "up", "--iso", str(iso)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"oar-vcluster: {tmp_path}/oar-live.credentials: cannot read")
    assert len(err.splitlines()) == 1 and not state_dir.exists()


def test_every_command_to_a_vm_shares_one_ssh_connection_kept_in_the_state_dir(
        tmp_path, monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))  # pytest's tmp_path is long
    try:
        state = replace(cluster(tmp_path), state_dir=short)
        ssh = FakeSsh({})
        monkeypatch.setattr(vremote, "run", ssh)
        Remote(state).run("hostname", state.machine("node-1"))
        Remote(state, share_connection=False).run("hostname", state.machine("node-1"))
    finally:
        shutil.rmtree(short)
    assert "-o ControlMaster=no" in " ".join(ssh.argvs.pop())  # `up` polls with fresh logins
    words = " ".join(ssh.argvs[0])
    assert "-o ControlMaster=auto" in words and "-o ControlPersist=" in words
    assert f"-o ControlPath={state.state_dir}/ssh-%h" in words
    # the CI's longest state directory still shares: its master's temporary socket fits
    assert vremote.Remote(replace(state, state_dir=Path("/var/tmp/oar-live-e2e/tmp-rest/"
                          "vcluster-pxe-proxy0"))).multiplexing()[1] == "ControlMaster=auto"
    long_dir = tmp_path / ("d" * 80)
    long_dir.mkdir()
    Remote(replace(state, state_dir=long_dir)).run("hostname", state.machine("node-1"))
    assert "-o ControlMaster=no" in " ".join(ssh.argvs[1])  # no socket path past sun_path


def test_a_job_is_waited_for_on_the_server_and_its_end_read_back(tmp_path, monkeypatch):
    state = cluster(tmp_path)
    monkeypatch.setattr(vremote, "run", FakeSsh({}))
    remote = Remote(state)
    assert remote.wait_job(7, 60) == "Terminated" and remote.wait_job(8, 60) == "Error"
    monkeypatch.setattr(vremote.time, "sleep", lambda s: None)
    assert remote.wait_job(6, 60) == "Terminated"  # waited through a lost connection
    with pytest.raises(RemoteError, match=r"job 9 did not end within 60 s \(9 Running\)"):
        remote.wait_job(9, 60)


def test_a_command_that_hangs_or_cannot_get_through_drops_the_shared_connection(
        tmp_path, monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))
    try:
        state = replace(cluster(tmp_path), state_dir=short)
        ssh = FakeSsh({})
        monkeypatch.setattr(vremote, "run", ssh)
        remote = Remote(state)
        remote.run("true", state.machine("node-1"))
        assert ssh.dropped == []
        with pytest.raises(RemoteError, match="node-1: .*timed out"):
            remote.run("hang", state.machine("node-1"))
        assert remote.run("unreachable", check=False).returncode == vremote.SSH_FAILED
        assert ssh.dropped == ["user@10.77.0.11", "user@10.77.0.2"]  # the next logs in afresh
    finally:
        shutil.rmtree(short)
