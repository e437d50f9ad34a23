"""`oar-live check`: the cluster tests itself with a few real OAR jobs and prints a report.

Run as root on the server (it reads OAR's database); the jobs are the user's (`--user`,
default the one who ran sudo, else the first normal account). What it proves, each line
naming the node when one fails:

- ready: N nodes Alive (at least oar.nbmin), M cores, and how long after the server's boot
  they all were (OAR's resource logs);
- job: every Alive node ran its part in a `core=1` job: the two largest nodes share the 2-node
  MPI job (one core on each), every other node has a job pinned to it, all submitted at once;
- cpuset: on the node with the most CPUs that job saw one CPU only;
- home: each node read a file the server wrote in the user's home, the server read the node's
  report, and the first node of the MPI job read what the second wrote: /home is the server's,
  shared (the jobs start in a folder only the server made);
- mpi: a 2-node ring (mpi/ring.c, built in the job with mpicc) started by a bare `mpirun`
  through oarsh, with its latency and bandwidth.

Exit status 0 when every check passed, 1 when one failed, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from autoconf.config import ConfigError, read_config
from autoconf.oarconf import OAR_CONF
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.status import summarise
from boot import proc

__all__ = ["Check", "Report", "add_commands", "run_check"]

MPI_SOURCES = Path(__file__).resolve().parent / "mpi"
RUN_DIR = ".oar-live-check"  # in the user's home: the runs, one folder each
ENDED = ("Terminated", "Error")
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
JOB_ID = re.compile(r"OAR_JOB_ID=(\d+)")
POLL_SECONDS = 2.0

# One node's part: what a core=1 job sees there; its report is node-HOST.txt.
NODE_SCRIPT = r"""#!/bin/bash
# oar-live check: what one node's core=1 job sees (its CPUs, its home). $1: the node's name.
report="node-$1.txt"
{
  echo "host $(hostname)"
  echo "cpus $(nproc --all)"
  echo "allowed $(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)"
  echo "home_fs $(stat -f -c %T . 2>/dev/null)"
  echo "from_server $(cat from-server 2>/dev/null)"
} > "$report.new" && mv "$report.new" "$report"
"""

# Two nodes, one core each: both nodes' own part (the second through oarsh), what the second
# wrote read on the first, then ring.c built on the first and run by a bare mpirun.
MPI_SCRIPT = r"""#!/bin/bash
# oar-live check: two nodes' parts, the home between them, and an MPI ring through oarsh.
hosts=($(sort -u "$OAR_NODEFILE"))
./node-check.sh "${hosts[0]}"
oarsh "${hosts[1]}" "cd '$PWD' && ./node-check.sh '${hosts[1]}'" </dev/null
{
  echo "hosts ${hosts[*]}"
  echo "node_to_node $(sed -n 's/^from_server //p' "node-${hosts[1]}.txt" 2>/dev/null)"
  mpicc -O2 -o ring ring.c 2>&1
  started=$(date +%s%N)
  mpirun ./ring 2>&1
  echo "mpirun_exit $?"
  echo "mpirun_ms $(( ($(date +%s%N) - started) / 1000000 ))"
} > mpi.txt.new 2>&1; mv mpi.txt.new mpi.txt
"""


@dataclass(frozen=True)
class Check:
    """One verdict of the report."""

    name: str
    ok: bool
    detail: str
    node: str | None = None

    def line(self) -> str:
        where = f" {self.node}:" if self.node else ""
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<7}{where} {self.detail}"


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    nodes: int
    cores: int
    ready_s: float | None
    latency_us: float | None
    bandwidth_mbps: float | None
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict:
        return {"ok": self.ok, "nodes": self.nodes, "cores": self.cores,
                "ready_s": self.ready_s, "latency_us": self.latency_us,
                "bandwidth_MBps": self.bandwidth_mbps, "seconds": self.seconds,
                "checks": [asdict(c) for c in self.checks]}

    def render(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        verdict = ("cluster check passed" if not failed else
                   f"cluster check FAILED: {len(failed)} of {len(self.checks)} checks")
        return "\n".join([c.line() for c in self.checks]
                         + [f"{verdict} ({self.seconds:.0f} s)"])


def parse_report(text: str) -> dict[str, str]:
    """`key value` lines (the first word is the key; `rank N HOST` keeps `rank N`)."""
    found: dict[str, str] = {}
    for line in text.splitlines()[:200]:
        words = line.split(None, 2 if line.startswith("rank ") else 1)
        if len(words) >= 2:
            key = " ".join(words[:2]) if words[0] == "rank" else words[0]
            found.setdefault(key, words[-1].strip() if len(words) > 1 else "")
    return found


def cpu_list(text: str) -> set[int]:
    """The kernel's CPU list syntax (0-2,5) as a set; empty when unreadable."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return set()
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def ready_check(resources: Sequence[OarResource], since: dict[int, int], nbmin: int,
                boot_epoch: float) -> tuple[Check, int, int, float | None]:
    """The cluster's size now, and when it was all Alive, seconds after the server's boot."""
    alive = [n for n in summarise(resources) if n.alive]
    hosts = {n.host for n in alive}
    mine = [r for r in resources if r.host in hosts]
    times = [since.get(r.resource_id) for r in mine]
    ready_s = (max(times) - boot_epoch) if mine and None not in times else None
    when = f", {ready_s:.0f} s after the server's boot" if ready_s is not None else ""
    detail = f"cluster ready: {len(alive)} nodes, {len(mine)} cores{when}"
    ok = len(alive) >= max(nbmin, 1)
    if not ok:
        down = sorted({n.host for n in summarise(resources)} - hosts)
        detail = (f"{len(alive)} of {nbmin} required nodes Alive"
                  + (f" (not Alive: {', '.join(down)})" if down else ""))
    return Check("ready", ok, detail), len(alive), len(mine), ready_s


def judge_node(host: str, cpus: int, state: str, report: dict[str, str] | None, token: str,
               largest: bool, stderr: str, job_hosts: Sequence[str] = ()) -> list[Check]:
    """The job, cpuset and home verdicts of one node, from the job that ran its part (its own,
    or the 2-node job on `job_hosts`: a failure of that one names both nodes)."""
    if state != "Terminated":
        why = f": {stderr}" if stderr else " (could it enter the run folder in /home?)"
        both = len(job_hosts) > 1
        what = f"the job on {' and '.join(job_hosts)}" if both else "its job"
        return [Check("job", False, f"{what} ended {state}{why}",
                      " ".join(job_hosts) if both else host)]
    if report is None:
        return [Check("job", True, "its core=1 job ran", host),
                Check("home", False, "its job's report did not reach the server through "
                                     "/home (is /home mounted from the server there?)", host)]
    checks = [Check("job", report.get("host") == host,
                    f"its core=1 job ran on {report.get('host', '?')}", host)]
    if largest:
        allowed = cpu_list(report.get("allowed", ""))
        seen = report.get("cpus", "?")
        if cpus < 2:
            checks.append(Check("cpuset", True, "every node has one CPU: nothing to confine"))
        else:
            checks.append(Check(
                "cpuset", len(allowed) == 1 and seen == str(cpus),
                f"a core=1 job may use CPU {report.get('allowed') or '?'} of its {seen}", host))
    shared = report.get("from_server") == token
    checks.append(Check("home", shared, (
        f"read the server's file in the home ({report.get('home_fs', '?')})" if shared else
        "did not read the server's file in the home: /home is not the server's there"), host))
    return checks


def judge_mpi(hosts: Sequence[str], state: str, report: dict[str, str] | None, token: str,
              stderr: str) -> tuple[list[Check], float | None, float | None]:
    if state != "Terminated" or report is None:
        why = stderr or ("its report did not reach the server" if report is None else "")
        verdict = Check("mpi", False, f"the 2-node job ended {state}: {why}".rstrip(": "),
                        " ".join(hosts) or None)
        return [verdict], None, None
    pair = report.get("hosts", "").split()
    second = pair[1] if len(pair) > 1 else "?"
    checks = [Check("home", report.get("node_to_node") == token,
                    f"{pair[0] if pair else '?'} read what {second} wrote in the home", second)]
    ranks = [report.get(f"rank {i}") for i in (0, 1)]
    try:
        latency = float(report["latency_us"])
        bandwidth = float(report["bandwidth_MBps"])
    except (KeyError, ValueError):
        latency = bandwidth = None
    ok = (report.get("ring") == "ok" and latency is not None and None not in ranks
          and ranks[0] != ranks[1] and set(ranks) <= set(hosts))
    if ok:
        detail = (f"ring {ranks[0]} <-> {ranks[1]} through oarsh: {latency:.0f} us, "
                  f"{bandwidth:.0f} MB/s (mpirun {report.get('mpirun_ms', '?')} ms)")
    else:
        detail = (f"the ring on {' and '.join(pair) or '?'} did not complete (mpirun exit "
                  f"{report.get('mpirun_exit', '?')}; see job-*.txt in the run folder)")
    return [*checks, Check("mpi", ok, detail, None if ok else " ".join(pair) or None)], \
        latency, bandwidth


class Runner:
    """Commands as the user, in the run folder."""

    def __init__(self, user: pwd.struct_passwd, folder: Path,
                 run: Callable[..., object] = proc.run) -> None:
        self.user, self.folder, self._run = user, folder, run

    def __call__(self, argv: list[str], timeout: float = 180):
        prefix = [] if os.geteuid() == self.user.pw_uid else ["runuser", "-u",
                                                              self.user.pw_name, "--"]
        return self._run([*prefix, *argv], cwd=self.folder, timeout=timeout,
                         env={"HOME": self.user.pw_dir})

    def submit(self, resources: str, command: str, where: str = "") -> int:
        """`oarsub` in the run folder (`where`: OAR's -p, an SQL condition on resources)."""
        condition = ["-p", where] if where else []
        out = self(["oarsub", "-n", "oar-live-check", *condition, "-l", resources,
                    command]).stdout
        found = JOB_ID.search(out)
        if not found:
            raise proc.CommandError(["oarsub"], 1, f"printed no job id: {out.strip()[-200:]}")
        return int(found.group(1))


def prepare(user: pwd.struct_passwd, token: str) -> Path:
    """A fresh run folder in the user's home, with the scripts, the token and ring.c."""
    folder = Path(user.pw_dir) / RUN_DIR / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "from-server").write_text(token + "\n")
    for name, text in (("node-check.sh", NODE_SCRIPT), ("mpi-check.sh", MPI_SCRIPT)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    shutil.copy(MPI_SOURCES / "ring.c", folder / "ring.c")
    for path in (folder.parent, folder, *folder.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    return folder


def wait_jobs(oar: Oar, ids: Sequence[int], timeout: float,
              clock: Callable[[], float] = time.monotonic) -> dict[int, str]:
    deadline = clock() + timeout
    while True:
        states = {i: s for i, (s, _code) in oar.job_states(ids).items()}
        if all(states.get(i) in ENDED for i in ids) or clock() >= deadline:
            return {i: states.get(i, "unknown") for i in ids}
        time.sleep(POLL_SECONDS)


def read_report(path: Path) -> dict[str, str] | None:
    """A job's report (`key value` lines), None when it did not reach the server."""
    return parse_report(path.read_text(errors="replace")[:20000]) if path.exists() else None


def last_line(path: Path) -> str:
    """The last line of a job's stderr (OAR.ID.stderr), "" when there is none."""
    lines = path.read_text(errors="replace")[-2000:].strip().splitlines() if path.exists() else []
    return lines[-1] if lines else ""


def default_user() -> pwd.struct_passwd:
    name = os.environ.get("SUDO_USER")
    if name and name != "root":
        return pwd.getpwnam(name)
    people = sorted((p for p in pwd.getpwall() if 1000 <= p.pw_uid < 60000),
                    key=lambda p: p.pw_uid)
    if not people:
        raise KeyError("no normal account to run the jobs: give --user")
    return people[0]


def run_check(oar: Oar, user: pwd.struct_passwd, nbmin: int, root: Path, timeout: float,
              run: Callable[..., object] = proc.run) -> Report:
    started = time.monotonic()
    uptime = float((root / "proc/uptime").read_text().split()[0])
    boot_epoch = time.time() - uptime
    resources = oar.resources()
    ready, nodes, cores, ready_s = ready_check(resources, oar.alive_since(int(boot_epoch) - 5),
                                               nbmin, boot_epoch)
    checks = [ready]
    alive = sorted((n for n in summarise(resources) if n.alive and HOST.fullmatch(n.host)),
                   key=lambda n: (-n.resources, n.host))
    token = secrets.token_hex(8)
    folder = prepare(user, token)
    as_user = Runner(user, folder, run)
    # The two largest nodes share the MPI job (one core each: their own parts run in it too);
    # every other node gets a core=1 job of its own. All run at once, on different nodes.
    pair = [n.host for n in alive[:2]] if len(alive) >= 2 else []
    jobs: dict[int, list[str]] = {}  # job -> the nodes whose parts it runs
    latency = bandwidth = None
    try:
        if pair:
            where = " OR ".join(f"host='{h}'" for h in pair)
            jobs[as_user.submit("/nodes=2/core=1,walltime=0:10:00", "./mpi-check.sh",
                                where=where)] = pair
        elif alive:
            checks.append(Check("mpi", True, "not tested: one node only"))
        for node in alive[len(pair):]:
            jobs[as_user.submit("core=1,walltime=0:10:00", f"./node-check.sh {node.host}",
                                where=f"host='{node.host}'")] = [node.host]
        states = wait_jobs(oar, list(jobs), timeout)
    except (proc.CommandError, OarError) as exc:
        checks.append(Check("submit", False, str(exc)))
        states = {}
    finally:
        late = [j for j in jobs if j not in states or states[j] not in ENDED]
        if late:
            with contextlib.suppress(proc.CommandError):
                as_user(["oardel", *map(str, late)], timeout=120)
    for job, hosts in jobs.items():
        state = states.get(job, "not run")
        stderr = last_line(folder / f"OAR.{job}.stderr")
        for node in (n for n in alive if n.host in hosts):
            checks += judge_node(node.host, node.resources, state,
                                 read_report(folder / f"node-{node.host}.txt"), token,
                                 node is alive[0], stderr, hosts)
        if hosts == pair:
            more, latency, bandwidth = judge_mpi(pair, state, read_report(folder / "mpi.txt"),
                                                 token, stderr)
            checks += more
    checks.sort(key=lambda c: ["ready", "job", "cpuset", "home", "mpi", "submit"].index(c.name))
    report = Report(tuple(checks), nodes, cores, ready_s, latency, bandwidth,
                    round(time.monotonic() - started, 1))
    if report.ok:
        shutil.rmtree(folder, ignore_errors=True)
    return report


MAX_WAITED_JOBS = 100
WAIT_TIMED_OUT = 3  # `oar-live wait`'s status when a job had not ended by the deadline


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """`oar-live check` and `oar-live wait` in the oar-live dispatcher (autoconf.oarlive)."""
    waiter = subparsers.add_parser(
        "wait", help="wait until OAR jobs end; print each one's final state",
        description="Wait until the given OAR jobs are Terminated or Error and print `ID STATE`"
                    " for each (oarsub has no wait). Reads OAR's database (as root: sudo) every"
                    f" {POLL_SECONDS:g} s, one psql call, not one oarstat per job. Exit status: 0"
                    f" all Terminated, 1 one ended in Error, {WAIT_TIMED_OUT} one had not ended by"
                    " the deadline, 2 a wrong argument or no database.")
    waiter.add_argument("jobs", nargs="+", metavar="JOB_ID", help="OAR job ids")
    waiter.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                        help="give up after this long (default %(default)s)")
    waiter.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    waiter.set_defaults(run=wait_command)
    parser = subparsers.add_parser("check", help=__doc__.splitlines()[0].split(": ", 1)[1],
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--user", help="whose jobs (default: who ran sudo, else the first "
                                       "normal account)")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="how long the jobs may take, together (default %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.set_defaults(run=run_command)


def job_ids(words: Sequence[str]) -> list[int]:
    """Job ids as typed: positive integers, at most MAX_WAITED_JOBS (ValueError names a bad one)."""
    if len(words) > MAX_WAITED_JOBS:
        raise ValueError(f"{len(words)} job ids: at most {MAX_WAITED_JOBS} at once")
    ids = []
    for word in words:
        if not (word.isascii() and word.isdigit() and 0 < len(word) <= 12 and int(word) > 0):
            raise ValueError(f"not a job id: {word[:40]!r}")
        ids.append(int(word))
    return list(dict.fromkeys(ids))


def wait_command(args: argparse.Namespace, oar: Oar | None = None) -> int:
    try:
        ids = job_ids(args.jobs)
    except ValueError as exc:
        print(f"oar-live wait: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.timeout <= 7 * 24 * 3600:
        print(f"oar-live wait: --timeout {args.timeout:g}: between 0 and a week of seconds",
              file=sys.stderr)
        return 2
    conf = args.root / OAR_CONF
    if oar is None and not os.access(conf, os.R_OK):
        print(f"oar-live wait: cannot read {conf}: run it as root on the server "
              "(sudo oar-live wait)", file=sys.stderr)
        return 2
    try:
        states = wait_jobs(oar or Oar(conf), ids, args.timeout)
    except OarError as exc:
        print(f"oar-live wait: {exc}", file=sys.stderr)
        return 2
    for job in ids:
        print(job, states[job])
    if any(state not in ENDED for state in states.values()):
        return WAIT_TIMED_OUT
    return 1 if "Error" in states.values() else 0


def run_command(args: argparse.Namespace, oar: Oar | None = None) -> int:
    conf = args.root / OAR_CONF
    if not os.access(conf, os.R_OK):
        print(f"oar-live check: cannot read {conf}: run it as root on the server "
              "(sudo oar-live check)", file=sys.stderr)
        return 2
    try:
        user = pwd.getpwnam(args.user) if args.user else default_user()
        nbmin = read_config(args.root).nbmin
        report = run_check(oar or Oar(conf), user, nbmin, args.root, args.timeout)
    except (KeyError, ConfigError, OarError, proc.CommandError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f"oar-live check: {message}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1
