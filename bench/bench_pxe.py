"""Benchmark: a node netbooted from the OAR Live server against the same VM booted from the ISO.

Two virtual clusters of the same shape (server + N nodes of 1 CPU and 1.5 GiB, `oar-vcluster`),
one whose nodes boot the ISO (kernel + CD) and one whose nodes netboot from the server
(`--pxe`). Once a cluster is ready, nodes are power-cycled (qemu `system_reset`, no clean
shutdown) and timed from the reset until their agent says they are Alive in OAR again:

- `iso_node_s`: node-1 of the ISO cluster, alone (the baseline);
- `pxe_node_s`: node-1 of the netboot cluster, alone: firmware PXE, TFTP, kernel + initrd over
  HTTP, the squashfs fetched into RAM; `netboot_ratio` = pxe / iso (target <= 1.5);
- `pxe_all_s`: all N nodes of the netboot cluster reset at once, until the last is Alive;
  `concurrent_ratio` = pxe_all / pxe_node (target <= 2).
N is $OAR_BENCH_PXE_NODES (default 4); the ISO cluster has $OAR_BENCH_ISO_NODES nodes (default
N; fewer idle VMs beside it only favour the baseline). Everything runs under software emulation
on this machine's cores: with 2 cores, N + 1 VMs share them, which the figures include.
The ISO: $OAR_LIVE_ISO, else out/oar-live.iso (`make iso`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import verdict
from bench.vms import built_iso, vcluster
from boot.vcluster import stage as vstage
from boot.vcluster import state as vstate
from boot.vcluster.state import ClusterState

PROJECT = Path(__file__).resolve().parents[1]
NETBOOT_TARGET = 1.5
CONCURRENT_TARGET = 2.0
NODE_MEM = "1536"


def _log(state: ClusterState, name: str) -> str:
    return state.serial_log(state.machine(name)).read_bytes().decode(errors="replace")


def _reset(state: ClusterState, name: str) -> None:
    """Power-cycle a VM: qemu's reset, as a power button held down would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
        monitor.connect(str(state.state_dir / f"{name}.monitor.sock"))
        monitor.sendall(b"system_reset\n")
        time.sleep(0.2)


def power_cycle(state: ClusterState, names: list[str], timeout: float = 1500) -> float:
    """Reset `names` at once; seconds until every one of them is Alive again."""
    boots = {n: len(vstage.KERNEL_START.findall(_log(state, n))) for n in names}
    started = time.monotonic()
    for name in names:
        _reset(state, name)
    waiting = set(names)
    while waiting:
        for name in list(waiting):
            log = _log(state, name)
            rebooted = len(vstage.KERNEL_START.findall(log)) > boots[name]
            stage = vstage.progress(log, "node").stage
            if stage is vstage.Stage.FAILED:
                raise RuntimeError(f"{name} failed after its reset: "
                                   f"{vstage.progress(log, 'node').detail}")
            if rebooted and stage is vstage.Stage.ALIVE:
                waiting.discard(name)
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{sorted(waiting)} not Alive {timeout:.0f} s after a reset")
        time.sleep(1)
    return time.monotonic() - started


def _cluster(iso: Path, nodes: int, work: Path, pxe: bool) -> tuple[Path, ClusterState]:
    """`oar-vcluster up` (with --pxe or not) until `nodes` nodes are Alive."""
    state_dir = work / ("pxe" if pxe else "iso")
    args = ["up", "--iso", str(iso), "--nodes", str(nodes), "--mem", NODE_MEM]
    vcluster(state_dir, *args, *(["--pxe"] if pxe else []), timeout=2400)
    state = vstate.load(state_dir)
    if state is None:
        raise RuntimeError(f"no cluster state in {state_dir}")
    return state_dir, state


def run() -> dict:
    iso = built_iso()
    nodes = int(os.environ.get("OAR_BENCH_PXE_NODES", "4"))
    iso_nodes = int(os.environ.get("OAR_BENCH_ISO_NODES", str(nodes)))
    figures: dict = {"nodes": nodes, "iso_cluster_nodes": iso_nodes}
    with tempfile.TemporaryDirectory(prefix="oar-bench-pxe-") as tmp:
        work = Path(tmp)
        for pxe in (False, True):
            state_dir, state = None, None
            try:
                state_dir, state = _cluster(iso, nodes if pxe else iso_nodes, work, pxe)
                if not pxe:
                    figures["iso_node_s"] = round(power_cycle(state, ["node-1"]), 1)
                else:
                    figures["pxe_node_s"] = round(power_cycle(state, ["node-1"]), 1)
                    everyone = [m.name for m in state.nodes]
                    figures["pxe_all_s"] = round(power_cycle(state, everyone), 1)
            finally:
                if state_dir is not None:
                    subprocess.run([sys.executable, "-m", "boot.vcluster.cli", "--state-dir",
                                    str(state_dir), "down"], check=False,
                                   stdout=subprocess.DEVNULL)
    netboot = figures["pxe_node_s"] / figures["iso_node_s"]
    concurrent = figures["pxe_all_s"] / figures["pxe_node_s"]
    figures["netboot_ratio"] = round(netboot, 2)
    figures["concurrent_ratio"] = round(concurrent, 2)
    figures["verdicts"] = [
        verdict("netboot vs ISO (one node)", netboot, NETBOOT_TARGET),
        verdict(f"{nodes} nodes at once vs one", concurrent, CONCURRENT_TARGET),
    ]
    return figures
