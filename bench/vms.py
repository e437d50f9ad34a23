"""What the benchmarks that boot OAR Live share: the built ISO and oar-vcluster runs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def built_iso() -> Path:
    """The ISO to boot: OAR_LIVE_ISO, else out/oar-live.iso from `make iso`."""
    iso = Path(os.environ.get("OAR_LIVE_ISO", PROJECT / "out" / "oar-live.iso"))
    if not iso.is_file():
        raise RuntimeError(f"{iso}: no ISO; run `make iso` or set OAR_LIVE_ISO")
    return iso


def vcluster(state_dir: Path, *args: str, timeout: float = 1200) -> None:
    """Run `oar-vcluster ARGS` on a state directory of its own; raise if it fails."""
    argv = [sys.executable, "-m", "boot.vcluster", "--state-dir", str(state_dir), *args]
    subprocess.run(argv, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


@contextmanager
def booted_cluster(iso: Path, nodes: int, *extra: str) -> Iterator[Path]:
    """A fresh oar-vcluster (a server and `nodes` nodes, under TCG) from `iso`: its state
    directory, the cluster ready; taken down on every way out."""
    with tempfile.TemporaryDirectory(prefix="oar-live-bench-") as tmp:
        state_dir = Path(tmp) / "vc"
        try:
            vcluster(state_dir, "up", "--iso", str(iso), "--nodes", str(nodes), "--accel", "tcg",
                     *extra)
            yield state_dir
        finally:
            vcluster(state_dir, "down")
