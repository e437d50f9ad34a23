"""End-to-end: a virtual OAR Live cluster (server + 2 nodes of 1 and 2 CPUs) from the built ISO.

One cluster serves the whole module, in order (booting three VMs under emulation is the
expensive part): resources as each VM has them, a two-node job (its output read on the server:
the home is shared), a one-core job in its cpuset, a person added on the server whose jobs on two
nodes pass a file through the shared home, a node reboot (mount and accounts back), a server
reboot (its database and accounts are gone; the nodes register again by themselves).
Each wait polls with a deadline and, on failure, shows the VMs' relevant serial-log lines.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest

from boot.vcluster import stage as vstage
from boot.vcluster import state as vstate
from boot.vcluster.cli import DEMO_JOB
from boot.vcluster.remote import Remote, RemoteError
from boot.vcluster.state import ClusterState
from tests.e2e import oarnodes

pytestmark = pytest.mark.e2e

NODE_CPUS = (1, 2)
VCLUSTER = [sys.executable, "-m", "boot.vcluster"]


def logs_of(state: ClusterState) -> str:
    parts = []
    for m in state.machines:
        path = state.serial_log(m)
        text = path.read_bytes().decode(errors="replace") if path.exists() else ""
        parts.append(f"--- {m.name} ({m.oar_hostname or 'server'}):\n{vstage.excerpt(text)}")
    return "\n".join(parts)


class Cluster:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.remote = Remote(state)
        self.last_resources: list[dict[str, str]] = []  # shown when a wait fails

    def wait(self, what: str, check: Callable[[], object], timeout: float, poll: float = 10):
        """check() until it returns something true; fail with the serial logs at the deadline."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except RemoteError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(poll)
        pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last}; oarnodes: "
                    f"{self.last_resources})\n{logs_of(self.state)}")

    def resources(self) -> list[dict[str, str]]:
        """`oarnodes` as the job user: one dict per resource (network_address, state, cpuset)."""
        return oarnodes.parse(self.remote.run("oarnodes", timeout=120).stdout)

    def alive(self) -> dict[str, list[int]] | None:
        """host -> sorted cpusets when every node's resources are Alive, else None."""
        rows = self.last_resources = self.resources()
        hosts = {m.oar_hostname for m in self.state.nodes}
        by_host: dict[str, list[int]] = {}
        for row in rows:
            by_host.setdefault(row["host"], []).append(int(row["cpuset"]))
        if set(by_host) != hosts or any(r["state"] != "Alive" for r in rows):
            return None
        return {h: sorted(c) for h, c in by_host.items()}

    def job(self, command: str, resources: str, timeout: float = 420) -> tuple[int, str]:
        job = self.remote.submit(command, resources)
        final = self.remote.wait_job(job, timeout)
        assert final == "Terminated", f"job {job} ended {final}\n{logs_of(self.state)}"
        return job, self.remote.job_output(job)

    def boots(self, name: str) -> int:
        text = self.state.serial_log(self.state.machine(name)).read_bytes().decode(
            errors="replace")
        return len(vstage.KERNEL_START.findall(text))


@pytest.fixture(scope="module")
def cluster(artifacts, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("vcluster")
    up = VCLUSTER + ["--state-dir", str(state_dir), "up", "--iso", str(artifacts / "oar-live.iso"),
                     "--nodes", "2", "--smp", ",".join(map(str, NODE_CPUS)), "--timeout", "900"]
    started = time.monotonic()
    result = subprocess.run(up, capture_output=True, text=True)
    print(result.stdout, result.stderr, f"up took {time.monotonic() - started:.0f} s", sep="\n")
    try:
        state = vstate.load(state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        yield Cluster(state)
    finally:
        subprocess.run(VCLUSTER + ["--state-dir", str(state_dir), "down", "--keep-logs"],
                       check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert state is None or state.netns not in left
    assert not vstate.our_processes(state_dir)


def expected_resources(state: ClusterState) -> dict[str, list[int]]:
    return {m.oar_hostname: list(range(m.cpus)) for m in state.nodes}


def all_registered(cluster) -> dict[str, list[int]] | None:
    """Every node Alive with all its CPUs: a registration adds a node's resources one by one
    (one oarnodesetting each), so the first ones are Alive before the last is there."""
    found = cluster.alive()
    return found if found == expected_resources(cluster.state) else None


def test_oarnodes_lists_exactly_the_cpus_of_each_vm(cluster):
    found = cluster.wait("every node Alive", cluster.alive, 120)
    assert found == expected_resources(cluster.state)
    assert [m.cpus for m in cluster.state.nodes] == list(NODE_CPUS)


def test_a_job_on_two_nodes_runs_on_both(cluster):
    job, out = cluster.job(DEMO_JOB, "nodes=2")
    assert sorted(out.split()) == sorted(m.oar_hostname for m in cluster.state.nodes), out


def test_a_one_core_job_is_confined_to_one_core(cluster, image):
    big = next(m for m in cluster.state.nodes if m.cpus == 2)
    command = "nproc --all; grep Cpus_allowed_list /proc/self/status; cat /proc/self/cgroup"
    line = f"cd && oarsub -p \"host='{big.oar_hostname}'\" -l core=1 '{command}'"
    out = cluster.remote.run(line, timeout=180).stdout
    job = int(re.search(r"OAR_JOB_ID=(\d+)", out).group(1))
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    out = cluster.remote.run(f"cat ~/OAR.{job}.stdout", big, timeout=60).stdout
    allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", out).group(1)
    assert out.split()[0] == "2", out  # the VM has two CPUs ...
    assert re.fullmatch(r"[01]", allowed), out  # ... and the job may use only one of them
    assert image.job_cgroup(cluster.state.user, job).search(out), out


PERSON = "alice"


def as_person(command: str) -> str:
    """`command` run by the person on the server, from their home."""
    return f"sudo -n -u {PERSON} -i sh -c {shlex.quote(command)}"


def person_uids(cluster) -> dict[str, str]:
    """machine name -> the person's `uid:gid` there ('' when it has no such account)."""
    found = {}
    for m in cluster.state.machines:
        out = cluster.remote.run(f"getent passwd {PERSON} || true", m, timeout=60).stdout
        fields = out.strip().split(":")
        found[m.name] = ":".join(fields[2:4]) if len(fields) == 7 else ""
    return found


def person_job(cluster, node, command: str) -> str:
    """Run `command` as the person on `node`; its stdout, read on the server."""
    line = f"oarsub -p \"host='{node.oar_hostname}'\" -l nodes=1 {shlex.quote(command)}"
    out = cluster.remote.run(as_person(line), timeout=180).stdout
    job = int(re.search(r"OAR_JOB_ID=(\d+)", out)[1])
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    return cluster.remote.run(f"sudo -n cat /home/{PERSON}/OAR.{job}.stdout", timeout=60).stdout


def test_a_person_added_on_the_server_runs_jobs_that_share_files_through_the_home(cluster):
    added = cluster.remote.run(f"sudo -n oar-live adduser {PERSON}", timeout=120).stdout
    assert "UID" in added, added
    refused = cluster.remote.run("sudo -n oar-live adduser postgres", timeout=60, check=False)
    assert refused.returncode == 1 and "system account" in refused.stderr, refused.stderr
    uids = cluster.wait("every node knows the person",
                        lambda: (u := person_uids(cluster)) and len(set(u.values())) == 1
                        and "" not in u.values() and u, 60, 5)
    first, second = cluster.state.nodes
    wrote = person_job(cluster, first, "id -u; hostname; hostname > ~/from-first-node")
    assert wrote.split() == [next(iter(uids.values())).split(":")[0], first.oar_hostname], wrote
    read = person_job(cluster, second, "hostname; cat ~/from-first-node")
    assert read.split() == [second.oar_hostname, first.oar_hostname], read


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
HOME_MOUNT = "findmnt -n -o SOURCE,FSTYPE /home"


def test_a_rebooted_node_comes_back_alive_with_the_same_resources(cluster):
    node = cluster.state.nodes[-1]
    before = cluster.remote.run(BOOT_ID, node, timeout=60).stdout.strip()
    boots = cluster.boots(node.name)
    cluster.remote.run("sudo -n systemctl reboot", node, timeout=60, check=False)
    cluster.wait(f"{node.name} rebooting", lambda: cluster.boots(node.name) > boots, 120, 2)
    found = cluster.wait(f"{node.name} Alive again", lambda: all_registered(cluster), 420)
    assert found == expected_resources(cluster.state)
    ids = Counter(r["id"] for r in cluster.resources())
    assert len(ids) == sum(m.cpus for m in cluster.state.nodes) and max(ids.values()) == 1
    # OAR's rows alone may be the ones from before the reboot: the node itself must be back,
    # running a job pinned to it on its new boot.
    line = f"cd && oarsub -p \"host='{node.oar_hostname}'\" -l nodes=1 '{BOOT_ID}'"
    job = int(re.search(r"OAR_JOB_ID=(\d+)", cluster.remote.run(line, timeout=180).stdout)[1])
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    after = cluster.remote.job_output(job).strip()  # on the server: the mount is back
    assert after and after != before, f"the job ran on boot {after!r}, not after the reboot"
    server_address = cluster.remote.address(cluster.state.server)
    assert cluster.remote.run(HOME_MOUNT, node, timeout=60).stdout.split() == [
        f"{server_address}:/", "nfs4"]
    uids = person_uids(cluster)
    assert uids[node.name] == uids["server"] != "", uids


def test_after_a_server_reboot_the_nodes_register_again_and_jobs_run(cluster):
    server = cluster.state.server
    boots = cluster.boots("server")
    cluster.remote.run("sudo -n systemctl reboot", server, timeout=60, check=False)
    cluster.wait("server rebooting", lambda: cluster.boots("server") > boots, 120, 2)
    found = cluster.wait("both nodes Alive on the new server", lambda: all_registered(cluster),
                         600, 15)
    assert found == expected_resources(cluster.state)
    # The server's home was in RAM: the new one holds none of the old jobs' outputs (the new
    # database numbers jobs from 1 again), and the person is gone with its accounts.
    assert cluster.remote.run("ls ~/OAR.1.stdout", timeout=60, check=False).returncode != 0
    cluster.wait("the nodes drop the person the server no longer has",
                 lambda: set(person_uids(cluster).values()) == {""}, 60, 5)
    job, out = cluster.job(DEMO_JOB, "nodes=2")  # written through the nodes' mounts, kept
    assert sorted(out.split()) == sorted(m.oar_hostname for m in cluster.state.nodes), out

