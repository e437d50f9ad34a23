"""Server role, web step: Apache serves the cluster page, Monika, Drawgantt and the REST API.

The image has everything configured as the packages intend (recipes/steps/common/web.yaml);
at boot this step decides where Apache listens (`oar.web`: the cluster address and localhost,
every interface, or not at all) in /etc/apache2/ports.conf, writes what the cluster page says
about the server (/run/oar-live/site.json), makes sure the web tools hold the database's
read-only password (autoconf.oarconf) and starts Apache, or reloads it when a file changed.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoconf import oarconf
from autoconf.clusterpage import SITE
from autoconf.config import Config, Web
from boot import console, proc
from boot.files import write_if_changed

__all__ = ["API_PORT", "PORTS_CONF", "WEB_PORT", "ensure_website", "installed", "ports_conf",
           "site"]

PORTS_CONF = Path("etc/apache2/ports.conf")
WEB_PORT = 80  # the cluster page, Monika, Drawgantt, /oarapi (proxied)
API_PORT = 6668  # oar-restful-api's own virtual host (suexec as oar): localhost only
UNIT = "apache2"
APACHE = Path("usr/sbin/apache2")
OS_RELEASE = Path("etc/os-release")

Runner = Callable[..., Any]


def ports_conf(web: Web, address: str) -> str:
    """ports.conf for `oar.web`: where the web port and the API's virtual host listen."""
    lines = ["# Written by oar-autoconf at boot (oar.web=" + web.value + ")."]
    if web is Web.ALL:
        lines.append(f"Listen {WEB_PORT}")
    else:
        lines.append(f"Listen 127.0.0.1:{WEB_PORT}")
        if not ipaddress.ip_address(address).is_loopback:
            lines.append(f"Listen {address}:{WEB_PORT}")
    lines.append(f"Listen 127.0.0.1:{API_PORT}")
    return "\n".join(lines) + "\n"


def _oar_version(run: Runner) -> str:
    result = run(["dpkg-query", "-W", "-f=${Version}", "oar-common"], check=False, timeout=30)
    return result.stdout.strip() if getattr(result, "returncode", 1) == 0 else ""


def _distribution(root: Path) -> str:
    try:
        for line in (root / OS_RELEASE).read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def _api_user(root: Path) -> str:
    try:
        first = (root / oarconf.API_USERS).read_text().split("\n", 1)[0]
    except OSError:
        return ""
    return first.split(":", 1)[0]


def site(config: Config, hostname: str, address: str, root: Path, run: Runner) -> dict:
    """What the cluster page says about the server (site.json)."""
    return {
        "server": {"hostname": hostname, "address": address, "url": console.web_page(address)},
        "nbmin": config.nbmin, "role": config.role.value, "oar_version": _oar_version(run),
        "distribution": _distribution(root), "job_user": _api_user(root),
    }  # fmt: skip


def installed(root: Path = Path("/")) -> bool:
    """Does the image have the web tools (an image built without the web step has not)?"""
    return (root / APACHE).exists()


def ensure_website(config: Config, hostname: str, address: str, root: Path = Path("/"),
                   run: Runner = proc.run) -> bool:
    """Apache listens where `oar.web` says and runs with this boot's files; changed?"""
    if config.web is Web.OFF:
        return False
    changed = write_if_changed(root / PORTS_CONF, ports_conf(config.web, address))
    text = json.dumps(site(config, hostname, address, root, run), indent=1, sort_keys=True)
    write_if_changed(root / SITE, text + "\n", 0o644)  # the page's data, not Apache's
    secrets, _ = oarconf.ensure_secrets(root)
    changed |= oarconf.write_web_db_settings(secrets, root)
    systemd = (root / "run/systemd/system").is_dir()
    if not systemd:
        run(["apache2ctl", "restart" if changed else "start"], timeout=120)
        return True
    running = run(["systemctl", "is-active", "--quiet", UNIT], check=False,
                  timeout=30).returncode == 0
    if running and not changed:
        return False
    # Not waited for: Apache (with PHP) takes seconds to start under emulation, and the cluster
    # is ready without it; systemd reports a failure (`systemctl status apache2`).
    run(["systemctl", "--no-block", "reload-or-restart" if running else "start", UNIT],
        timeout=120)
    return True
