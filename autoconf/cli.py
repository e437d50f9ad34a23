"""`oar-autoconf`: the agent's command line (boot, detect, config, status, serve, node-watch).

`boot`, `detect` and `config` are the local side (this package's agent, detect and config
modules); `status`, `serve` and `node-watch` hand their arguments to the server and node
modules, imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from autoconf.config import SETTINGS, ConfigError, load_config, read_config
from autoconf.detect import Detection, DetectionError, cluster_address, detect
from autoconf.resources import (
    OAR_VERSIONS,
    Granularity,
    granularity_of,
    image_granularity,
    oar_mem_gib,
    plan_resources,
)
from boot.cmdline import read_cmdline

# subcommand -> (module, function, help): each takes the remaining arguments
DELEGATED = {
    "boot": ("autoconf.agent", "main", "configure this machine as at boot (prompts, role)"),
    "status": ("autoconf.status", "main", "nodes, their state and resources; cluster ready?"),
    "serve": ("autoconf.registry", "main", "run the registration service and beacon (server)"),
    "node-watch": ("autoconf.node", "watch_main",
                   "keep this node registered; mark it Absent on stop (node)"),
}


def die(message: str, hint: str | None = None) -> int:
    print(f"oar-autoconf: error: {message}", file=sys.stderr)
    if hint:
        print(f"oar-autoconf: {hint}", file=sys.stderr)
    return 1


def describe(d: Detection, net: str | None = None) -> list[str]:
    """Detection as lines a person reads."""
    lines = [
        f"hostname        {d.hostname}",
        f"boot interface  {d.boot_interface or 'none'}" + (f" ({d.mac})" if d.mac else ""),
        f"address         {cluster_address(d, net) or 'none'}",
        f"product_uuid    {d.product_uuid or 'none'}",
        f"memory          {d.mem_mib} MiB (OAR mem={oar_mem_gib(d.mem_mib)})",
        f"cpus            {len(d.cpus)} online: {d.sockets} socket(s), {d.cores} core(s)",
    ]
    for c in d.cpus:
        lines.append(f"  cpu{c.cpu:<4} socket {c.socket} core {c.core} thread {c.thread}")
    lines.append("interfaces")
    for i in d.interfaces:
        lines.append(f"  {i.name:<15} {i.mac}  {' '.join(i.addresses) or '-'}")
    return lines


def cmd_detect(args: argparse.Namespace) -> int:
    try:
        found = detect(args.root, args.net, read_cmdline(args.root))
    except DetectionError as exc:
        return die(str(exc), "is --root a machine root with sys/ and proc/?")
    try:
        granularity = (granularity_of(args.oar_version) if args.oar_version
                       else image_granularity(args.root))
    except ValueError as exc:
        return die(str(exc))
    plan = plan_resources(found, found.hostname, granularity=granularity)
    commands = [r.oarnodesetting_argv() for r in plan]
    if args.json:
        json.dump({"detection": found.to_json(), "oarnodesetting": commands}, sys.stdout,
                  indent=2)
        print()
        return 0
    print("\n".join(describe(found, args.net)))
    per = "physical core" if granularity is Granularity.CORE else "logical CPU"
    print(f"\noarnodesetting commands for an empty OAR database (a resource per {per}):")
    for argv in commands:
        print("  " + shlex.join(argv))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The configuration the boot decided (config.json), else what the layers give now."""
    try:
        config = read_config(args.root)
        origin = "decided at boot (run/oar-live/config.json)"
        warnings: list[str] = []
    except ConfigError:
        config, warnings = load_config(args.root, read_cmdline(args.root))
        origin = "from the image, boot medium and kernel command line (not booted yet)"
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    data = config.to_json()
    if data["token"]:
        data["token"] = "*" * 8  # the cluster secret is not for the screen
    if args.json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"# effective configuration, {origin}")
    for key in SETTINGS:
        value = data[key]
        shown = ("1" if value else "0") if isinstance(value, bool) else (
            "" if value is None else str(value))
        print(f"oar.{key:<9} {shown:<24} ({config.source(key)})")
    return 0


def _delegate(module: str, function: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        try:
            target = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            return die(f"this installation has no {module}.{function} ({exc})")
        return int(target(argv) or 0)

    return run


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="oar-autoconf", description=(__doc__ or "").splitlines()[0])
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, _function, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    detect_p = sub.add_parser("detect", help="print what this machine is and its OAR resources")
    detect_p.add_argument("--root", type=Path, default=Path("/"),
                          help="read sys/ and proc/ under DIR (a captured tree)", metavar="DIR")
    detect_p.add_argument("--net", default=None, help="the cluster network (oar.net)")
    detect_p.add_argument("--json", action="store_true", help="machine-readable output")
    detect_p.add_argument("--oar-version", choices=sorted(OAR_VERSIONS), default=None,
                          help="number resources as this OAR does (default: the image's, "
                               "DIR/etc/oar-live/oar-version)")
    detect_p.set_defaults(func=cmd_detect)
    config_p = sub.add_parser("config", help="print the effective configuration")
    config_p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    config_p.add_argument("--json", action="store_true", help="machine-readable output")
    config_p.set_defaults(func=cmd_config)
    return top


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else list(argv)
    if args_list and args_list[0] in DELEGATED:  # their own parsers read the rest
        module, function, _text = DELEGATED[args_list[0]]
        return _delegate(module, function)(args_list[1:])
    args = parser().parse_args(args_list)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `oar-autoconf detect | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0
    except OSError as exc:
        return die(f"{exc.filename or ''}: {exc.strerror}" if exc.strerror else str(exc))


if __name__ == "__main__":
    sys.exit(main())
