"""Benchmark: registering nodes through the service vs the bare oarnodesetting calls, same run.

N simulated nodes x 4 cores register concurrently (one thread each) through the real service
on loopback, against a real PostgreSQL + oar-server; the baseline is a shell script running the
same number of `oarnodesetting -a` calls serially. The figure is the ratio service / baseline
(target <= 1.2: what validation, the idempotence check, the lock and HTTP cost on top of OAR's
own commands). Both sets of resources are then checked, and judged: every one present exactly
once, every core id used once, every registration answered 200.

Needs root and a throw-away machine (see tests/autoconf/fakenodes.loopback_oar_server).
`BENCH_REGISTRY_NODES` overrides N (default 100).
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from autoconf.detect import Detection
from autoconf.registry import Registry, RegistrySettings, ServerState
from autoconf.resources import plan_resources
from bench.timing import verdict
from boot import proc
from tests.autoconf.fakenodes import (
    detection_json,
    loopback_oar_server,
    new_hostname,
    post,
    registration,
    serving,
)

CORES = 4
TARGET = 1.2


def _baseline_script(hosts: list[str], first_core: int) -> str:
    """The same oarnodesetting -a calls the service makes, as a serial shell script."""
    lines = ["set -e"]
    cpu, core = first_core, first_core
    for host in hosts:
        detection = Detection.from_json(detection_json(host, "127.0.0.1", cores=CORES))
        for resource in plan_resources(detection, host, cpu, core, core):
            lines.append(shlex.join(resource.oarnodesetting_argv()) + " >/dev/null")
        cpu, core = cpu + 1, core + CORES
    return "\n".join(lines) + "\n"


def _register_all(port: int, token: str, hosts: list[str]) -> dict[str, int]:
    statuses: dict[str, int] = {}

    def one(n: int, host: str) -> None:
        address = f"127.{4 + n // 250}.{n % 250}.{1 + n % 200}"
        statuses[host] = post(port, registration(token, host, address, cores=CORES))[0]

    threads = [threading.Thread(target=one, args=(n, h)) for n, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)
    return statuses


def run(nodes: int | None = None) -> dict[str, Any]:
    """Run the benchmark; its figures as a dict (times in seconds)."""
    nodes = nodes or int(os.environ.get("BENCH_REGISTRY_NODES", "100"))
    token = "bench-" + os.urandom(8).hex()
    with loopback_oar_server() as oar, tempfile.TemporaryDirectory() as tmp:
        baseline_hosts = [new_hostname() for _ in range(nodes)]
        service_hosts = [new_hostname() for _ in range(nodes)]
        script = Path(tmp, "baseline.sh")
        script.write_text(_baseline_script(baseline_hosts, first_core=0))
        start = time.perf_counter()
        proc.run(["bash", str(script)], timeout=3600)
        baseline = time.perf_counter() - start

        hosts_file = Path(tmp, "hosts")
        hosts_file.write_text("127.0.0.1 localhost\n")
        settings = RegistrySettings(
            token=token,
            server=ServerState("localhost", "127.0.0.1", "127.0.0.0/8"),
            oar_conf=Path("/etc/oar/oar.conf"),
            hosts_file=hosts_file,
        )
        with serving(Registry(settings, oar)) as port:
            start = time.perf_counter()
            statuses = _register_all(port, token, service_hosts)
            service = time.perf_counter() - start

        rows = oar.resources()
        counts = Counter((r.host, r.cpuset) for r in rows)
        wanted = {(h, c) for h in baseline_hosts + service_hosts for c in range(CORES)}
        cores = Counter(r.core for r in rows)
    calls = nodes * CORES
    ratio = service / baseline
    every_once = set(counts) == wanted and all(n == 1 for n in counts.values())
    cores_unique = bool(cores) and all(n == 1 for n in cores.values())
    answered = sum(1 for s in statuses.values() if s == 200)
    verdicts = [
        verdict(f"{nodes} concurrent registrations / serial oarnodesetting", ratio, TARGET),
        f"{'met' if every_once else 'MISSED'}: every resource of both runs present exactly once",
        f"{'met' if cores_unique else 'MISSED'}: every core id used once",
        f"{'met' if answered == nodes else 'MISSED'}: {answered} of {nodes} registrations "
        "answered 200",
    ]
    return {
        "nodes": nodes,
        "cores_per_node": CORES,
        "oarnodesetting_calls": calls,
        "baseline_serial_script_s": round(baseline, 3),
        "service_concurrent_s": round(service, 3),
        "ratio": round(ratio, 3),
        "oarnodesetting_ms_per_call": round(1000 * baseline / calls, 1),
        "http_200": answered,
        "every_resource_once": every_once,
        "core_ids_unique": cores_unique,
        "verdicts": verdicts,
    }

if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
