"""The job that proves a core=1 job is confined, and what its output says (e2e tests).

Run as `oarsub -l core=1` on a machine of 2 CPUs, the job prints the CPUs it may use, its
cgroup, and runs two busy loops for a few seconds: the CPU each ran on (field 39 of
/proc/PID/stat, sampled three times: the guest's scheduler spreads two busy loops over two free
CPUs whatever the host's load), and the CPU time both got against the wall time (`time`:
confined to one CPU about 1, never about 2). It leaves a detached `sleep` behind: OAR must kill
it with the job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONFINED_JOB = (
    "nproc --all; grep Cpus_allowed_list /proc/self/status; cat /proc/self/cgroup; "
    'TIMEFORMAT="busy %U %S %R"; '
    '{ time { for i in 1 2; do sh -c "while :; do :; done" & pids="$pids $!"; done; '
    'for t in 1 2 3; do sleep 1.5; for p in $pids; do '
    'echo "ran_on $(cut -d" " -f39 /proc/$p/stat)"; done; done; '
    "kill $pids; wait $pids; }; } 2>&1; "
    "setsid sleep 900 </dev/null >/dev/null 2>&1 & echo leftover=$!"
)
MAX_CONFINED_CPU_RATIO = 1.3  # two loops on one CPU: ~1.0 (on two CPUs they would get ~2.0)


@dataclass(frozen=True)
class ConfinedJob:
    cpus: int  # the machine's CPUs (nproc --all)
    allowed: str  # Cpus_allowed_list of the job
    output: str  # everything it printed (its cgroup among it)
    ran_on: frozenset[int]  # the CPUs the two busy loops were seen on
    cpu_ratio: float  # (user + system CPU time) / wall time of the two busy loops
    cpu_seconds: float
    leftover: int  # the pid of the sleep it left behind


def parse(output: str) -> ConfinedJob:
    """What CONFINED_JOB printed; ValueError naming the line that is missing."""
    def find(pattern: str, what: str) -> re.Match[str]:
        found = re.search(pattern, output, re.M)
        if found is None:
            raise ValueError(f"no {what} in the job's output:\n{output}")
        return found

    busy = find(r"^busy ([\d.]+) ([\d.]+) ([\d.]+)$", "busy line")
    user, system, wall = (float(busy.group(n)) for n in (1, 2, 3))
    return ConfinedJob(
        cpus=int(find(r"^(\d+)$", "nproc line").group(1)),
        allowed=find(r"Cpus_allowed_list:\s*(\S+)", "Cpus_allowed_list").group(1),
        output=output,
        ran_on=frozenset(int(n) for n in re.findall(r"^ran_on (\d+)$", output, re.M)),
        cpu_ratio=(user + system) / wall,
        cpu_seconds=user + system,
        leftover=int(find(r"^leftover=(\d+)$", "leftover pid").group(1)),
    )


def assert_confined(job: ConfinedJob) -> None:
    """One CPU of two, and two busy loops got the time of one."""
    assert job.cpus >= 2, "the machine needs 2 CPUs to show a confinement"
    assert re.fullmatch(r"\d+", job.allowed), f"a core=1 job may use {job.allowed}"
    assert job.ran_on == {int(job.allowed)}, f"the busy loops ran on CPUs {sorted(job.ran_on)}"
    assert job.cpu_seconds >= 1, f"the busy loops hardly ran: {job.output}"
    assert job.cpu_ratio <= MAX_CONFINED_CPU_RATIO, (
        f"two busy loops got {job.cpu_ratio:.2f} CPUs in a core=1 job:\n{job.output}")
