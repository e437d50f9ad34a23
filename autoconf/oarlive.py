"""`oar-live`: the commands that administer a booted OAR Live cluster (adduser, deluser, check).

A thin dispatcher: each feature module adds its subcommands (`add_commands`), each of which
sets the function that runs it.
"""

from __future__ import annotations

import argparse
import sys

from autoconf import accounts, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oar-live", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    accounts.add_commands(subparsers)
    check.add_commands(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
