"""Benchmark: the shared home (NFSv4 from the server) against a node's own RAM disk, one job.

One `oar-vcluster up --nodes 1` cluster; one OAR job on the node writes SIZE_MIB MiB with
`dd conv=fsync` and reads it back (the node's page cache dropped in between, so the read
crosses the network) first in the shared home, then in the node's /dev/shm (tmpfs: its RAM),
same job, same run. Figures:
- `home_write_s`, `home_read_s`, `ram_write_s`, `ram_read_s`: each dd's wall time in the job;
- `home_mib_s`: the shared home's throughput (write + read of SIZE_MIB each);
- `ratio`: (home write + read) / (RAM disk write + read), target < RATIO_TARGET. Under software
  emulation every packet costs the emulated CPUs of both VMs, so the home is far slower than
  RAM; the target catches a mount that went synchronous per block or a server gone wrong (a
  timeout of the soft mount takes 60 s), not the price of the network.
The ISO: $OAR_LIVE_ISO, else out/oar-live.iso (`make iso`).
"""

from __future__ import annotations

import re
import shlex

from bench.vms import booted_cluster, built_iso
from boot.vcluster import state as vstate
from boot.vcluster.remote import Remote

SIZE_MIB = 200
RATIO_TARGET = 40.0
SCRIPT = "oar-live-bench-nfs.sh"
# Run by the job on the node: one line per place, `PLACE WRITE_S READ_S DROPPED`.
JOB = f"""#!/bin/bash
set -e
TIMEFORMAT=%R
for place in home ram; do
  file=/dev/shm/bench-nfs.$OAR_JOB_ID
  [ $place = ram ] || file=~/bench-nfs.$OAR_JOB_ID
  w=$( {{ time dd if=/dev/zero of=$file bs=1M count={SIZE_MIB} conv=fsync status=none; }} 2>&1 )
  dropped=yes
  sudo -n sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches' 2>/dev/null || dropped=no
  r=$( {{ time dd if=$file of=/dev/null bs=1M status=none; }} 2>&1 )
  rm -f $file
  echo "$place $w $r $dropped"
done
"""
LINE = re.compile(r"^(home|ram) ([\d.]+) ([\d.]+) (yes|no)$", re.M)


def run() -> dict:
    iso = built_iso()
    with booted_cluster(iso, 1) as state_dir:
        remote = Remote(vstate.load(state_dir))
        remote.run(f"cat > ~/{SCRIPT} <<'EOF'\n{JOB}EOF", timeout=60)
        job = remote.submit(f"bash ~/{SCRIPT}", "nodes=1")
        final = remote.wait_job(job, 900)
        out = remote.job_output(job)  # read on the server: the home is shared
    found = {m[1]: (float(m[2]), float(m[3]), m[4]) for m in LINE.finditer(out)}
    if final != "Terminated" or set(found) != {"home", "ram"}:
        raise RuntimeError(f"the benchmark job ended {final}: {shlex.quote(out[-500:])}")
    (hw, hr, dropped), (rw, rr, _) = found["home"], found["ram"]
    ratio = (hw + hr) / max(rw + rr, 1e-3)
    met = ratio < RATIO_TARGET
    return {
        "size_mib": SIZE_MIB,
        "home_write_s": hw,
        "home_read_s": hr,
        "ram_write_s": rw,
        "ram_read_s": rr,
        "page_cache_dropped": dropped,
        "home_mib_s": round(2 * SIZE_MIB / max(hw + hr, 1e-3), 1),
        "ratio": round(ratio, 1),
        "verdicts": [f"{'met' if met else 'MISSED'}: the shared home takes {ratio:.1f} times "
                     f"the RAM disk's time for {SIZE_MIB} MiB written and read back "
                     f"(target < {RATIO_TARGET:g})"],
    }
