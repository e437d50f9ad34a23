"""The cluster page's data, /cluster.json: a read-only WSGI application that reads OAR once per
request.

Apache's mod_wsgi runs it in one daemon process as www-data (autoconf/cluster.wsgi),
imported once: a refresh of the page at / (autoconf/www/index.html) costs the server one
request and one `psql` read, not a Python start. It reads OAR's resources and jobs in that one
read, as oar_ro (/etc/oar-live/web-db.conf, which autoconf.oarconf writes), the registered
nodes from the managed block of /etc/hosts, and what the server role wrote at boot
(/run/oar-live/site.json: server name and address, nbmin, OAR's version, the job account). It
takes no input: any method but GET and HEAD is refused, a query string is bounded and ignored.
`python3 -m autoconf.clusterpage` prints the same data, for a person at the server.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from autoconf import etchosts
from autoconf.oarconf import WEB_DB_CONF
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.status import cpuset_ranges, summarise
from boot import bounded

__all__ = ["SITE", "Site", "application", "cluster", "main", "node_rows", "read_site", "respond"]

SITE = Path("run/oar-live/site.json")  # written by autoconf.website at boot
MAX_SITE_BYTES = 16 * 1024
MAX_QUERY_STRING = 256
LINKS = {"monika": "/monika", "drawgantt": "/drawgantt-svg/", "api": "/oarapi/",
         "api_resources": "/oarapi/resources.json", "api_public": "/oarapi-public/"}

Site = dict[str, Any]


def read_site(root: Path = Path("/")) -> Site:
    """What the server role wrote at boot ({} when it has not: the page says so)."""
    try:
        data = bounded.load_json(bounded.read_bytes(root / SITE, MAX_SITE_BYTES), MAX_SITE_BYTES)
    except (OSError, bounded.InputError):
        return {}
    return data if isinstance(data, dict) else {}


def node_rows(resources: list[OarResource], registered: Mapping[str, str]) -> list[dict]:
    """One row per node OAR has or the registration service registered, sorted by name.

    `stage` is how far the node got that the server can see: `registered` (its name given,
    no resource in OAR yet), `in OAR` (resources added, not Alive yet), `Alive`.
    """
    by_host: dict[str, list[OarResource]] = {}
    for r in resources:
        by_host.setdefault(r.host, []).append(r)
    rows = []
    statuses = {n.host: n for n in summarise(resources)}
    for host in sorted(set(by_host) | set(registered)):
        status = statuses.get(host)
        mems = [r.mem for r in by_host.get(host, []) if r.mem is not None]
        if status is None:
            stage, state = "registered", "-"
        else:
            stage, state = ("Alive" if status.alive else "in OAR"), status.state
        rows.append({
            "host": host, "address": registered.get(host, ""), "state": state, "stage": stage,
            "cpus": len(status.cpusets) if status else 0,
            "cpusets": cpuset_ranges(status.cpusets) if status else "",
            "mem_gib": max(mems) if mems else None,
        })  # fmt: skip
    return rows


def cluster(root: Path = Path("/"), oar: Oar | None = None) -> dict[str, Any]:
    """The page's data: the server, its nodes, the jobs not finished, readiness, links."""
    site = read_site(root)
    oar = oar or Oar(root / WEB_DB_CONF)
    server = site.get("server") or {}
    try:
        hosts = etchosts.parse_block((root / etchosts.HOSTS).read_text())
    except OSError:
        hosts = {}
    registered = {h: a for h, a in hosts.items() if h != server.get("hostname")}
    resources, jobs = oar.cluster_view()
    nodes = node_rows(resources, registered)
    alive = sum(n["stage"] == "Alive" for n in nodes)
    nbmin = int(site.get("nbmin") or 1)
    return {
        "time": int(time.time()), "server": server, "site": {
            k: site.get(k) for k in ("oar_version", "distribution", "job_user", "role")},
        "nbmin": nbmin, "alive": alive, "ready": alive >= nbmin,
        "nodes": nodes, "jobs": jobs, "links": LINKS,
    }  # fmt: skip


Response = tuple[str, list[tuple[str, str]], bytes]  # status, headers, body


def _json(payload: Any) -> str:
    return json.dumps(payload, indent=1, sort_keys=True) + "\n"


def _response(status: str, payload: Any, head: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> Response:
    body = _json(payload).encode()
    headers = [("Content-Type", "application/json; charset=utf-8"),
               ("Cache-Control", "no-store"), ("Content-Length", str(len(body))), *extra]
    return status, headers, b"" if head else body


def respond(environ: Mapping[str, Any], root: Path = Path("/"), oar: Oar | None = None) -> Response:
    """The answer to one request (a WSGI environ): the data, or a one-line error."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", {"error": "only GET and HEAD"},
                         extra=(("Allow", "GET, HEAD"),))
    if len(environ.get("QUERY_STRING", "")) > MAX_QUERY_STRING:
        return _response("400 Bad Request", {"error": "query string too long"})
    try:
        data = cluster(root, oar)
    except OarError as exc:
        return _response("503 Service Unavailable", {"error": str(exc)}, method == "HEAD")
    return _response("200 OK", data, method == "HEAD")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point mod_wsgi calls (cluster.wsgi imports it)."""
    status, headers, body = respond(environ)
    start_response(status, headers)
    return [body]


def main(root: Path = Path("/"), out: TextIO | None = None, oar: Oar | None = None) -> int:
    """Print the page's data; 1 with a one-line error when OAR cannot be read."""
    out = out or sys.stdout
    try:
        data = cluster(root, oar)
    except OarError as exc:
        print(f"oar-live cluster page: {exc}", file=sys.stderr)
        return 1
    out.write(_json(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
