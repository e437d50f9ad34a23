"""Benchmark: from boot to `oar-live check` passing, for 1, 2 and 3 nodes, against boot to ready.

For each size, one `oar-vcluster up --nodes n` (returns when n nodes are Alive: the baseline,
`up_<n>_s`), then `sudo oar-live check --json` on the server until it passes (`check_<n>_s`,
its jobs included); `boot_to_check_<n>_s` is their sum, `check_ratio_<n>` the sum over the
baseline (target <= 2: testing the cluster costs less than booting it), `ready_<n>_s` the
server-boot-to-ready time the check itself reports. $OAR_BENCH_CHECK_NODES (e.g. `2`) picks
the sizes; the ISO: $OAR_LIVE_ISO, else out/oar-live.iso.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench.vms import built_iso, vcluster
from boot.vcluster import state as vstate
from boot.vcluster.remote import Remote

RATIO_TARGET = 2.0


def _one(iso: Path, nodes: int, work: Path) -> dict[str, float]:
    state_dir = work / f"vc{nodes}"
    started = time.monotonic()
    try:
        vcluster(state_dir, "up", "--iso", str(iso), "--nodes", str(nodes), "--accel", "tcg",
                 "--smp", "1,2,1"[: 2 * nodes - 1])
        up = time.monotonic() - started
        remote = Remote(vstate.load(state_dir))
        result = remote.run("sudo -n oar-live check --json", timeout=900, check=False)
        checked = time.monotonic() - started - up
        report = json.loads(result.stdout or "{}")
        if result.returncode != 0 or not report.get("ok"):
            failed = [c for c in report.get("checks", []) if not c.get("ok")]
            raise RuntimeError(f"oar-live check failed on {nodes} node(s): "
                               f"{failed or result.stderr.strip()}")
    finally:
        vcluster(state_dir, "down")
    return {f"up_{nodes}_s": round(up, 1), f"check_{nodes}_s": round(checked, 1),
            f"boot_to_check_{nodes}_s": round(up + checked, 1),
            f"check_ratio_{nodes}": round((up + checked) / up, 2),
            f"ready_{nodes}_s": report.get("ready_s") or -1}


def run() -> dict:
    iso = built_iso()
    sizes = [int(n) for n in os.environ.get("OAR_BENCH_CHECK_NODES", "1,2,3").split(",")]
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        for nodes in sizes:
            figures.update(_one(iso, nodes, Path(tmp)))
    figures["verdicts"] = [
        f"{'met' if figures[f'check_ratio_{n}'] <= RATIO_TARGET else 'MISSED'}: boot to a "
        f"passing check is {figures[f'check_ratio_{n}']:.2f} x boot to ready on {n} node(s) "
        f"(target <= {RATIO_TARGET:g})" for n in sizes]
    return figures
