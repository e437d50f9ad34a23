"""`make bench`: run every bench/bench_*.py module's run(), print its figures and targets.

The exit status is 1 when a target is missed or a benchmark crashes, so CI and scripts notice.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("only", nargs="*", help="names of benchmarks to run (default: all)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if any(o in n for o in args.only)]
    results: dict[str, dict] = {}
    missed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
        started = time.monotonic()
        try:
            figures = module.run()
        except Exception as exc:  # a broken benchmark is reported, the others still run
            print(f"   FAILED: {exc}", flush=True)
            results[name] = {"error": str(exc)}
            missed += 1
            continue
        figures["bench_seconds"] = round(time.monotonic() - started, 1)
        results[name] = figures
        for key, value in figures.items():
            print(f"   {key}: {value}")
        for verdict in figures.get("verdicts", []):
            missed += verdict.startswith("MISSED")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{len(names)} benchmark(s), {missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
