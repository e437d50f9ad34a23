"""The boot-time flow of the agent: config, keyboard, role, detection, role actions, summary.

`oar-autoconf boot` runs this once per boot from a systemd oneshot on the console. Each step is
one function below, called in order by `boot()`, which reads the kernel command line once
(`--cmdline` replaces it) and hands it to the settings, detection and the server role; none of
them can hang the boot on user input (prompts time out, bad values fall back to defaults with a
warning). The role actions live in
autoconf.server and autoconf.node and are imported only when the role needs them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from autoconf import keyboard, timing, units
from autoconf.config import Config, Role, Source, Web, load_config, write_config
from autoconf.detect import Detection, DetectionError, cluster_address, detect
from autoconf.outcome import Pending
from autoconf.prompt import ask
from autoconf.resources import image_granularity, oar_mem_gib, plan_resources
from boot import console as lines
from boot import proc
from boot.cmdline import read_cmdline
from boot.proc import CommandError

ROLE_CHOICES = [Role.SERVER.value, Role.NODE.value, Role.SOLO.value, Role.AUTO.value]
DEFAULT_ROLE = Role.AUTO  # the answer when nobody answers: join a cluster if one is there
BEACON_MIN_WAIT = 6.0  # role auto listens at least three beacon periods (oar.timeout=0 too)
KEYMAP_HINT = "us, fr, de, gb, es, it, ch, be, ..."


@dataclass
class Console:
    """What the flow talks to: the terminal, the machine root, and the role actions.

    Tests replace the parts that would touch the real machine.
    """

    root: Path = Path("/")
    cmdline: str | None = None  # the kernel command line; None: root/proc/cmdline, read once
    tty: int | None = None  # the prompts' terminal; None: stdin
    out: TextIO = field(default_factory=lambda: sys.stdout)
    debug: bool = False
    apply_keymap: Callable[..., keyboard.KeyboardResult] = keyboard.apply_keymap
    find_server: Callable[[Config, float], str | None] | None = None  # role auto
    server_handle: Callable[[Config, Detection], str] | None = None
    node_handle: Callable[[Config, Detection], str] | None = None
    run: Callable[..., object] = proc.run  # the agent's own commands (masking units)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


class StepFailed(Exception):
    """A step could not do its work; the message is the sentence shown on the console."""


# ---- the steps, in boot order -------------------------------------------------------------------


def effective_config(console: Console, cmdline: str) -> Config:
    config, warnings = load_config(console.root, cmdline)
    for warning in warnings:
        console.say(lines.warning(warning))
    return config


def keyboard_layout(config: Config, console: Console) -> Config:
    """Ask for the layout unless it was given (kernel line, medium), then apply it."""
    if config.source("keymap") == Source.DEFAULT.value and keyboard.available_keymaps(
            console.root):
        def check(name: str) -> str | None:
            return keyboard.check_keymap(name, console.root)

        answer = ask("Keyboard layout", config.keymap, validate=check, hint=KEYMAP_HINT,
                     timeout=config.timeout, fd=console.tty)
        if answer.typed:
            config = config.answered(keymap=answer.value)
    try:
        result = console.apply_keymap(config.keymap, console.root)
        console.say(lines.info(result.describe()))
    except keyboard.KeymapError as exc:
        console.say(lines.warning(f"keyboard layout {config.keymap}: {exc}; "
                                  "keeping the current layout"))
    except CommandError as exc:
        console.say(lines.warning(f"keyboard layout {config.keymap} not applied: {exc}"))
    return config


def choose_role(config: Config, console: Console) -> Config:
    """Ask for the role unless it was given; `auto` is resolved by `resolve_auto_role`."""
    if config.role is not Role.ASK:
        return config
    answer = ask("Role of this machine", DEFAULT_ROLE.value, choices=ROLE_CHOICES,
                 timeout=config.timeout, fd=console.tty)
    if answer.typed:
        return config.answered(role=Role(answer.value))
    return config.answered(Source.DEFAULT, role=DEFAULT_ROLE)


def _default_find_server(config: Config, wait: float, root: Path) -> str | None:
    """Role auto: oar.server, DHCP next-server or the beacon (autoconf.discover, no prompt)."""
    discover = importlib.import_module("autoconf.discover")
    server = discover.find_server(config, root, beacon_timeout=wait, ask=False)
    return server.address if server is not None else None


def resolve_auto_role(config: Config, console: Console) -> Config:
    """`auto`: node when a server of this cluster answers within the timeout, else solo."""
    if config.role is not Role.AUTO:
        return config
    wait = max(float(config.timeout), BEACON_MIN_WAIT)
    console.say(lines.info(f"role auto: looking for an OAR Live server ({wait:g} s)"))
    find = console.find_server or functools.partial(_default_find_server, root=console.root)
    try:
        found = find(config, wait)
    except (OSError, CommandError, ImportError) as exc:
        console.say(lines.warning(f"cannot look for a server: {exc}"))
        found = None
    if found:
        console.say(lines.info(f"found the server at {found}: this machine becomes a node"))
        return config.answered(Source.AUTO, role=Role.NODE, server=found)
    console.say(lines.info("no server answered: this machine becomes a solo cluster "
                           "(server and node)"))
    return config.answered(Source.AUTO, role=Role.SOLO)


def detection(config: Config, console: Console, cmdline: str) -> Detection:
    try:
        return detect(console.root, config.net, cmdline)
    except (DetectionError, OSError) as exc:
        raise StepFailed(f"cannot describe this machine: {exc}") from None


def _action(console: Console, role: str, cmdline: str) -> Callable[[Config, Detection], str]:
    given = console.server_handle if role == "server" else console.node_handle
    if given is not None:
        return given
    try:
        module = importlib.import_module(f"autoconf.{role}")
    except ImportError as exc:
        raise StepFailed(f"this image has no {role} role ({exc})") from None
    if role == "server":  # the netboot menus it serves follow the server's own kernel line
        return functools.partial(module.handle, root=console.root, cmdline=cmdline)
    return functools.partial(module.handle, root=console.root)


def role_actions(config: Config, found: Detection, console: Console, cmdline: str) -> str:
    """Run the role; returns this machine's hostname in the cluster."""
    try:
        masked = units.mask_unwanted(config.role, console.root, console.run)
        if masked:
            console.say(lines.info(f"not this machine's role, masked for this boot: "
                                   f"{', '.join(masked)}"))
        if config.role is Role.SERVER:
            return _action(console, "server", cmdline)(config, found)
        if config.role is Role.NODE:
            return _action(console, "node", cmdline)(config, found)
        # solo: the server, then a node registering with it on the same machine
        _action(console, "server", cmdline)(config, found)
        own = cluster_address(found, config.net) or "127.0.0.1"
        return _action(console, "node", cmdline)(config.answered(Source.AUTO, server=own), found)
    except (StepFailed, Pending):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure must end as a sentence, not a hang
        if console.debug:
            traceback.print_exc(file=console.out)
        raise StepFailed(f"the {config.role.value} role failed: {exc}") from None


def summary(config: Config, found: Detection, hostname: str,
            root: Path = Path("/")) -> list[tuple[str, str]]:
    """The rows of the summary ending a boot: what this machine is in the cluster."""
    try:
        plan = plan_resources(found, hostname, granularity=image_granularity(root))
        cpusets = " ".join(r.cpuset for r in plan)
        resources = (f"{len(plan)} (cpusets {cpusets}; {found.sockets} socket(s), "
                     f"{found.cores} core(s), mem={oar_mem_gib(found.mem_mib)} GiB)")
    except ValueError as exc:  # the image's OAR version is unknown
        resources = f"unknown: {exc}"
    boot_if = f" ({found.boot_interface})" if found.boot_interface else ""
    rows = [
        ("role", config.role.value),
        ("hostname", hostname),
        ("address", (cluster_address(found, config.net) or "none") + boot_if),
        ("resources", resources),
    ]
    if config.role is Role.NODE and config.server:
        rows.append(("server", config.server))
    if config.role in (Role.SERVER, Role.SOLO) and config.web is not Web.OFF:
        rows.append(lines.web_row(cluster_address(found, config.net) or "127.0.0.1"))
    return rows


def boot(console: Console) -> int:
    """The whole boot flow; 0 when the machine is set up (or the agent is off)."""
    started = time.monotonic()
    console.say(lines.agent_started())
    cmdline = read_cmdline(console.root) if console.cmdline is None else console.cmdline
    config = effective_config(console, cmdline)
    if not config.autoconf:
        write_config(config, console.root)
        console.say(lines.info("oar.autoconf=0: automatic configuration is off"))
        return 0
    timing.BOOT.clear()
    try:
        with timing.step("keyboard"):
            config = keyboard_layout(config, console)
        with timing.step("role question"):
            config = choose_role(config, console)
        with timing.step("role auto"):
            config = resolve_auto_role(config, console)
        with timing.step("detection"):
            found = detection(config, console, cmdline)
        write_config(config, console.root)  # the role actions' services read it
        hostname = role_actions(config, found, console, cmdline)
    except Pending as exc:
        console.say(lines.info(str(exc)))
        rows = summary(config, found, found.hostname, console.root)
        for line in lines.summary(rows, timing.BOOT.line(), time.monotonic() - started,
                                  joined=False):
            console.say(line)
        return 0
    except StepFailed as exc:
        for line in lines.failed(str(exc), timing.BOOT.line()):
            console.say(line)
        return 1
    for line in lines.summary(summary(config, found, hostname, console.root), timing.BOOT.line(),
                              time.monotonic() - started):
        console.say(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`oar-autoconf boot`."""
    parser = argparse.ArgumentParser(prog="oar-autoconf boot",
                                     description="Configure this machine as the boot does.")
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.add_argument("--cmdline", default=None,
                        help="use this kernel command line instead of /proc/cmdline")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    args = parser.parse_args(argv)
    return boot(Console(root=args.root, cmdline=args.cmdline, debug=args.debug))
