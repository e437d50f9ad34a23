"""End-to-end: a virtual OAR Live cluster (server + 2 nodes of 1 and 2 CPUs) from the built ISO.

One cluster serves the whole module, in order (booting three VMs under emulation is the
expensive part): resources as each VM has them, a two-node job, a one-core job in its cpuset,
a user's own 2-node MPI program, an interactive 2-node job, `oar-live check` passing and then
failing for a node whose /home is not the server's, a node reboot, a server reboot (its
database is gone; the nodes register again by themselves).
Each wait polls with a deadline and, on failure, shows the VMs' relevant serial-log lines.
"""

from __future__ import annotations

import json
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


def test_a_user_runs_a_two_node_mpi_program_compiled_on_the_server(cluster):
    """mpicc on the server, a bare mpirun in a 2-node job: the shared home carries the binary,
    OAR Live's mpirun takes the job's nodes and starts its daemons through oarsh."""
    cluster.remote.run("cd && cp /usr/lib/oar-live/autoconf/mpi/hello.c . && "
                       "mpicc -O2 -o mpi-hello hello.c", timeout=300)
    job, out = cluster.job("mpirun ./mpi-hello", "nodes=2")
    hosts = set(re.findall(r"^hello from rank \d+ of 3 on (\S+)$", out, re.M))
    assert hosts == {m.oar_hostname for m in cluster.state.nodes}, out


def test_an_interactive_job_gives_a_shell_on_the_first_node_and_oarsh_reaches_the_second(cluster):
    # `script` gives oarsub -I the terminal a person at the console or on ssh -t would have
    typed = ('echo "first=$(hostname)"; '
             'echo "second=$(oarsh $(sort -u $OAR_NODEFILE | tail -1) hostname </dev/null)"; '
             'exit')  # oarsh (ssh) would read the rest of the typed lines, `exit` included
    line = (f"cd && printf '%s\\n' {shlex.quote(typed)} | "
            "timeout 400 script -qec 'oarsub -I -l nodes=2' /dev/null")
    out = cluster.remote.run(line, timeout=450).stdout.replace("\r", "")
    first = re.search(r"^first=(\S+)$", out, re.M)
    second = re.search(r"^second=(\S+)$", out, re.M)
    nodes = {m.oar_hostname for m in cluster.state.nodes}
    assert first and second, out
    assert {first[1], second[1]} == nodes, out


def oar_live_check(cluster) -> tuple[int, dict]:
    result = cluster.remote.run("sudo -n oar-live check --json", timeout=900, check=False)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def test_oar_live_check_passes_on_the_cluster(cluster):
    """Needs /home shared by the server (NFS) on every node: the jobs run in a folder only the
    server made."""
    status, report = oar_live_check(cluster)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert status == 0 and report["ok"] and not failed, report
    assert (report["nodes"], report["cores"]) == (2, sum(NODE_CPUS)), report
    assert report["ready_s"] > 0 and report["latency_us"] > 0 and report["bandwidth_MBps"] > 0
    names = {c["name"] for c in report["checks"]}
    assert names == {"ready", "job", "cpuset", "home", "mpi"}, report


def test_oar_live_check_fails_naming_a_node_whose_home_is_not_the_servers(cluster):
    """The node's own empty folder over the user's home there: its node watcher would mount a
    missing /home again within seconds, it leaves this alone (/home stays the server's)."""
    node = cluster.state.nodes[-1]  # rebooted by the next scenario: its view comes back
    user = cluster.state.user
    cluster.remote.run(f"sudo -n mount -t tmpfs -o mode=0755 not-the-servers /home/{user}",
                       node, timeout=60)
    status, report = oar_live_check(cluster)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert status == 1 and not report["ok"], report
    assert failed and all(node.oar_hostname in (c["node"] or "") for c in failed), report


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


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
    after = cluster.remote.run(f"cat ~/OAR.{job}.stdout", node, timeout=60).stdout.strip()
    assert after and after != before, f"the job ran on boot {after!r}, not after the reboot"


def test_after_a_server_reboot_the_nodes_register_again_and_jobs_run(cluster):
    server = cluster.state.server
    boots = cluster.boots("server")
    cluster.remote.run("sudo -n systemctl reboot", server, timeout=60, check=False)
    cluster.wait("server rebooting", lambda: cluster.boots("server") > boots, 120, 2)
    found = cluster.wait("both nodes Alive on the new server", lambda: all_registered(cluster),
                         600, 15)
    assert found == expected_resources(cluster.state)
    for node in cluster.state.nodes:  # the new database numbers jobs from 1 again
        cluster.remote.run("rm -f ~/OAR.*.stdout ~/OAR.*.stderr", node, timeout=60)
    job, out = cluster.job(DEMO_JOB, "nodes=2")
    assert sorted(out.split()) == sorted(m.oar_hostname for m in cluster.state.nodes), out

