"""End-to-end: a virtual OAR Live cluster (server + 2 nodes of 1 and 2 CPUs) from the built ISO.

One cluster serves the whole module, in order (booting three VMs under emulation is the
expensive part). It comes up the way a room of machines switched on at once does: the nodes
boot first, the server last (`oar-vcluster up --nodes-first`), so every node registers in one
storm. Then: resources as each VM has them, each role's OAR units, a two-node job that must
start within FIRST_JOB_SECONDS of `up` returning (its output read on the server: the home is
shared), a job submitted through the REST API that OAR's web tools show Running in a browser,
a one-core job in its cpuset (two busy loops on one CPU, nothing left after it), a person
added on the server who runs a 2-node MPI program of their own, an interactive 2-node job with
oarsh, `oar-live check` passing (files between nodes through the home, MPI) and then failing
for a node whose /home is not the server's, a node reboot while the server is loaded (mount
and accounts back), a server reboot (its database and accounts are gone; the nodes register
again by themselves and run a job).
Each wait polls with a deadline and, on failure, shows the VMs' relevant serial-log lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from autoconf import units
from boot.vcluster import stage as vstage
from boot.vcluster import state as vstate
from boot.vcluster.cli import DEMO_JOB
from boot.vcluster.remote import Remote, RemoteError, read_credentials
from boot.vcluster.state import ClusterState
from tests.e2e import browser, jobs, oarnodes

pytestmark = pytest.mark.e2e

NODE_CPUS = (1, 2)
NODES_FIRST_SECONDS = 300  # at most this long for the nodes to boot before the server starts
# `up` returns once every node is Alive and none Suspected; a job on all of them then starts
# within a scheduler pass or two (it waited for a Suspected node before: > 10 min). The bound
# leaves room for `make test`'s other stream of VMs on the same 2 cores.
FIRST_JOB_SECONDS = 240
STARTED = re.compile(r"\b(Launching|Running|Finishing|Terminated)\b")
VCLUSTER = [sys.executable, "-m", "boot.vcluster"]


def logs_of(state: ClusterState) -> str:
    parts = []
    for m in state.machines:
        path = state.serial_log(m)
        text = path.read_bytes().decode(errors="replace") if path.exists() else ""
        parts.append(f"--- {m.name} ({m.oar_hostname or 'server'}):\n{vstage.excerpt(text)}")
    return "\n".join(parts)


class Cluster:
    def __init__(self, state: ClusterState, up_returned: float = 0.0) -> None:
        self.state = state
        self.up_returned = up_returned  # time.monotonic() when `oar-vcluster up` returned
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

    def on_every_node(self, job: int, out: str) -> None:
        """The DEMO_JOB's output names every node; else fail with what its stderr said."""
        expected = sorted(m.oar_hostname for m in self.state.nodes)
        if sorted(out.split()) != expected:
            pytest.fail(f"job {job} printed {out.split()}, not {expected}; its stderr: "
                        f"{self.remote.job_errors(job)!r}\n{logs_of(self.state)}")

    def serial(self, name: str) -> str:
        return self.state.serial_log(self.state.machine(name)).read_bytes().decode(
            errors="replace")

    def boots(self, name: str) -> int:
        return len(vstage.KERNEL_START.findall(self.serial(name)))

    def registered_on_this_boot(self, name: str) -> bool:
        """The node's agent, on its current boot, got its registration through (after its
        shared home was mounted): OAR's rows may still be those of the boot before."""
        progress = vstage.progress(self.serial(name), "node")
        return progress.stage.rank >= vstage.Stage.REGISTERED.rank


@pytest.fixture(scope="module")
def cluster(artifacts, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("vcluster")
    up = VCLUSTER + ["--state-dir", str(state_dir), "up", "--iso", str(artifacts / "oar-live.iso"),
                     "--nodes", "2", "--smp", ",".join(map(str, NODE_CPUS)), "--timeout", "900",
                     "--nodes-first", str(NODES_FIRST_SECONDS)]
    started = time.monotonic()
    result = subprocess.run(up, capture_output=True, text=True)
    returned = time.monotonic()
    print(result.stdout, result.stderr, f"up took {returned - started:.0f} s", sep="\n")
    try:
        state = vstate.load(state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        yield Cluster(state, returned)
    finally:
        subprocess.run(VCLUSTER + ["--state-dir", str(state_dir), "down", "--keep-logs"],
                       check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert state is None or state.netns not in left
    assert not vstate.our_processes(state_dir)


def expected_resources(state: ClusterState) -> dict[str, list[int]]:
    return {m.oar_hostname: list(range(m.cpus)) for m in state.nodes}


def all_registered(cluster) -> dict[str, list[int]] | None:
    """Every node Alive with all its CPUs (a node's resources enter OAR together, Absent, and
    become Alive together once the server reached the node)."""
    found = cluster.alive()
    return found if found == expected_resources(cluster.state) else None


def test_oarnodes_lists_exactly_the_cpus_of_each_vm(cluster):
    found = cluster.wait("every node Alive", cluster.alive, 120)
    assert found == expected_resources(cluster.state)
    assert [m.cpus for m in cluster.state.nodes] == list(NODE_CPUS)


def test_each_machine_runs_the_oar_units_of_its_role_only(cluster, image):
    """A node never runs oar-server (nor its accounting), the server never oar-node: the
    other role's units are masked for the boot (autoconf.units)."""
    server_units = image.units(units.SERVER_UNITS)
    node_units = image.units(units.NODE_UNITS)
    for machine, runs, never in ((cluster.state.server, server_units, node_units),
                                 *((n, node_units, server_units) for n in cluster.state.nodes)):
        names = " ".join(runs + never)
        out = cluster.remote.run(f"systemctl is-active {names}; systemctl is-enabled {names}",
                                 machine, timeout=60, check=False).stdout.split()
        active, enabled = out[:len(runs + never)], out[len(runs + never):]
        assert active == ["active"] * len(runs) + ["inactive"] * len(never), (machine.name, out)
        assert enabled[len(runs):] == ["masked-runtime"] * len(never), (machine.name, out)


def test_a_job_on_two_nodes_runs_on_both(cluster):
    job = cluster.remote.submit(DEMO_JOB, "nodes=2")
    left = cluster.up_returned + FIRST_JOB_SECONDS - time.monotonic()

    def started() -> bool:
        state = cluster.remote.run(f"oarstat -s -j {job}", timeout=90, check=False).stdout
        return bool(STARTED.search(state))

    cluster.wait(f"job {job} on every node starting within {FIRST_JOB_SECONDS} s of `up`",
                 started, max(left, 1), 3)
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    cluster.on_every_node(job, cluster.remote.job_output(job))


def web_artefacts(tmp_path_factory) -> Path:
    """Where the web scenarios leave their screenshots (OAR_LIVE_ARTEFACTS, else pytest's)."""
    given = os.environ.get("OAR_LIVE_ARTEFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("web")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def curl(*args: str) -> tuple[int, str]:
    """(HTTP status, body) of one curl request from this machine."""
    result = subprocess.run(["curl", "-sS", "--max-time", "180", "-w", "\n%{http_code}", *args],
                            capture_output=True, text=True, check=True)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_the_rest_api_takes_a_job_that_the_web_tools_show_running_in_a_browser(
        cluster, tmp_path_factory):
    """curl: requests without (good) credentials get 401, a job submitted with them is taken
    and its state read back; headless Chromium: the cluster page, Monika and Drawgantt show
    both nodes and that job Running (their DOM), with screenshots as artefacts."""
    if not browser.available():
        pytest.fail("chromium is not installed (tests/host.txt)")
    base = f"http://127.0.0.1:{cluster.state.web_port}"
    api = f"{base}/oarapi"
    account = read_credentials(Path(cluster.state.iso))
    login = f"{account.user}:{account.password}"
    assert curl(f"{api}/resources.json")[0] == 401
    assert curl("-u", f"{account.user}:not-the-password", f"{api}/resources.json")[0] == 401
    submit = ["-H", "Content-Type: application/json", "-d",
              json.dumps({"resource": "/nodes=1", "command": "sleep 900"}), f"{api}/jobs.json"]
    assert curl(*submit)[0] == 401
    # a client's own identity header is not trusted, on the public variant either
    assert curl("-H", f"X-Remote-Ident: {account.user}", *submit[:-1],
                f"{api}-public/jobs.json")[0] == 401
    code, body = curl("-u", login, f"{api}/resources.json")
    assert code == 200 and all(m.oar_hostname in body for m in cluster.state.nodes), body
    code, body = curl("-u", login, *submit)
    assert code in (200, 201, 202), body
    job = int(json.loads(body)["id"])
    hosts = [m.oar_hostname for m in cluster.state.nodes]
    folder = web_artefacts(tmp_path_factory)

    def running() -> bool:
        code, body = curl("-u", login, f"{api}/jobs/{job}.json")
        return code == 200 and json.loads(body).get("state") == "Running"

    try:
        cluster.wait(f"API job {job} Running (read through the API)", running, 300, 5)
        marks = [f'data-key="{h}"' for h in hosts] + [f'data-key="{job}"', 'data-loaded="yes"']
        page = cluster.wait("the cluster page lists both nodes and the job", lambda: (
            lambda d: d if all(m in d for m in marks) else None)(browser.dom(base + "/")), 180, 5)
        for host in hosts:
            row = re.search(rf'<tr data-key="{host}">(.*?)</tr>', page)[1]
            assert ">Alive<" in row, row
        assert "Running" in re.search(rf'<tr data-key="{job}">(.*?)</tr>', page)[1]
        assert 'href="/monika"' in page and 'href="/drawgantt-svg/"' in page
        monika = browser.dom(base + "/monika")
        text = " ".join(re.sub(r"<[^>]*>", " ", monika).split())  # its tables as text
        assert all(h in text for h in hosts), text[-3000:]
        assert re.search(rf"\b{job} {account.user} Running\b", text), text[-3000:]
        now = int(time.time())
        gantt = browser.dom(f"{base}/drawgantt-svg/drawgantt-svg.php?start={now - 3600}"
                            f"&stop={now + 3600}&resource_base=network_address")
        assert "<svg" in gantt and f"Jobid: {job}|User: {account.user}|" in gantt, gantt[-3000:]
        assert all(f"network_address: {h}" in gantt for h in hosts), gantt[-3000:]
        for name, path in (("cluster-page", "/"), ("monika", "/monika"),
                           ("drawgantt", "/drawgantt-svg/")):
            print("screenshot:", browser.screenshot(base + path, folder / f"{name}.png"))
    finally:
        cluster.remote.run(f"oardel {job}", timeout=120, check=False)


def test_a_one_core_job_is_confined_to_one_core(cluster, image):
    big = next(m for m in cluster.state.nodes if m.cpus == 2)
    line = (f"cd && oarsub -p \"host='{big.oar_hostname}'\" -l core=1 "
            f"{shlex.quote(jobs.CONFINED_JOB)}")
    out = cluster.remote.run(line, timeout=180).stdout
    job = int(re.search(r"OAR_JOB_ID=(\d+)", out).group(1))
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    found = jobs.parse(cluster.remote.run(f"cat ~/OAR.{job}.stdout", big, timeout=60).stdout)
    assert found.cpus == 2 and re.fullmatch(r"[01]", found.allowed), found.output
    jobs.assert_confined(found)  # the busy loops ran on that one CPU only
    assert image.job_cgroup(cluster.state.user, job).search(found.output), found.output
    cluster.wait(f"job {job}'s processes gone from {big.name}", lambda: cluster.remote.run(
        f"ps -o pid= -p {found.leftover}", big, timeout=60, check=False).returncode == 1, 60, 5)


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


def test_a_person_added_on_the_server_runs_a_two_node_mpi_program_they_compiled(cluster):
    """`oar-live adduser` on the server: every node knows the person with the same UID/GID
    within a minute (a system account's name is refused); as that person, mpicc on the server
    and a bare mpirun in a 2-node job: the shared home carries the binary, OAR Live's mpirun
    takes the job's nodes and starts its daemons through oarsh, as the person on each node.
    (Files passing between nodes through the home: `oar-live check`, below.)"""
    added = cluster.remote.run(f"sudo -n oar-live adduser {PERSON}", timeout=120).stdout
    assert "UID" in added, added
    refused = cluster.remote.run("sudo -n oar-live adduser postgres", timeout=60, check=False)
    assert refused.returncode == 1 and "system account" in refused.stderr, refused.stderr
    cluster.wait("every node knows the person",
                 lambda: (u := person_uids(cluster)) and len(set(u.values())) == 1
                 and "" not in u.values() and u, 60, 5)
    cluster.remote.run(as_person("cp /usr/lib/oar-live/autoconf/mpi/hello.c . && "
                                 "mpicc -O2 -o mpi-hello hello.c"), timeout=300)
    out = cluster.remote.run(as_person("oarsub -l nodes=2 'mpirun ./mpi-hello'"),
                             timeout=180).stdout
    job = int(re.search(r"OAR_JOB_ID=(\d+)", out)[1])
    assert cluster.remote.wait_job(job, 420) == "Terminated", logs_of(cluster.state)
    out = cluster.remote.run(f"sudo -n cat /home/{PERSON}/OAR.{job}.stdout", timeout=60).stdout
    hosts = set(re.findall(r"^hello from rank \d+ of 3 on (\S+)$", out, re.M))
    assert hosts == {m.oar_hostname for m in cluster.state.nodes}, out


def test_an_interactive_job_gives_a_shell_on_the_first_node_and_oarsh_reaches_the_second(
        cluster, image):
    """`oarsub -I -l nodes=2` on a terminal (script(1) gives it one, as a person at the console
    or on ssh -t has): a shell on the first node, in the job's cgroup, and oarsh to the second."""
    typed = ('echo "first=$(hostname)"; cat /proc/self/cgroup; '
             'echo "second=$(oarsh $(sort -u $OAR_NODEFILE | tail -1) hostname </dev/null)"; '
             'exit')  # oarsh (ssh) would read the rest of the typed lines, `exit` included
    line = (f"cd && printf '%s\\n' {shlex.quote(typed)} | "
            "timeout 400 script -qec 'oarsub -I -l nodes=2' /dev/null")
    out = cluster.remote.run(line, timeout=450).stdout.replace("\r", "")
    job = int(re.search(r"OAR_JOB_ID=(\d+)", out).group(1))
    first = re.search(r"^first=(\S+)$", out, re.M)
    second = re.search(r"^second=(\S+)$", out, re.M)
    nodes = {m.oar_hostname for m in cluster.state.nodes}
    assert first and second, out
    assert {first[1], second[1]} == nodes, out
    assert image.job_cgroup(cluster.state.user, job).search(out), out
    # The job ends with its shell. OAR 2.6.1's oarsub, once the session closed ("Disconnected
    # from OAR job N"), deletes the job: oar.log has Leon's "Normal kill" of its oarexec
    # ("OAREXEC end: 3", "killed by Leon"), so 2.6.1 records the session as Error; 2.5.9's
    # oarexec ends by itself, Terminated.
    ended = "Error" if image.oar_version == "2.6" else "Terminated"
    assert cluster.remote.wait_job(job, 120) == ended, out


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
HOME_MOUNT = "findmnt -n -o SOURCE,FSTYPE /home"


LOAD = "nohup timeout 240 sh -c 'while :; do :; done' >/dev/null 2>&1 &"


def test_a_rebooted_node_comes_back_alive_with_the_same_resources(cluster):
    node = cluster.state.nodes[-1]
    before = cluster.remote.run(BOOT_ID, node, timeout=60).stdout.strip()
    boots = cluster.boots(node.name)
    cluster.remote.run(LOAD, timeout=60)  # the server's CPU busy while the node comes back
    cluster.remote.run("sudo -n systemctl reboot", node, timeout=60, check=False)
    cluster.wait(f"{node.name} rebooting", lambda: cluster.boots(node.name) > boots, 120, 2)
    found = cluster.wait(f"{node.name} Alive again", lambda: cluster.registered_on_this_boot(
        node.name) and all_registered(cluster), 420)
    assert found == expected_resources(cluster.state)
    assert not [r for r in cluster.resources() if r["state"] == "Suspected"]
    ids = Counter(r["id"] for r in cluster.resources())
    assert len(ids) == sum(m.cpus for m in cluster.state.nodes) and max(ids.values()) == 1
    # OAR's rows alone may be the ones from before the reboot: the node itself must be on its
    # new boot (it runs jobs again: the 2-node job after the server's reboot, next).
    after = cluster.remote.run(BOOT_ID, node, timeout=60).stdout.strip()
    assert after and after != before, f"{node.name} is still on boot {after!r}"
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
    cluster.on_every_node(*cluster.job(DEMO_JOB, "nodes=2"))  # through the nodes' mounts

