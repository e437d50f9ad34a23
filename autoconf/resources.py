"""The OAR resources of one machine, numbered exactly as OAR's own oar_resources_init does.

Debian's /usr/lib/oar/oar_resources_init (OAR 2.5.9), default mode (no -H/-T), reads the node's
/proc/cpuinfo and, for each logical processor sorted by `physical id` then `processor`:
  - CPU += 1 when the physical id differs from the previous processor's (ids continue from
    `oarnodesetting --last-property-value cpu`, so they are unique cluster-wide),
  - CORE += 1 for every logical processor (continuing from the last `core` likewise),
  - cpuset = the processor number (N of /sys/devices/system/cpu/cpuN),
  - mem = MemTotal kB / 1024 / 1024 + 1 (integer division: a figure that is not "rounded up"
    for an exact number of GiB; reproduced as is so both tools agree).
Without any `physical id` line (no SMP topology) every processor counts as its own cpu.
/proc/cpuinfo lists online processors only, as autoconf.detect does; its `physical id` is the
kernel's physical_package_id, which detect reads from sysfs.

The `thread` property (which oar_resources_init only sets with -T) is set here as OAR's -T mode
sets it: a cluster-wide id that steps for every logical processor, continuing from the largest
`thread` in the database. Not the hyperthread index (0/1) within the core: OAR groups resources
by the distinct values of a property across the whole cluster, so a per-core index would make
`oarsub -l thread=4` mean "4 distinct index values" (at most 2) instead of 4 hardware threads.
The per-core index stays available in the detection (`Cpu.thread`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from autoconf.detect import Detection

PROPERTIES = ("host", "cpu", "core", "thread", "cpuset", "mem")


@dataclass(frozen=True)
class Resource:
    host: str
    cpu: int
    core: int
    thread: int
    cpuset: int
    mem: int  # GiB, as oar_resources_init computes it

    def properties(self) -> list[tuple[str, str]]:
        """OAR properties in oarnodesetting's order (host, cpu, core, thread, cpuset, mem)."""
        return [(name, str(getattr(self, name))) for name in PROPERTIES]

    def oarnodesetting_argv(self) -> list[str]:
        """The argument list that adds this resource (`oarnodesetting -a` always inserts)."""
        argv = ["oarnodesetting", "-a", "-h", self.host]
        for name, value in self.properties():
            argv += ["-p", f"{name}={value}"]
        return argv

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def oar_mem_gib(mem_mib: int) -> int:
    """oar_resources_init's `mem`: MemTotal kB / 1024 / 1024 + 1 (mem_mib = MemTotal kB // 1024)."""
    return mem_mib // 1024 + 1


def plan_resources(d: Detection, host: str, cpu_base: int = 0, core_base: int = 0,
                   thread_base: int = 0) -> list[Resource]:
    """One resource per online logical CPU; the bases are the largest ids already in the DB."""
    has_sockets = any(c.socket >= 0 for c in d.cpus)
    if has_sockets:
        ordered = sorted(d.cpus, key=lambda c: (c.socket, c.cpu))
    else:  # no physical id: oar_resources_init emits "processor:processor"
        ordered = sorted(d.cpus, key=lambda c: c.cpu)
    mem = oar_mem_gib(d.mem_mib)
    cpu, core, thread = cpu_base, core_base, thread_base
    previous: int | None = None
    plan = []
    for c in ordered:
        group = c.socket if has_sockets else c.cpu
        if group != previous:
            cpu += 1
        core += 1
        thread += 1
        previous = group
        plan.append(Resource(host=host, cpu=cpu, core=core, thread=thread, cpuset=c.cpu, mem=mem))
    return plan
