"""Benchmark: the cluster page's server-side cost per refresh and the REST API against oarnodes.

One `oar-vcluster up --nodes 1` (software emulation) from $OAR_LIVE_ISO (else out/oar-live.iso);
every figure is measured in this run, on the server VM, in one ssh session (ON_SERVER):
- `page_cpu_ms`: CPU the server spends per refresh of the cluster page (GET /cluster.json on
  its web port: Apache, the CGI, psql, PostgreSQL): the server's busy time from /proc/stat over
  REFRESHES requests, less its idle rate (`idle_cpu_ms_per_s`) measured just before;
- `oarnodes_cpu_ms`: the same for one `oarnodes -J` run on the server (the baseline: what a
  page built on OAR's own command would cost per refresh); target page/oarnodes <= 0.5;
- `api_resources_s`: wall time of `GET /oarapi/resources.json` (HTTP basic auth, from this
  machine) against `oarnodes_s`, `oarnodes -J` on the server; target api/oarnodes <= 3;
- `web_server_mib`: the RAM the web tools hold on the server once all that was served: the
  process memory (cgroup v2 `anon`) of apache2.service, which runs Monika, Drawgantt, the
  REST API and the cluster page's mod_wsgi daemon (no target; on cgroup v2 images only).
"""

from __future__ import annotations

import base64
import json
import shlex
import statistics
import time
import urllib.request

from bench.timing import verdict
from bench.vms import booted_cluster, built_iso
from boot.vcluster import state as vstate
from boot.vcluster.remote import Remote, read_credentials

REFRESHES = 10
IDLE_S = 20.0
PAGE_TARGET = 0.5
API_TARGET = 3.0
# Run on the server in one ssh session (a login costs the emulated server seconds of CPU, so
# none may fall inside a window): its busy CPU from /proc/stat over an idle window, then over
# REFRESHES page requests and over 3 `oarnodes -J`, each less the idle rate; and the wall time
# of `oarnodes -J`.
ON_SERVER = """
import json, os, statistics, subprocess, time, urllib.request
def busy():
    t = [int(x) for x in open('/proc/stat').readline().split()[1:9]]
    return (sum(t) - t[3] - t[4]) / os.sysconf('SC_CLK_TCK')
def window(work):
    b, t = busy(), time.monotonic()
    work()
    return busy() - b, time.monotonic() - t
idle, seconds = window(lambda: time.sleep(IDLE_S))
rate = idle / seconds
def cost(work, n):
    used, seconds = window(lambda: [work() for _ in range(n)])
    return max(0.0, used - rate * seconds) / n
def oarnodes():
    subprocess.run(['oarnodes', '-J'], stdout=subprocess.DEVNULL, check=True)
def wall(work):
    t = time.monotonic()
    work()
    return time.monotonic() - t
page = cost(lambda: urllib.request.urlopen('http://127.0.0.1/cluster.json', timeout=300).read(),
            REFRESHES)
print(json.dumps({"idle_rate": rate, "page": page, "oarnodes_cpu": cost(oarnodes, 3),
                  "oarnodes_s": statistics.median(wall(oarnodes) for _ in range(5))}))
""".replace("IDLE_S", str(IDLE_S)).replace("REFRESHES", str(REFRESHES))
WEB_MEMORY = ("awk '$1 == \"anon\" {print $2}'"
              " /sys/fs/cgroup/system.slice/apache2.service/memory.stat")


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
    with booted_cluster(iso, 1) as state_dir:
        state = vstate.load(state_dir)
        remote = Remote(state)
        base = f"http://127.0.0.1:{state.web_port}"
        _get(base + "/cluster.json")  # the first request warms Apache and the caches
        measured = json.loads(remote.run(f"python3 -c {shlex.quote(ON_SERVER)}",
                                         timeout=1200).stdout)
        login = f"{account.user}:{account.password}"
        api = statistics.median(_get(base + "/oarapi/resources.json", login) for _ in range(5))
        _get(base + "/monika", login)
        _get(base + "/drawgantt-svg/drawgantt-svg.php", login)
        web_anon = remote.run(WEB_MEMORY, timeout=300, check=False).stdout.strip()
    page, oarnodes_cpu = measured["page"], measured["oarnodes_cpu"]
    idle_rate, oarnodes = measured["idle_rate"], measured["oarnodes_s"]
    page_ratio, api_ratio = page / oarnodes_cpu, api / oarnodes
    web_mib = round(int(web_anon) / 2**20, 1) if web_anon.isdigit() else \
        "not measured (no cgroup v2 memory.stat: a bookworm image)"
    return {
        "page_cpu_ms": round(page * 1000), "oarnodes_cpu_ms": round(oarnodes_cpu * 1000),
        "idle_cpu_ms_per_s": round(idle_rate * 1000), "api_resources_s": round(api, 2),
        "oarnodes_s": round(oarnodes, 2), "page_ratio": round(page_ratio, 2),
        "api_ratio": round(api_ratio, 2), "web_server_mib": web_mib,
        "verdicts": [verdict("page CPU / oarnodes -J CPU", page_ratio, PAGE_TARGET),
                     verdict("GET /oarapi/resources / oarnodes -J", api_ratio, API_TARGET)],
    }  # fmt: skip
