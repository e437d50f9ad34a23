"""Detection time on this machine, against reading the same files in a loop (target ratio <= 20).

`autoconf.detect.detect(Path("/"))` parses sysfs/procfs and asks netifaces for addresses; the
baseline opens and reads the very files detection reads, without parsing, in the same run.
The ratio says what parsing, validation and the address lookup cost on top of the I/O; it is
what is judged, so a slower or faster machine moves both sides alike.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from autoconf import detect as detection
from bench.timing import verdict
from boot import netif

TARGET_RATIO = 20.0
REPEAT = 30


def files_read(root: Path = Path("/")) -> list[Path]:
    """The files detect() opens on this machine."""
    cpu = root / detection.CPU_DIR
    paths = [cpu / "online", root / detection.MEMINFO, root / detection.ROUTES,
             root / "proc/cmdline", root / detection.PRODUCT_UUID, root / detection.MACHINE_ID]
    for n in detection.online_cpus(root):
        topo = cpu / f"cpu{n}" / "topology"
        paths += [topo / "physical_package_id", topo / "core_id", topo / "thread_siblings_list"]
    for entry in sorted((root / netif.NET_DIR).iterdir()):
        paths.append(entry / "address")
    return paths


def _baseline(paths: list[Path]) -> None:
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read()
        except OSError:
            pass


def _median_ms(fn, repeat: int = REPEAT) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def run() -> dict:
    first_start = time.perf_counter()
    found = detection.detect(Path("/"))  # cold: imports netifaces, first sysfs reads
    first_ms = (time.perf_counter() - first_start) * 1000
    paths = files_read()
    detect_ms = _median_ms(lambda: detection.detect(Path("/")))
    baseline_ms = _median_ms(lambda: _baseline(paths))
    ratio = detect_ms / baseline_ms if baseline_ms else float("inf")
    return {
        "cpus": len(found.cpus),
        "interfaces": len(found.interfaces),
        "files_read": len(paths),
        "detect_first_ms": round(first_ms, 2),
        "detect_median_ms": round(detect_ms, 2),
        "baseline_read_same_files_ms": round(baseline_ms, 3),
        "ratio_detect_to_baseline": round(ratio, 1),
        "verdicts": [verdict("detection / reading the same files", ratio, TARGET_RATIO)],
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
