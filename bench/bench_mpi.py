"""Benchmark: an MPI ring between two VMs started through oarsh, against the same ring over TCP.

One `oar-vcluster up --nodes 2` cluster, one OAR job on both nodes (`nodes=2/core=1`) that runs,
one after the other, ring.c under a bare `mpirun` (its daemons started through oarsh, its
messages over Open MPI's TCP transport) and tcp_ring.c (the same laps over one plain TCP
connection, its server half started through oarsh too). Figures, from this run:
- `mpi_latency_us` / `tcp_latency_us`: one hop of an 8-byte message;
- `mpi_bandwidth_MBps` / `tcp_bandwidth_MBps`: one hop of a 1 MiB message;
- `latency_ratio` = MPI / TCP (target <= 4), `bandwidth_ratio` = MPI / TCP (target >= 0.33):
  under software emulation every copy MPI adds costs CPU time the guest barely has (measured
  on 2 cores next to other VMs: 2877 us vs 1068 us, 21.9 vs 47.5 MB/s, ratios 2.7 and 0.46);
- `mpirun_ms`: the whole `mpirun ./ring` (daemons through oarsh, the laps, the teardown).
The ISO: $OAR_LIVE_ISO, else out/oar-live.iso (`make iso`).
"""

from __future__ import annotations

import base64

from autoconf.check import parse_report
from bench.vms import booted_cluster, built_iso
from boot.vcluster import state as vstate
from boot.vcluster.remote import Remote

LATENCY_TARGET = 4.0
BANDWIDTH_TARGET = 0.33
SOURCES = "/usr/lib/oar-live/autoconf/mpi"
FOLDER = "bench-mpi"  # in the job user's home, on every machine

JOB = r"""#!/bin/bash
hosts=($(sort -u "$OAR_NODEFILE"))
started=$(date +%s%N)
mpirun ./ring 2>&1 | sed 's/^/mpi /'
echo "mpirun_ms $(( ($(date +%s%N) - started) / 1000000 ))"
oarsh "${hosts[1]}" "cd ~/bench-mpi && exec ./tcp_ring serve 7790" &
./tcp_ring connect "${hosts[1]}" 7790 2>&1 | sed 's/^/tcp /'
wait
"""


def _figures(out: str) -> dict[str, float]:
    mpi = parse_report("\n".join(ln[4:] for ln in out.splitlines() if ln.startswith("mpi ")))
    tcp = parse_report("\n".join(ln[4:] for ln in out.splitlines() if ln.startswith("tcp ")))
    for name, found in (("mpi", mpi), ("tcp", tcp)):
        if found.get("ring") != "ok" or found.get("rank 0") == found.get("rank 1"):
            raise RuntimeError(f"the {name} ring did not run on two nodes:\n{out}")
    mpirun_ms = parse_report(out).get("mpirun_ms", "-1")
    return {"mpi_latency_us": float(mpi["latency_us"]), "tcp_latency_us": float(tcp["latency_us"]),
            "mpi_bandwidth_MBps": float(mpi["bandwidth_MBps"]),
            "tcp_bandwidth_MBps": float(tcp["bandwidth_MBps"]), "mpirun_ms": float(mpirun_ms)}


def rings(remote: Remote) -> dict[str, float]:
    """Build both programs on every machine (the same folder whether /home is shared or not),
    run the job, read its output."""
    script = base64.b64encode(JOB.encode()).decode()
    for machine in (remote.state.server, *remote.state.nodes):
        remote.run(f"mkdir -p ~/{FOLDER} && cd ~/{FOLDER} && "
                   f"mpicc -O2 -o ring {SOURCES}/ring.c && gcc -O2 -o tcp_ring "
                   f"{SOURCES}/tcp_ring.c && echo {script} | base64 -d > job.sh && "
                   "chmod +x job.sh", machine, timeout=300)
    job = remote.submit(f"cd ~/{FOLDER} && ./job.sh", "/nodes=2/core=1")
    final = remote.wait_job(job, timeout=900)
    if final != "Terminated":
        raise RuntimeError(f"the ring job ended {final}")
    return _figures(remote.job_output(job))


def run() -> dict:
    iso = built_iso()
    with booted_cluster(iso, 2) as state_dir:
        figures = rings(Remote(vstate.load(state_dir)))
    latency = figures["mpi_latency_us"] / figures["tcp_latency_us"]
    bandwidth = figures["mpi_bandwidth_MBps"] / figures["tcp_bandwidth_MBps"]
    return {
        **figures,
        "latency_ratio": round(latency, 2),
        "bandwidth_ratio": round(bandwidth, 2),
        "verdicts": [
            f"{'met' if latency <= LATENCY_TARGET else 'MISSED'}: MPI latency {latency:.2f} x "
            f"TCP's (target <= {LATENCY_TARGET:g})",
            f"{'met' if bandwidth >= BANDWIDTH_TARGET else 'MISSED'}: MPI bandwidth "
            f"{bandwidth:.2f} x TCP's (target >= {BANDWIDTH_TARGET:g})",
        ],
    }
