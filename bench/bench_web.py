"""Benchmark: the cluster page's server-side cost per refresh and the REST API against oarnodes.

One `oar-vcluster up --nodes 1` (software emulation) from $OAR_LIVE_ISO (else out/oar-live.iso);
every figure is measured in this run, on the server VM:
- `page_cpu_ms`: CPU the server spends per refresh of the cluster page (GET /cluster.json
  through the forwarded web port): the server's busy time from /proc/stat over REFRESHES
  requests, less its idle rate measured just before over the same kind of window;
- `oarnodes_cpu_ms`: the same for one `oarnodes -J` run on the server (the baseline: what a
  page built on OAR's own command would cost per refresh); target page/oarnodes <= 0.5;
- `api_resources_s`: wall time of `GET /oarapi/resources.json` (HTTP basic auth, from this
  machine) against `oarnodes_s`, `oarnodes -J` on the server; target api/oarnodes <= 3.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.timing import verdict
from bench.vms import built_iso, vcluster
from boot.vcluster import state as vstate
from boot.vcluster.remote import Remote, read_credentials

REFRESHES = 10
IDLE_S = 20.0
PAGE_TARGET = 0.5
API_TARGET = 3.0
STAT = "head -1 /proc/stat; getconf CLK_TCK"


def _busy_seconds(remote: Remote) -> tuple[float, float]:
    """(the server's busy CPU seconds since boot, when it was read on this machine)."""
    out = remote.run(STAT, timeout=60).stdout.split()
    ticks = [int(v) for v in out[1:-1]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / int(out[-1]), time.monotonic()


def _cost(remote: Remote, work, repeat: int, idle_rate: float) -> float:
    """CPU seconds the server spends per `work()`, its idle rate taken off."""
    busy0, t0 = _busy_seconds(remote)
    for _ in range(repeat):
        work()
    busy1, t1 = _busy_seconds(remote)
    return max(0.0, (busy1 - busy0) - idle_rate * (t1 - t0)) / repeat


def _get(url: str, auth: str | None = None) -> float:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as answer:
        answer.read()
    return time.perf_counter() - started


def run() -> dict:
    iso = built_iso()
    account = read_credentials(iso)
    with tempfile.TemporaryDirectory(prefix="oar-live-bench-web-") as work:
        state_dir = Path(work) / "vc"
        try:
            vcluster(state_dir, "up", "--iso", str(iso), "--nodes", "1", "--accel", "tcg")
            state = vstate.load(state_dir)
            remote = Remote(state)
            base = f"http://127.0.0.1:{state.web_port}"
            _get(base + "/cluster.json")  # the first request warms Apache and the caches
            busy0, t0 = _busy_seconds(remote)
            time.sleep(IDLE_S)
            busy1, t1 = _busy_seconds(remote)
            idle_rate = (busy1 - busy0) / (t1 - t0)
            page = _cost(remote, lambda: _get(base + "/cluster.json"), REFRESHES, idle_rate)
            oarnodes_cpu = _cost(remote, lambda: remote.run("oarnodes -J >/dev/null",
                                                            timeout=120), 3, idle_rate)
            login = f"{account.user}:{account.password}"
            api = statistics.median(_get(base + "/oarapi/resources.json", login)
                                    for _ in range(5))
            timed = remote.run("TIMEFORMAT=%R; for i in 1 2 3 4 5; do time oarnodes -J "
                               ">/dev/null; done", timeout=300).stderr.split()
            oarnodes = statistics.median(float(t) for t in timed)
        finally:
            vcluster(state_dir, "down")
    # oarnodes_cpu includes the ssh session that runs it: a generous baseline for the page
    page_ratio, api_ratio = page / oarnodes_cpu, api / oarnodes
    return {
        "page_cpu_ms": round(page * 1000), "oarnodes_cpu_ms": round(oarnodes_cpu * 1000),
        "idle_cpu_ms_per_s": round(idle_rate * 1000), "api_resources_s": round(api, 2),
        "oarnodes_s": round(oarnodes, 2), "page_ratio": round(page_ratio, 2),
        "api_ratio": round(api_ratio, 2),
        "verdicts": [verdict("page CPU / oarnodes -J CPU", page_ratio, PAGE_TARGET),
                     verdict("GET /oarapi/resources / oarnodes -J", api_ratio, API_TARGET)],
    }  # fmt: skip
