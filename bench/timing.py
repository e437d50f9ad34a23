"""Small helpers shared by the benchmarks: timing a command and judging a ratio."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Sequence


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of fn over `repeat` runs, in seconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_quiet(argv: Sequence[str], **kw) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, **kw)


def verdict(name: str, ratio: float, target: float) -> str:
    status = "met" if ratio <= target else "MISSED"
    return f"{status}: {name} ratio {ratio:.2f} (target <= {target})"
