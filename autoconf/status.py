"""`oar-autoconf status`: the cluster's nodes, their state and resources, and whether it is ready.

The cluster is ready when at least `oar.nbmin` nodes are Alive (a node is Alive when all of
its resources are) and none of its registered resources is Suspected (a job asking for all
the nodes would wait for it). A node that is not Alive shows why when the registration
service's last check of it failed (its CHECKS_FILE). Exit status: 0 ready, 1 not ready (yet),
2 the state cannot be read. `--wait SECONDS` polls until ready or the time is up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from autoconf.config import ConfigError, read_config
from autoconf.oarconf import OAR_CONF
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.registration import CHECKS_FILE
from autoconf.resources import cpuset_cpus

__all__ = ["NodeStatus", "cpuset_ranges", "is_ready", "main", "read_problems", "summarise"]


@dataclass(frozen=True)
class NodeStatus:
    host: str
    state: str  # the common state of its resources, or "Mixed"
    resources: int
    cpusets: tuple[int, ...]  # the Linux CPUs of all its resources
    suspected: int = 0  # how many of its resources are Suspected

    @property
    def alive(self) -> bool:
        return self.state == "Alive"


def cpuset_ranges(cpusets: Iterable[int]) -> str:
    """Sorted cpuset ids as ranges, like the kernel's lists: 0-3,8,10-11."""
    ids = sorted(set(cpusets))
    parts: list[str] = []
    start = previous = None
    for n in [*ids, None]:
        if start is not None and (n is None or n != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if n is not None and start is None:
            start = n
        previous = n
    return ",".join(parts)


def summarise(resources: Iterable[OarResource]) -> list[NodeStatus]:
    """One NodeStatus per host, sorted by host name."""
    by_host: dict[str, list[OarResource]] = {}
    for r in resources:
        by_host.setdefault(r.host, []).append(r)
    nodes = []
    for host, mine in sorted(by_host.items()):
        states = {r.state for r in mine}
        state = states.pop() if len(states) == 1 else "Mixed"
        cpus = sorted({n for r in mine for n in _cpus(r.cpuset)})
        nodes.append(NodeStatus(host, state, len(mine), tuple(cpus),
                                sum(r.state == "Suspected" for r in mine)))
    return nodes


def _cpus(cpuset: str) -> tuple[int, ...]:
    """The CPUs of a resource's cpuset; none for a value OAR Live did not write."""
    try:
        return cpuset_cpus(cpuset)
    except ValueError:
        return ()


def is_ready(nodes: list[NodeStatus], nbmin: int) -> bool:
    """nbmin nodes Alive and no resource Suspected."""
    return sum(n.alive for n in nodes) >= nbmin and not any(n.suspected for n in nodes)


def read_problems(root: Path) -> dict[str, str]:
    """host -> why the registration service's last check of it failed (nothing when it passed,
    or when the file is missing or unreadable: the service may not have checked yet)."""
    try:
        data = json.loads((root / CHECKS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(host): str(check["problem"]) for host, check in data.items()
            if isinstance(check, dict) and check.get("problem")}


def _render(nodes: list[NodeStatus], nbmin: int, problems: dict[str, str]) -> str:
    alive = sum(node.alive for node in nodes)
    lines = [f"{'NODE':<20} {'STATE':<10} {'RESOURCES':>9}  CPUSETS"]
    for n in nodes:
        line = f"{n.host:<20} {n.state:<10} {n.resources:>9}  {cpuset_ranges(n.cpusets)}"
        if not n.alive and n.host in problems:
            line += f"  ({problems[n.host]})"
        lines.append(line)
    if not nodes:
        lines.append("(no node registered yet)")
    suspected = sum(n.suspected for n in nodes)
    verdict = "cluster ready" if is_ready(nodes, nbmin) else "cluster not ready"
    detail = f", {suspected} resources Suspected" if suspected else ""
    lines.append(f"{verdict}: {alive} of {nbmin} required nodes Alive{detail} "
                 f"({len(nodes)} registered)")
    return "\n".join(lines)


def main(argv: list[str] | None = None, oar: Oar | None = None,
         clock: Callable[[], float] = time.monotonic) -> int:
    parser = argparse.ArgumentParser(
        prog="oar-autoconf status", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="poll until the cluster is ready or SECONDS have passed")
    args = parser.parse_args(argv)
    try:
        nbmin = read_config(args.root).nbmin
    except ConfigError as exc:
        print(f"oar-autoconf status: {exc}", file=sys.stderr)
        return 2
    oar = oar or Oar(args.root / OAR_CONF)
    deadline = clock() + max(args.wait, 0.0)
    while True:
        try:
            nodes = summarise(oar.resources())
        except OarError as exc:
            print(f"oar-autoconf status: {exc}", file=sys.stderr)
            return 2
        ready = is_ready(nodes, nbmin)
        if ready or clock() >= deadline:
            break
        time.sleep(2)
    problems = read_problems(args.root)
    if args.json:
        print(json.dumps({
            "ready": ready,
            "nbmin": nbmin,
            "nodes": [
                {"host": n.host, "state": n.state, "resources": n.resources,
                 "cpusets": list(n.cpusets), "suspected": n.suspected,
                 **({"problem": problems[n.host]}
                    if not n.alive and n.host in problems else {})} for n in nodes
            ],
        }, indent=2))  # fmt: skip
    else:
        print(_render(nodes, nbmin, problems))
    return 0 if ready else 1
