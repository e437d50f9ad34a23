"""The console lines other programs read: their words and their patterns, in one place.

Readers are the virtual-cluster launcher's stage reader (boot/vcluster/stage.py), the e2e tests
and the benchmarks.

Every line the agent and its services print starts with `OAR Live: `, then a topic for the
server's step table (`server:`), the netboot service (`PXE:`) and the registration service
(`registry:`); warnings and errors say so (`warning:`, `error:`). The agent's summary is a block
under an `OAR Live ----` rule, one indented row per fact, ending with `steps` and `ready in N s`.

The lines below are a contract: the agent and the PXE service print them through the formatters,
and whatever reads them uses the patterns and parsers beside them, never its own regex, so the
words and the reader cannot drift (tests/boot/test_console.py pins each line). The patterns also
read what images built before this module printed (`oar-live: registered as ...`,
`  server: registration service ...`), so `oar-vcluster up` still follows an older ISO's boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "OAR Live: "
RULE = "OAR Live " + "-" * 50  # the summary's first line
AGENT_UNIT = "oar-live-autoconf"  # where the agent's whole log stays (journalctl -u)
REGISTRATION_SERVICE = "registration service"  # the server step after which nodes may register
STEP_WIDTH = 28  # the server's step names, in one column
ROW_WIDTH = 10  # the summary's row names, in one column
NOTHING_NOTICEABLE = "nothing noticeable"  # the steps row when no step took noticeable time
WEB_ROW = "web"  # the summary row of a server: its cluster page's address
WEB_TOOLS = "cluster page, Monika, Drawgantt, REST API /oarapi/"

# ---- writing them -------------------------------------------------------------------------------


def info(message: str, topic: str = "") -> str:
    """An informational line, under a topic (`server`, `PXE`, `registry`) or none."""
    return f"{PREFIX}{topic}: {message}" if topic else f"{PREFIX}{message}"


def warning(message: str) -> str:
    return f"{PREFIX}warning: {message}"


def error(message: str) -> str:
    return f"{PREFIX}error: {message}"


def agent_started() -> str:
    """The agent's first line at every boot."""
    return f"{PREFIX}setting up this machine (oar-autoconf boot)"


def server_step(step: str, changed: bool | None, detail: str = "") -> str:
    """One row of the server's step table; `changed` None: the step failed (`detail`: why)."""
    state = "FAILED" if changed is None else "changed" if changed else "unchanged"
    return f"{PREFIX}server: {step:<{STEP_WIDTH}} {state}{f' ({detail})' if detail else ''}"


def registered(hostname: str, *, again: bool = False, detail: str = "") -> str:
    """A node's registration with the server (`again`: the watcher registered it anew)."""
    return f"{PREFIX}registered {'again ' if again else ''}as {hostname}" + (
        f" {detail}" if detail else "")


def alive(hostname: str) -> str:
    return f"{PREFIX}{hostname} is Alive in OAR"


@dataclass(frozen=True)
class PxeService:
    """What the netboot service serves where: its mode and the one interface it answers on."""

    mode: str  # "authoritative" (it gives addresses) or "proxy" (the site's DHCP does)
    interface: str
    http: str  # address:port of TFTP and HTTP
    network: str | None = None  # authoritative: the network it gives addresses in
    other_dhcp: str | None = None  # proxy: the DHCP server it answers beside


def pxe_announce(service: PxeService) -> str:
    """The line that says what is served where, and where nothing is."""
    if service.mode == "authoritative":
        how = f"authoritative DHCP for {service.network} (no other DHCP server answered)"
    else:
        how = f"proxy-DHCP beside the DHCP server {service.other_dhcp} (it gives the addresses)"
    return info(f"{how} on {service.interface} only, never on any other interface; TFTP and "
                f"HTTP on {service.http}", "PXE")


@dataclass(frozen=True)
class Step:
    """One timed step of the boot."""

    name: str
    seconds: float
    ok: bool = True


def web_page(address: str) -> str:
    """The server's cluster page as people type it: `http://ADDRESS/`."""
    return f"http://{address}/"


def web_row(address: str) -> tuple[str, str]:
    """The summary row naming the server's cluster page (`read_web_page` reads it back)."""
    return WEB_ROW, f"{web_page(address)} ({WEB_TOOLS})"


def steps_line(steps: Iterable[Step]) -> str:
    """`keyboard 0.1 s, register 2.3 s (failed)`: the value of the summary's `steps` row."""
    shown = [f"{s.name} {s.seconds:.1f} s" + ("" if s.ok else " (failed)") for s in steps]
    return ", ".join(shown) or NOTHING_NOTICEABLE


def _row(name: str, value: str) -> str:
    return f"  {name:<{ROW_WIDTH}} {value}"


def summary(rows: Sequence[tuple[str, str]], steps: str, seconds: float,
            joined: bool = True) -> list[str]:
    """The block ending a boot: the rows, the steps, and `ready in N s` (`joined` False: set up,
    and it joins the cluster when its server answers)."""
    end = (f"  ready in {seconds:.0f} s" if joined else
           f"  set up in {seconds:.0f} s; joins the cluster when its server answers")
    return [RULE, *(_row(name, value) for name, value in rows), _row("steps", steps), end]


def failed(message: str, steps: str) -> list[str]:
    """The block ending a boot that failed: the error, the steps it went through, where to look."""
    return [error(message), _row("steps", steps),
            f"  see `journalctl -u {AGENT_UNIT}` and `oar-autoconf status`"]


# ---- reading them -------------------------------------------------------------------------------

# Images built before this module printed the node's lines under `oar-live:` and the server's
# steps under an indented `server:`; both are still read.
_NODE = r"(?:OAR Live|oar-live): "
_SERVER = r"(?:OAR Live: |  )server: "

AGENT_STARTED = re.compile(r"OAR Live: ")  # any agent line, or systemd starting the agent's unit
REGISTERED = re.compile(_NODE + r"registered (?:again )?as (\S+)")
ALIVE = re.compile(_NODE + r"(\S+) is Alive in OAR")
# Serial consoles end their lines with CR LF: `\r?$`, so a raw serial log reads as a clean one.
SERVER_STEP = re.compile(_SERVER + r"(\S.*?) +(changed|unchanged|FAILED)(?: \((.*)\))?\r?$",
                         re.M)
SERVING = re.compile(_SERVER + re.escape(REGISTRATION_SERVICE) + r" +(?:changed|unchanged)")
ERROR = re.compile(r"OAR Live: error: (.*)")
READY = re.compile(r"^ *ready in (\d+) s", re.M)
WAITING = re.compile(r"^ *set up in (\d+) s; joins the cluster when its server answers", re.M)
# Images built before said a node waits for its server in an error line.
EARLIER_WAITING = re.compile(r"oar-live-node keeps looking meanwhile")
PXE = re.compile(r"OAR Live: PXE: (?:authoritative DHCP for (\S+) \(no other DHCP server "
                 r"answered\)|proxy-DHCP beside the DHCP server (\S+) \(it gives the addresses\))"
                 r" on (\S+) only, never on any other interface; TFTP and HTTP on (\S+)")
ANY = re.compile(r"OAR Live|oar-live:|^  server: ", re.M)  # a line of the agent, now or before
_STEP = re.compile(r"(?:^|, )(.+?) (\d+\.\d) s( \(failed\))?(?=, |$)")
_ROW = re.compile(r"^  (\S+) +(.*)$")


def registered_hosts(text: str) -> list[str]:
    """The hostnames a node was registered under, in order."""
    return REGISTERED.findall(text)


def alive_hosts(text: str) -> list[str]:
    return ALIVE.findall(text)


def server_steps(text: str) -> dict[str, str]:
    """The server's steps: name -> `changed`, `unchanged` or `FAILED` (the last time said)."""
    return {name: state for name, state, _detail in SERVER_STEP.findall(text)}


def read_error(text: str) -> str | None:
    """The first error the agent reported, without its prefix."""
    found = ERROR.search(text)
    return found.group(1).strip() if found else None


def read_pxe(text: str) -> PxeService | None:
    """What the last netboot announce in `text` says."""
    found = list(PXE.finditer(text))
    if not found:
        return None
    network, other, interface, http = found[-1].groups()
    return PxeService("authoritative" if network else "proxy", interface, http, network, other)


def read_web_page(summary: Summary) -> str | None:
    """The cluster page's address in a server's summary (its `web` row), or None."""
    value = summary.rows.get(WEB_ROW, "")
    return value.split()[0] if value.startswith("http://") else None


def read_steps(value: str) -> list[Step]:
    """The steps of a `steps` row's value (`steps_line` read back)."""
    return [Step(name, float(seconds), not failed) for name, seconds, failed in
            _STEP.findall(value.strip())]


@dataclass(frozen=True)
class Summary:
    """The agent's last summary: its rows, the steps and how long the boot took."""

    rows: dict[str, str]
    steps: list[Step]
    seconds: int
    joined: bool  # False: set up, waiting for its server


def read_summary(text: str) -> Summary | None:
    """The last complete summary block in `text` (a console log or `oar-autoconf boot`'s output)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == RULE]
    if not starts:
        return None
    rows: dict[str, str] = {}
    for line in lines[starts[-1] + 1:]:
        ready, waiting = READY.match(line), WAITING.match(line)
        if ready or waiting:
            steps = read_steps(rows.pop("steps", ""))
            seconds = int((ready or waiting).group(1))
            return Summary(rows, steps, seconds, joined=bool(ready))
        row = _ROW.match(line)
        if row is None:
            return None
        rows[row.group(1)] = row.group(2)
    return None
