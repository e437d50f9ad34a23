"""Benchmark: a power-on storm of N simulated 8-CPU nodes registering with the real service,
against OAR's own tool (one `oarnodesetting -a` per resource, serial), same run.

The service is `oar-autoconf serve` itself, in its own process (its CPU and peak RSS are
measured), over a real PostgreSQL + oar-server on this machine. Every simulated node posts its
registration at once (one thread each, from its own loopback address); the server adds each
node in one OAR transaction, checks it through oar-node's real sshd (one, listening for the
loopback network only) as OAR's checker would, and asks OAR to make it Alive. Figures:

- time until every resource of the N nodes is Alive in OAR, registrations per second;
- the baseline: `oarnodesetting -a` per resource, serially, for a sample of
  BENCH_REGISTRY_BASELINE_NODES nodes (default 40), extrapolated per resource to N nodes
  (N x 8 serial calls take far longer than the rest of the benchmark); target: service
  <= 0.5 x baseline;
- 0 duplicate resources and 0 partial nodes, both at the end and in every view a reader
  polling the table during the storm saw (the same reader counts the partial nodes it saw
  during the baseline, which OAR's tool makes visible one resource at a time);
- steady state: N watchers polling `GET /v1/nodes/<host>` and `GET /v1/hosts` (with the
  tag of the block they have: 304 while it is unchanged) every WATCH_INTERVAL seconds, through
  the watcher's own client, and the server's CPU seconds per second meanwhile (the service,
  the commands it ran and the database sessions they opened); the service answers polls from
  one shared snapshot of the table, so the cost of a poll does not grow with the cluster.

Needs root and a throw-away machine (see tests/autoconf/fakenodes.loopback_oar_server).
`BENCH_REGISTRY_NODES` overrides N (default 1000).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoconf.client import RegistryClient, RegistryError, Unreachable
from autoconf.config import Config, write_config
from autoconf.detect import Detection
from autoconf.node import WATCH_INTERVAL, WATCH_TIMEOUT
from autoconf.oarstate import Oar
from autoconf.registration import SERVER_STATE, ServerState
from autoconf.resources import plan_resources
from bench.timing import verdict
from boot import proc
from tests.autoconf.fakenodes import (
    detection_json,
    loopback_oar_server,
    new_hostname,
    post,
    registration,
)

CPUS = 8
TARGET = 0.5
STEADY_SECONDS = 30.0
SAMPLE_SECONDS = 0.5  # how often the reader looks at the table during a storm
ALIVE_DEADLINE = 1800.0
# oar-node's sshd for the simulated nodes: on every address, but only the loopback network
# may log in (sshd cannot listen on a whole /8; the nodes have 1000 addresses of 127/8).
SSHD_EXTRA = "\nMatch Address *,!127.0.0.0/8\n    DenyUsers *\n"


def _address(n: int) -> str:
    return f"127.{4 + n // 250}.{n % 250}.{1 + n % 200}"


def _baseline_script(hosts: list[str]) -> str:
    """The oarnodesetting -a calls OAR's documentation gives for these nodes, serially."""
    lines = ["set -e"]
    for n, host in enumerate(hosts):
        detection = Detection.from_json(detection_json(host, "127.0.0.1", cores=CPUS))
        for resource in plan_resources(detection, host, n, n * CPUS, n * CPUS):
            lines.append(shlex.join(resource.oarnodesetting_argv()) + " >/dev/null")
    return "\n".join(lines) + "\n"


class Reader(threading.Thread):
    """Reads the resources table every SAMPLE_SECONDS: counts the partial nodes among `hosts`
    (fewer than CPUS resources) and the duplicates it saw, and when it first saw each host
    whole and Alive (OAR's own checker suspects the simulated nodes later, at its next run:
    it reaches nodes by name, and this machine cannot resolve theirs)."""

    def __init__(self, oar: Oar, hosts: set[str]) -> None:
        super().__init__(daemon=True)
        self.oar, self.hosts = oar, hosts
        self.stop = threading.Event()
        self.partial: set[str] = set()
        self.duplicates = 0
        self.views = 0
        self.alive_at: dict[str, float] = {}  # host -> time.perf_counter()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            rows = [r for r in self.oar.resources() if r.host in self.hosts]
            now = time.perf_counter()
            self.views += 1
            counts = Counter(r.host for r in rows)
            self.partial |= {h for h, n in counts.items() if n != CPUS}
            self.duplicates += sum(n - 1 for n in Counter((r.host, r.cpuset)
                                                          for r in rows).values() if n > 1)
            not_alive = {r.host for r in rows if r.state != "Alive"}
            for host, n in counts.items():
                if n == CPUS and host not in not_alive:
                    self.alive_at.setdefault(host, now)


@contextmanager
def _reading(oar: Oar, hosts: set[str]) -> Iterator[Reader]:
    reader = Reader(oar, hosts)
    reader.start()
    try:
        yield reader
    finally:
        reader.stop.set()
        reader.join(30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _postmaster() -> int:
    data = Path(proc.run(["runuser", "-u", "postgres", "--", "psql", "-XAtqc",
                          "SHOW data_directory"]).stdout.strip(), "postmaster.pid")
    return int(data.read_text().split()[0])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@contextmanager
def _service(tmp: Path, token: str) -> Iterator[tuple[int, int]]:
    """`oar-autoconf serve` for the loopback network, in its own process; (port, pid)."""
    root = tmp / "root"
    (root / "etc/oar").mkdir(parents=True)
    (root / SERVER_STATE).parent.mkdir(parents=True)
    write_config(Config(token=token), root)
    (root / SERVER_STATE).write_text(json.dumps(
        ServerState("localhost", "127.0.0.1", "127.0.0.0/8").to_json()))
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    conf = root / "etc/oar/oar.conf"
    shutil.copy("/etc/oar/oar.conf", conf)
    shutil.chown(conf, "oar", "oar")  # OAR::IO reads it as oar, like OAR's tools
    for path in (tmp, root, root / "etc", root / "etc/oar"):
        path.chmod(0o755)
    port = _free_port()
    argv = [os.environ.get("PYTHON", "python3"), "-m", "autoconf.cli", "serve",
            "--root", str(root), "--port", str(port), "--no-beacon"]
    with open(tmp / "service.log", "w") as log, proc.spawn(argv, stderr=log) as service:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if service.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the service did not start: "
                                       + (tmp / "service.log").read_text()[-500:]) from None
                time.sleep(0.2)
        yield port, service.pid


@contextmanager
def _oar_node_sshd(tmp: Path) -> Iterator[None]:
    config = tmp / "sshd_config"
    config.write_text(Path("/etc/oar/sshd_config").read_text() + SSHD_EXTRA)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    argv = ["/usr/sbin/sshd", "-D", "-f", str(config), "-o", "PidFile=none",
            "-o", "MaxStartups=2000"]
    with proc.spawn(argv, stderr=subprocess.DEVNULL):
        time.sleep(1)
        yield


def _storm(port: int, token: str, hosts: list[str]) -> dict[str, tuple[int, Any]]:
    replies: dict[str, tuple[int, Any]] = {}

    def one(n: int, host: str) -> None:
        try:
            replies[host] = post(port, registration(token, host, _address(n), cores=CPUS),
                                 source=_address(n), timeout=ALIVE_DEADLINE)
        except OSError as exc:
            replies[host] = (0, str(exc))

    threads = [threading.Thread(target=one, args=(n, h)) for n, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ALIVE_DEADLINE)
    return replies


def _wait_all_alive(reader: Reader, hosts: list[str], deadline: float) -> float:
    """The time (perf_counter) the reader first saw the last of `hosts` whole and Alive."""
    while len(reader.alive_at) < len(hosts) and time.monotonic() < deadline:
        time.sleep(SAMPLE_SECONDS)
    return max(reader.alive_at.values(), default=time.perf_counter())


def _steady(port: int, token: str, hosts: list[str], pids: list[int]) -> dict[str, float]:
    """Every host polls its node and the hosts block once per WATCH_INTERVAL for
    STEADY_SECONDS; the CPU the server spent meanwhile."""
    polls = [0]
    errors = [0]
    rate = len(hosts) / WATCH_INTERVAL
    first = RegistryClient(f"http://127.0.0.1:{port}", token).hosts()[1]
    tags: dict[str, str | None] = dict.fromkeys(hosts, first)  # every watcher has the block
    stop = time.monotonic() + STEADY_SECONDS

    def worker(k: int, workers: int) -> None:
        client = RegistryClient(f"http://127.0.0.1:{port}", token, timeout=WATCH_TIMEOUT)
        n = k
        start = time.monotonic()
        while time.monotonic() < stop:
            due = start + (n // workers) * workers / rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            host = hosts[n % len(hosts)]
            try:  # what a watcher's tick asks (autoconf.node.Watcher.tick)
                if client.node(host) is None:
                    errors[0] += 1
                text, tags[host] = client.hosts(tags.get(host))
            except (RegistryError, Unreachable):
                errors[0] += 1
            polls[0] += 1
            n += workers

    before = sum(_cpu_seconds(pid) for pid in pids)
    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k, 16)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STEADY_SECONDS + 60)
    spent = sum(_cpu_seconds(pid) for pid in pids) - before
    elapsed = time.monotonic() - began
    return {"polls": polls[0], "poll_errors": errors[0], "polls_per_s": polls[0] / elapsed,
            "server_cpu_s_per_s": spent / elapsed,
            "server_cpu_ms_per_poll": 1000 * spent / max(polls[0], 1)}


def run(nodes: int | None = None) -> dict[str, Any]:
    """Run the benchmark; its figures as a dict (times in seconds)."""
    nodes = nodes or int(os.environ.get("BENCH_REGISTRY_NODES", "1000"))
    sample = min(nodes, int(os.environ.get("BENCH_REGISTRY_BASELINE_NODES", "40")))
    token = "bench-" + os.urandom(8).hex()
    with loopback_oar_server() as oar, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        baseline_hosts = [new_hostname() for _ in range(sample)]
        script = tmp / "baseline.sh"
        script.write_text(_baseline_script(baseline_hosts))
        with _reading(oar, set(baseline_hosts)) as baseline_reader:
            start = time.perf_counter()
            proc.run(["bash", str(script)], timeout=7200)
            baseline_sample = time.perf_counter() - start
        per_resource = baseline_sample / (sample * CPUS)
        baseline = per_resource * nodes * CPUS

        hosts = [new_hostname() for _ in range(nodes)]
        with _oar_node_sshd(tmp), _service(tmp, token) as (port, pid):
            pids = [pid, _postmaster()]
            cpu_before = sum(_cpu_seconds(p) for p in pids)
            with _reading(oar, set(hosts)) as reader:
                start = time.perf_counter()
                replies = _storm(port, token, hosts)
                answered = time.perf_counter() - start
                service = _wait_all_alive(reader, hosts, time.monotonic() + ALIVE_DEADLINE) - start
            storm_cpu = sum(_cpu_seconds(p) for p in pids) - cpu_before
            steady = _steady(port, token, hosts, pids)
            peak_rss = _peak_rss_kib(pid)
        every = oar.resources()
        log = (tmp / "service.log").read_text()
    rows = [r for r in every if r.host in set(hosts)]
    counts = Counter((r.host, r.cpuset) for r in rows)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    per_host = Counter(r.host for r in rows)
    partial = sum(1 for h in hosts if per_host[h] != CPUS)
    alive = len(reader.alive_at)
    suspected_later = len({r.host for r in rows if r.state == "Suspected"})
    cores = Counter(r.core for r in every)
    ok = sum(1 for s, reply in replies.values() if s == 200 and reply.get("state") == "Alive")
    ratio = service / baseline
    verdicts = [
        verdict(f"{nodes} x {CPUS}-CPU nodes to all Alive / serial oarnodesetting per resource",
                ratio, TARGET),
        f"{'met' if ok == nodes else 'MISSED'}: {ok} of {nodes} registrations answered 200 Alive",
        f"{'met' if alive == nodes else 'MISSED'}: {alive} of {nodes} nodes seen whole and Alive",
        f"{'met' if duplicates == 0 and reader.duplicates == 0 else 'MISSED'}: 0 duplicate "
        f"resources (end {duplicates}, during the storm {reader.duplicates})",
        f"{'met' if partial == 0 and not reader.partial else 'MISSED'}: 0 partial nodes "
        f"(end {partial}, seen during the storm {len(reader.partial)} in {reader.views} views)",
        f"{'met' if len(cores) == len(every) else 'MISSED'}: every core id used once",
        f"{'met' if steady['poll_errors'] == 0 else 'MISSED'}: every poll answered 200",
    ]
    return {
        "nodes": nodes,
        "cpus_per_node": CPUS,
        "baseline_sample_nodes": sample,
        "baseline_sample_s": round(baseline_sample, 1),
        "baseline_ms_per_resource": round(1000 * per_resource, 1),
        "baseline_extrapolated_s": round(baseline, 1),
        "baseline_partial_nodes_seen": len(baseline_reader.partial),
        "service_all_answered_s": round(answered, 1),
        "service_all_alive_s": round(service, 1),
        "ratio": round(ratio, 3),
        "registrations_per_s": round(nodes / service, 2),
        "storm_server_cpu_s": round(storm_cpu, 1),
        "peak_service_rss_mib": round(peak_rss / 1024, 1),
        "steady_polls_per_s": round(steady["polls_per_s"], 1),
        "steady_server_cpu_s_per_s": round(steady["server_cpu_s_per_s"], 3),
        "steady_server_cpu_ms_per_poll": round(steady["server_cpu_ms_per_poll"], 2),
        "service_log_refusals": log.count("refused") + log.count("failed"),
        "suspected_at_end_by_oars_checker_unresolvable_names": suspected_later,
        "verdicts": verdicts,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
