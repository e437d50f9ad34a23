"""`oar-live check`: how the jobs' reports and OAR's records become verdicts naming nodes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess

import pytest

from autoconf import check, oarlive
from autoconf.check import Check, Report, cpu_list, judge_mpi, judge_node, parse_report
from autoconf.oarstate import OarResource

TOKEN = "0123456789abcdef"


def resource(rid: int, host: str, state: str = "Alive", cpuset: int = 0) -> OarResource:
    return OarResource(rid, host, state, "UnChanged", 1, rid, None, str(cpuset), 1)


CLUSTER = [resource(1, "node-1"), resource(2, "node-2", cpuset=0),
           resource(3, "node-2", cpuset=1)]


def node_report(host: str, cpus: int, allowed: str, from_server: str = TOKEN) -> dict[str, str]:
    return parse_report(f"host {host}\ncpus {cpus}\nallowed {allowed}\nhome_fs nfs\n"
                        f"from_server {from_server}\n")


def test_reports_read_as_keys_and_the_ranks_keep_their_number():
    found = parse_report("ranks 2\nrank 0 node-1\nrank 1 node-2\nlatency_us 81.5\nring ok\n"
                         "garbage\n")
    assert found == {"ranks": "2", "rank 0": "node-1", "rank 1": "node-2",
                     "latency_us": "81.5", "ring": "ok"}


@pytest.mark.parametrize(("text", "cpus"), [("1", {1}), ("0-2,5", {0, 1, 2, 5}),
                                            ("", set()), ("x", set())])
def test_cpu_lists_read_as_the_kernel_writes_them(text, cpus):
    assert cpu_list(text) == cpus


def test_ready_counts_alive_nodes_and_cores_and_the_time_after_the_boot():
    since = {1: 1000 + 60, 2: 1000 + 70, 3: 1000 + 95}
    verdict, nodes, cores, ready_s = check.ready_check(CLUSTER, since, 2, boot_epoch=1000.0)
    assert verdict.ok and (nodes, cores, ready_s) == (2, 3, 95.0)
    assert verdict.detail == "cluster ready: 2 nodes, 3 cores, 95 s after the server's boot"


def test_ready_fails_naming_the_nodes_that_are_not_alive():
    resources = [*CLUSTER[:2], resource(3, "node-2", state="Suspected")]
    verdict, nodes, _cores, _s = check.ready_check(resources, {}, 2, boot_epoch=0.0)
    assert not verdict.ok and nodes == 1
    assert "not Alive: node-2" in verdict.detail


def test_a_confined_job_on_the_largest_node_and_a_shared_home_pass():
    checks = judge_node("node-2", 2, "Terminated", node_report("node-2", 2, "1"), TOKEN,
                        largest=True, stderr="")
    assert [(c.name, c.ok, c.node) for c in checks] == [
        ("job", True, "node-2"), ("cpuset", True, "node-2"), ("home", True, "node-2")]


def test_a_job_that_may_use_every_cpu_fails_the_cpuset_check():
    checks = judge_node("node-2", 2, "Terminated", node_report("node-2", 2, "0-1"), TOKEN,
                        largest=True, stderr="")
    assert [c.name for c in checks if not c.ok] == ["cpuset"]


def test_a_node_without_the_servers_home_fails_naming_it():
    # its job could not enter the run folder (only the server has it) ...
    (job,) = judge_node("node-1", 1, "Error", None, TOKEN, largest=False, stderr="")
    assert not job.ok and job.node == "node-1" and "/home" in job.detail
    # ... the 2-node job it shared failed: both nodes are named
    (job,) = judge_node("node-1", 1, "Error", None, TOKEN, largest=False, stderr="",
                        job_hosts=["node-2", "node-1"])
    assert job.node == "node-2 node-1" and "the job on node-2 and node-1" in job.detail
    # ... or ran but its report stayed on the node's own disk
    checks = judge_node("node-1", 1, "Terminated", None, TOKEN, largest=False, stderr="")
    home = next(c for c in checks if c.name == "home")
    assert not home.ok and home.node == "node-1"
    # ... or read another file than the server's
    checks = judge_node("node-1", 1, "Terminated", node_report("node-1", 1, "0", "other"),
                        TOKEN, largest=False, stderr="")
    assert [(c.name, c.node) for c in checks if not c.ok] == [("home", "node-1")]


RING = ("hosts node-1 node-2\nnode_to_node {token}\nranks 2\nrank 0 node-1\nrank 1 node-2\n"
        "latency_us 120.5\nbandwidth_MBps 95.2\nring ok\nmpirun_exit 0\nmpirun_ms 4100\n")


def test_a_two_node_ring_gives_its_latency_and_bandwidth():
    checks, latency, bandwidth = judge_mpi(["node-1", "node-2"], "Terminated",
                                           parse_report(RING.format(token=TOKEN)), TOKEN, "")
    assert all(c.ok for c in checks) and (latency, bandwidth) == (120.5, 95.2)
    assert "node-1 <-> node-2" in checks[-1].detail


def test_a_ring_on_one_node_or_a_lost_file_between_nodes_fails():
    one_node = RING.format(token=TOKEN).replace("rank 1 node-2", "rank 1 node-1")
    checks, _l, _b = judge_mpi(["node-1", "node-2"], "Terminated", parse_report(one_node),
                               TOKEN, "")
    assert [c.name for c in checks if not c.ok] == ["mpi"]
    checks, _l, _b = judge_mpi(["node-1", "node-2"], "Terminated",
                               parse_report(RING.format(token="")), TOKEN, "")
    assert [(c.name, c.node) for c in checks if not c.ok] == [("home", "node-2")]
    checks, latency, _b = judge_mpi(["node-1", "node-2"], "Error", None, TOKEN, "oarsh: denied")
    assert not checks[0].ok and "oarsh: denied" in checks[0].detail and latency is None
    assert checks[0].node == "node-1 node-2", "a job that did not run names both its nodes"


def test_the_report_fails_when_one_check_fails_and_says_which():
    report = Report((Check("ready", True, "cluster ready: 2 nodes, 3 cores"),
                     Check("home", False, "did not read the server's file", "node-2")),
                    2, 3, 80.0, None, None, 61.0)
    assert not report.ok
    text = report.render()
    assert "FAIL  home    node-2: did not read" in text
    assert text.splitlines()[-1] == "cluster check FAILED: 1 of 2 checks (61 s)"
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False and data["checks"][1]["node"] == "node-2"


def test_check_refuses_to_run_without_the_oar_configuration(tmp_path, capsys):
    assert oarlive.main(["check", "--root", str(tmp_path)]) == 2
    assert "run it as root on the server" in capsys.readouterr().err


def test_the_job_runner_becomes_the_user_and_reads_the_job_id(tmp_path):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, "[ADMISSION RULE] ok\nOAR_JOB_ID=42\n", "")

    user = check.pwd.struct_passwd(("someone", "x", 54321, 54321, "", str(tmp_path), "/bin/sh"))
    runner = check.Runner(user, tmp_path, fake_run)
    assert runner.submit("core=1", "./node-check.sh node-2", "host='node-2'") == 42
    argv, kwargs = calls[0]
    assert argv[:4] == ["runuser", "-u", "someone", "--"]
    assert argv[4:] == ["oarsub", "-n", "oar-live-check", "-p", "host='node-2'", "-l", "core=1",
                        "./node-check.sh node-2"]
    assert kwargs["cwd"] == tmp_path and kwargs["env"]["HOME"] == str(tmp_path)


@pytest.mark.spawns
def test_the_scripts_the_jobs_run_are_valid_bash(tmp_path):
    for name, text in (("node", check.NODE_SCRIPT), ("mpi", check.MPI_SCRIPT)):
        path = tmp_path / name
        path.write_text(text)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name
    assert (check.MPI_SOURCES / "ring.c").is_file()


def test_oar_live_dispatches_to_its_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_status:
        oarlive.main(["--help"])
    assert exit_status.value.code == 0 and "check" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_status:
        oarlive.main(["frobnicate"])
    assert exit_status.value.code == 2 and "frobnicate" in capsys.readouterr().err


class FakeCluster:
    """OAR as run_check sees it: resources, their Alive logs, and jobs that "run" at oarsub by
    writing what the node scripts would (each node's home is the server's unless `unshared`)."""

    def __init__(self, folder_of, unshared: str = "") -> None:
        self.folder_of, self.unshared = folder_of, unshared
        self.resources_ = [resource(1, "node-1"), resource(2, "node-2", cpuset=0),
                           resource(3, "node-2", cpuset=1), resource(4, "node-3")]
        self.states: dict[int, str] = {}
        self.submitted: list[list[str]] = []

    # the Oar side
    def resources(self):
        return self.resources_

    def alive_since(self, after):
        return {r.resource_id: after + 60 + r.resource_id for r in self.resources_}

    def job_states(self, ids):
        return {i: (self.states[i], 0) for i in ids if i in self.states}

    # the runner side
    def __call__(self, argv, cwd=None, **kwargs):
        argv = argv[4:] if argv[0] == "runuser" else argv
        if argv[0] != "oarsub":
            return subprocess.CompletedProcess(argv, 0, "", "")
        self.submitted.append(argv)
        job = len(self.submitted)
        where = argv[argv.index("-p") + 1]
        hosts = sorted(re.findall(r"host='([^']+)'", where))
        token = (cwd / "from-server").read_text().strip()
        if self.unshared in hosts and len(hosts) == 1:
            self.states[job] = "Error"  # it could not enter the run folder
        else:
            self.states[job] = "Terminated"
            for h in hosts:
                if h != self.unshared:
                    cpus = sum(r.host == h for r in self.resources_)
                    (cwd / f"node-{h}.txt").write_text(
                        f"host {h}\ncpus {cpus}\nallowed 0\nhome_fs nfs\nfrom_server {token}\n")
            if len(hosts) == 2:
                seen = "" if self.unshared in hosts else token
                (cwd / "mpi.txt").write_text(
                    RING.replace("node-1 node-2", " ".join(hosts)).format(token=seen)
                    .replace("rank 0 node-1", f"rank 0 {hosts[0]}")
                    .replace("rank 1 node-2", f"rank 1 {hosts[1]}"))
        return subprocess.CompletedProcess(argv, 0, f"OAR_JOB_ID={job}\n", "")


def run_on_fake(tmp_path, unshared=""):
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/uptime").write_text("300.0 10.0\n")
    fake = FakeCluster(None, unshared)
    user = check.pwd.struct_passwd(("someone", "x", os.geteuid(), os.getegid(), "",
                                    str(tmp_path / "home"), "/bin/sh"))
    report = check.run_check(fake, user, 3, tmp_path, timeout=5, run=fake)
    return report, fake


def test_the_two_largest_nodes_share_the_mpi_job_the_others_get_one_each(tmp_path):
    report, fake = run_on_fake(tmp_path)
    wheres = [argv[argv.index("-p") + 1] for argv in fake.submitted]
    assert wheres[0] in ("host='node-2' OR host='node-1'", "host='node-2' OR host='node-3'")
    assert len(fake.submitted) == 2 and "/nodes=2/core=1" in fake.submitted[0][6]
    assert report.ok, report.render()
    assert (report.nodes, report.cores) == (3, 4) and report.latency_us == 120.5
    assert {c.node for c in report.checks if c.name == "job"} == {"node-1", "node-2", "node-3"}
    assert not list((tmp_path / "home" / check.RUN_DIR).iterdir()), "a passed run leaves nothing"


def test_a_node_without_the_servers_home_is_named_and_the_run_folder_kept(tmp_path):
    report, _fake = run_on_fake(tmp_path, unshared="node-3")
    failed = [c for c in report.checks if not c.ok]
    assert not report.ok and failed and all("node-3" in (c.node or "") for c in failed)
    assert list((tmp_path / "home" / check.RUN_DIR).iterdir()), "kept for a look"


class JobStates:
    """OAR's jobs as `oar-live wait` reads them: each id's states, one per read, the last kept."""

    def __init__(self, **sequences) -> None:
        self.sequences = {int(k.removeprefix("j")): list(v) for k, v in sequences.items()}
        self.reads = 0

    def job_states(self, ids):
        self.reads += 1
        return {i: (seq.pop(0) if len(seq) > 1 else seq[0], 0)
                for i, seq in self.sequences.items() if i in ids}


def wait_args(*words):
    parser = argparse.ArgumentParser()
    check.add_commands(parser.add_subparsers())
    return parser.parse_args(["wait", *words])


def test_wait_prints_each_jobs_final_state_once_all_ended(monkeypatch, capsys):
    monkeypatch.setattr(check, "POLL_SECONDS", 0.01)
    oar = JobStates(j4=["Waiting", "Running", "Terminated"], j5=["Running", "Error"])
    assert check.wait_command(wait_args("4", "5", "4"), oar) == 1  # one Error
    assert capsys.readouterr().out == "4 Terminated\n5 Error\n"
    assert oar.reads == 3  # it waited for the slower job, one read per poll for both
    oar = JobStates(j4=["Launching", "Terminated"])
    assert check.wait_command(wait_args("4"), oar) == 0
    assert capsys.readouterr().out == "4 Terminated\n"


def test_wait_gives_up_at_its_deadline_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(check, "POLL_SECONDS", 0.01)
    oar = JobStates(j7=["Running"])
    assert check.wait_command(wait_args("7", "8", "--timeout", "0.05"), oar) == \
        check.WAIT_TIMED_OUT
    assert capsys.readouterr().out == "7 Running\n8 unknown\n"


@pytest.mark.parametrize("words, message", [
    (["x1"], "not a job id: 'x1'"), (["0"], "not a job id: '0'"), (["-3"], "not a job id"),
    (["1"] * 101, "101 job ids: at most 100"), (["1", "--timeout", "0"], "--timeout 0"),
])
def test_wait_refuses_what_is_not_a_job_id_in_one_line(words, message, capsys):
    assert check.wait_command(wait_args(*words), JobStates()) == 2
    err = capsys.readouterr().err
    assert err.startswith("oar-live wait: ") and message in err and err.count("\n") == 1


def test_wait_without_oars_configuration_asks_for_root(tmp_path, capsys):
    assert check.wait_command(wait_args("1", "--root", str(tmp_path))) == 2
    assert "sudo oar-live wait" in capsys.readouterr().err
