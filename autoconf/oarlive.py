"""`oar-live`: the cluster administrator's command on the server, one subcommand per module.

    oar-live check [--json]      the cluster tests itself (autoconf.check)

Each subcommand's module parses the rest of the arguments itself and is imported only when
asked for.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, help)
SUBCOMMANDS = {
    "check": ("autoconf.check", "run a short acceptance suite on the live cluster"),
}


def usage() -> str:
    lines = ["usage: oar-live COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_module, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in SUBCOMMANDS:
        print(f"oar-live: unknown command {args[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[args[0]][0])
    try:
        return int(module.main(args[1:]) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
