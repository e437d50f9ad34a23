"""The OAR resources of one machine, numbered exactly as the image's OAR numbers them.

Which numbering applies is one fact of the image: the OAR version its recipe installed
(`oar_version`, written to /etc/oar-live/oar-version at build time), read by `image_granularity`.

OAR 2.5 (Debian's 2.5.9 /usr/lib/oar/oar_resources_init, default mode, no -H/-T) reads the node's
/proc/cpuinfo and makes ONE RESOURCE PER LOGICAL CPU, sorted by `physical id` then `processor`:
  - CPU += 1 when the physical id differs from the previous processor's (ids continue from
    `oarnodesetting --last-property-value cpu`, so they are unique cluster-wide),
  - CORE += 1 for every logical processor (continuing from the last `core` likewise),
  - cpuset = the processor number (N of /sys/devices/system/cpu/cpuN).
Without any `physical id` line (no SMP topology) every processor counts as its own cpu.
The `thread` property (which that script only sets with -T) is set as -T sets it: a
cluster-wide id that steps for every logical processor, continuing from the largest `thread`
in the database (a per-core index 0/1 would make `oarsub -l thread=4` mean "4 distinct index
values"). The per-core index stays in the detection (`Cpu.thread`).

OAR 2.6 (Debian's 2.6.1 script, default mode, no -t) reads `hwloc-ls -p --no-io --no-caches`
and makes ONE RESOURCE PER PHYSICAL CORE: CPU += 1 at each `Package P#n` line, CORE += 1 at
each `Core P#n` line, cpuset = the core's `PU P#n` numbers (Linux CPU numbers) joined by ","
in hwloc's order (packages, cores and PUs by their lowest CPU): `0,4` for a core whose
hyperthreads are CPUs 0 and 4. No `thread` property (only -t creates it): 2.6's systemd job
manager ignores COMPUTE_THREAD_SIBLINGS, so the siblings must be in the cpuset itself.
One deliberate difference: on a core with a single PU hwloc prints `Core P#0 + PU P#0` on one
line, and 2.6.1's script then never closes the core, so without -t all the single-PU cores that
follow one another land in ONE resource (a 2-core VM gets `core=2 cpuset=0,1`, and a `core=1`
job both CPUs). Here such a core is its own resource, as the script numbers it with -t.

`mem` is MemTotal kB / 1024 / 1024 + 1 for both (2.5.9's integer formula). 2.6.1 takes the
number of hwloc's `Machine (N total)` line whatever its unit, which is MB below 10 GB (the
script warns "host memory unit is MB, not GB"): mem=1983 on a 2 GB machine. Kept in GiB.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from autoconf.detect import Cpu, Detection

PROPERTIES = ("host", "cpu", "core", "thread", "cpuset", "mem")
IMAGE_OAR_VERSION = Path("etc/oar-live/oar-version")  # written by the recipe (agent_install)
MAX_CPUSET_TEXT = 4096  # a cpuset value read back from OAR's database


class Granularity(StrEnum):
    """What one OAR resource is on this image."""

    CPU = "cpu"  # OAR 2.5: a logical CPU (a hyperthread)
    CORE = "core"  # OAR 2.6: a physical core with all its hyperthreads


OAR_VERSIONS = {"2.5": Granularity.CPU, "2.6": Granularity.CORE}  # the recipes' oar_version


def granularity_of(oar_version: str) -> Granularity:
    """The resource granularity of an OAR version ("2.5", "2.6"); ValueError for another."""
    try:
        return OAR_VERSIONS[oar_version]
    except KeyError:
        known = ", ".join(OAR_VERSIONS)
        raise ValueError(f"unknown OAR version {oar_version[:20]!r} (known: {known})") from None


def image_granularity(root: Path = Path("/")) -> Granularity:
    """The granularity of the OAR this image carries (root/etc/oar-live/oar-version).

    Without the file (an image built before it was written, a test tree): OAR 2.5's, what
    every image had then. ValueError names the file when its version is unknown.
    """
    path = root / IMAGE_OAR_VERSION
    try:
        with path.open(errors="replace") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return Granularity.CPU
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return granularity_of(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def cpuset_cpus(text: str) -> tuple[int, ...]:
    """The Linux CPU numbers of an OAR cpuset value ("0", "0,4", "0+4", "0 4"), sorted.

    ValueError for anything else (OAR's database may hold a value set by hand).
    """
    if len(text) > MAX_CPUSET_TEXT or not re.fullmatch(r"\s*\d+(\s*[,+ ]\s*\d+)*\s*", text):
        raise ValueError(f"not a cpuset (CPU numbers separated by , + or space): {text[:80]!r}")
    return tuple(sorted({int(n) for n in re.findall(r"\d+", text)}))


@dataclass(frozen=True)
class Resource:
    host: str
    cpu: int
    core: int
    thread: int | None  # None: no thread property (OAR 2.6, a resource is a core)
    cpuset: str  # Linux CPU numbers joined by ",": "3", or "0,4" for a core's two hyperthreads
    mem: int  # GiB, as oar_resources_init computes it

    def properties(self) -> list[tuple[str, str]]:
        """OAR properties in oarnodesetting's order (host, cpu, core, thread, cpuset, mem)."""
        return [(name, str(getattr(self, name))) for name in PROPERTIES
                if getattr(self, name) is not None]

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
                   thread_base: int = 0,
                   granularity: Granularity = Granularity.CPU) -> list[Resource]:
    """The machine's resources in OAR's order; the bases are the largest ids already in the DB."""
    if granularity is Granularity.CORE:
        return _per_core(d, host, cpu_base, core_base)
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
        plan.append(Resource(host=host, cpu=cpu, core=core, thread=thread, cpuset=str(c.cpu),
                             mem=mem))
    return plan


def _per_core(d: Detection, host: str, cpu_base: int, core_base: int) -> list[Resource]:
    """OAR 2.6: one resource per core, in hwloc's order (every object by its lowest CPU)."""
    packages: dict[int, dict[int, list[Cpu]]] = {}
    for c in d.cpus:
        packages.setdefault(c.socket, {}).setdefault(c.core, []).append(c)

    def lowest(cpus: list[Cpu]) -> int:
        return min(c.cpu for c in cpus)

    mem = oar_mem_gib(d.mem_mib)
    cpu, core = cpu_base, core_base
    plan = []
    def first_cpu(package: dict[int, list[Cpu]]) -> int:
        return min(lowest(threads) for threads in package.values())

    for cores in sorted(packages.values(), key=first_cpu):
        cpu += 1
        for threads in sorted(cores.values(), key=lowest):
            core += 1
            cpuset = ",".join(str(c.cpu) for c in sorted(threads, key=lambda c: c.cpu))
            plan.append(Resource(host=host, cpu=cpu, core=core, thread=None, cpuset=cpuset,
                                 mem=mem))
    return plan
