"""Benchmark: `oar-vcluster up` to a ready cluster for 1, 2 and 3 nodes, against a solo boot.

Figures, all measured in this run on this machine (software emulation unless KVM works):
- `solo_s`: one VM booted with `oar.role=solo` until its agent says `ready in` (the baseline);
- `up_<n>_nodes_s`: `oar-vcluster up --nodes n` until n nodes are Alive on the server;
- `per_node_ratio`: growth per added node, (up_3 - up_1) / 2, over solo_s (target < 0.5: VMs
  boot in parallel, a node should cost less than half a machine's boot);
- `agent_node_s`: the agent's time on a node that boots while its server is up (a reboot of
  node-1 of the 1-node cluster), measured from outside: from the moment the first line of the
  agent's unit reaches the serial log to the moment its `ready in` line does, the log watched
  every 50 ms (target < 3 s).
The ISO: $OAR_LIVE_ISO, else out/oar-live.iso (`make iso`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.vms import built_iso, vcluster
from boot import console
from boot.vcluster import state as vstate
from boot.vcluster.cli import TCG
from boot.vcluster.plan import extract_boot_files
from boot.vcluster.qemu import VM, VMSpec
from boot.vcluster.remote import Remote

PROJECT = Path(__file__).resolve().parents[1]
PER_NODE_TARGET = 0.5
AGENT_TARGET_S = 3.0
LOG_POLL_S = 0.05


def _solo(iso: Path, work: Path) -> float:
    kernel, initrd, base = extract_boot_files(iso, work / "boot")
    append = f"{base} console=ttyS0,115200n8 oar.role=solo oar.timeout=0 oar.keymap=us"
    spec = VMSpec("solo", work, kernel=kernel, initrd=initrd, append=append, cpus=1,
                  accel=TCG, extra_args=("-drive", f"file={iso},media=cdrom,readonly=on"),
                  netdevs=(("user,id=n0,restrict=on", "virtio-net-pci,netdev=n0"),))
    started = time.monotonic()
    with VM(spec) as vm:
        vm.wait_for(console.READY.pattern, 900)
        return time.monotonic() - started


def _agent_seconds(log: Path, since: int, limit: float = 600) -> float:
    """Host time between the agent's first line and its `ready in` line, both read from the
    serial log after byte `since`; -1 when not seen within `limit` seconds."""
    started = None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = log.read_bytes()[since:].decode(errors="replace")
        now = time.monotonic()
        start = console.AGENT_STARTED.search(text)
        if start and started is None:
            started = now
        if start and console.READY.search(text, start.end()):
            return now - started
        time.sleep(LOG_POLL_S)
    return -1.0


def _up(iso: Path, nodes: int, work: Path, reboot_for_agent: bool = False) -> tuple[float, float]:
    state_dir = work / f"vc{nodes}"
    started = time.monotonic()
    agent = -1.0
    try:
        vcluster(state_dir, "up", "--iso", str(iso), "--nodes", str(nodes), "--accel", "tcg")
        elapsed = time.monotonic() - started
        if reboot_for_agent:
            state = vstate.load(state_dir)
            node = state.nodes[0]
            log = state.serial_log(node)
            before = log.stat().st_size
            Remote(state).run("sudo -n systemctl reboot", node, timeout=60, check=False)
            agent = _agent_seconds(log, before)
        return elapsed, agent
    finally:
        vcluster(state_dir, "down")


def run() -> dict:
    iso = built_iso()
    with tempfile.TemporaryDirectory(prefix="bench-vcluster-") as tmp:
        work = Path(tmp)
        solo = _solo(iso, work)
        up1, agent = _up(iso, 1, work, reboot_for_agent=True)
        up2, _ = _up(iso, 2, work)
        up3, _ = _up(iso, 3, work)
    per_node = (up3 - up1) / 2
    ratio = per_node / solo
    verdicts = [
        f"{'met' if ratio < PER_NODE_TARGET else 'MISSED'}: a node costs {ratio:.2f} of a solo "
        f"boot (target < {PER_NODE_TARGET})",
        f"{'met' if 0 <= agent < AGENT_TARGET_S else 'MISSED'}: the agent's time on a node "
        f"{agent:.1f} s from its serial log (target < {AGENT_TARGET_S:g} s; -1: not seen)",
    ]
    return {
        "solo_s": round(solo, 1),
        "up_1_node_s": round(up1, 1),
        "up_2_nodes_s": round(up2, 1),
        "up_3_nodes_s": round(up3, 1),
        "per_node_s": round(per_node, 1),
        "per_node_ratio": round(ratio, 2),
        "agent_node_s": round(agent, 1),
        "verdicts": verdicts,
    }
